-- due_complete: remove a due entry only while the claim its finalize task was given still holds
-- (an entry claimed again or rescheduled meanwhile is left alone).
-- KEYS[1] the due-queue (ZSET)
-- ARGV[1] rotation id   ARGV[2] lease until ms, as due_claim returned it
-- Returns 1 when removed, else 0.
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
