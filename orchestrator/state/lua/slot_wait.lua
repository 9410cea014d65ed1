-- slot_wait: a run found every slot of its target taken: it waits, re-queued through the
-- due-queue after a delay (the safety net; a released slot wakes the oldest waiter at once).
-- Uses the prelude.
-- KEYS[1] the target's holders (ZSET)   KEYS[2] the target's waiters (ZSET)
-- KEYS[3] the due-queue (ZSET)
-- ARGV[1] rotation id   ARGV[2] the target's limit   ARGV[3] the first delay ms (jittered)
-- ARGV[4] the most the delay grows by while a run waits, in ms
-- ARGV[5] the lease ms of a claim (as due_claim gives)   ARGV[6] the longest delay ms
-- The delay is ARGV[3] for the oldest ARGV[2] waiters (the next to get a slot), and grows with
-- a waiter's place in line (a place per ARGV[2] waiters ahead: another ARGV[3]) and by a
-- quarter of how long it has waited (at most ARGV[4]), at most ARGV[6]: a long line is not
-- handed out every second, while the front re-checks soon after a holder died. A slot freed
-- since the caller looked makes the run due at once, claimed for ARGV[5] ms, for the caller
-- to hand out.
-- Returns {'free', claim lease until ms} or {'waiting', due ms}.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[2], 'NX', now, ARGV[1])
local limit = tonumber(ARGV[2])
if redis.call('ZCARD', KEYS[1]) < limit then
  local lease = now + tonumber(ARGV[5])
  redis.call('ZADD', KEYS[3], lease, ARGV[1])
  return {'free', tostring(lease)}
end
local since = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]))
local place = math.floor(redis.call('ZRANK', KEYS[2], ARGV[1]) / limit)
local grown = math.min(math.floor((now - since) / 4), tonumber(ARGV[4]))
local delay = math.min(tonumber(ARGV[3]) * (1 + place) + grown, tonumber(ARGV[6]))
redis.call('ZADD', KEYS[3], now + delay, ARGV[1])
return {'waiting', tostring(now + delay)}
