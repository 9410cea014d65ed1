-- slot_wait: a run found every slot of its target taken: it waits, re-queued through the
-- due-queue after a short delay (the safety net; a released slot wakes the oldest waiter at
-- once). Uses the prelude.
-- KEYS[1] the target's holders (ZSET)   KEYS[2] the target's waiters (ZSET)
-- KEYS[3] the due-queue (ZSET)
-- ARGV[1] rotation id   ARGV[2] the target's limit   ARGV[3] delay ms (with jitter)
-- ARGV[4] the longest delay ms      ARGV[5] the lease ms of a claim (as due_claim gives)
-- The delay grows by a quarter of how long the run has waited already, up to ARGV[4], so
-- long waiters are not handed out every second. A slot freed since the caller looked makes
-- the run due at once, claimed for ARGV[5] ms, for the caller to hand out.
-- Returns {'free', claim lease until ms} or {'waiting', due ms}.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  local lease = now + tonumber(ARGV[5])
  redis.call('ZADD', KEYS[3], lease, ARGV[1])
  return {'free', tostring(lease)}
end
local since = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]))
local delay = math.min(tonumber(ARGV[3]) + math.floor((now - since) / 4), tonumber(ARGV[4]))
redis.call('ZADD', KEYS[3], now + delay, ARGV[1])
return {'waiting', tostring(now + delay)}
