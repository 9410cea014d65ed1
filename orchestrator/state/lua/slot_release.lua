-- slot_release: give a slot back and wake the target's oldest waiter. Uses the prelude.
-- KEYS[1] the target's holders (ZSET)   KEYS[2] the target's waiters (ZSET)
-- KEYS[3] the due-queue (ZSET)
-- ARGV[1] holder   ARGV[2] the lease ms of a claim (as due_claim gives)
-- The woken waiter's due entry is claimed for ARGV[2] ms (an entry whose task is lost comes
-- back by itself); a waiter without a due entry (its run ended) is skipped.
-- Returns {rotation id, claim lease until ms} of the waiter to hand out now, or nil.
redis.call('ZREM', KEYS[1], ARGV[1])
for _ = 1, 16 do
  local popped = redis.call('ZPOPMIN', KEYS[2])
  if #popped == 0 then return nil end
  if redis.call('ZSCORE', KEYS[3], popped[1]) then
    local lease = now + tonumber(ARGV[2])
    redis.call('ZADD', KEYS[3], lease, popped[1])
    return {popped[1], tostring(lease)}
  end
end
return nil
