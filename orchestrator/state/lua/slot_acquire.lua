-- slot_acquire: take (or renew) a concurrency slot of a target for a holder, if one is free.
-- Uses the prelude.
-- KEYS[1] the target's holders (ZSET)   KEYS[2] the target's waiters (ZSET)
-- KEYS[3] the due-queue (ZSET)          KEYS[4] the run's hash
-- ARGV[1] holder   ARGV[2] the target's limit   ARGV[3] lease ms
-- ARGV[4] the run's rotation id (its waiter and due-queue member)
-- ARGV[5] '1' = the run's due entry only stood for its wait (before grace): drop it when taken
-- ARGV[6] the target's name, kept as the run's slot_wait when every slot is taken ('' or
--         absent: the caller records the wait; a held run's, whose hold an update would end)
-- Holders whose lease passed are dropped first, so a killed worker's slots come back by
-- themselves; a holder that holds a slot already renews it. Taking a slot ends the run's wait
-- (waiter entry and slot_wait cleared).
-- Returns 1 when the holder holds a slot now, 0 when every slot is taken.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not held) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  if ARGV[6] and ARGV[6] ~= '' and redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('HSET', KEYS[4], 'slot_wait', ARGV[6])
  end
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then  -- only ever extended: a longer
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))      -- holder (a rollback's) keeps it
end
redis.call('ZREM', KEYS[2], ARGV[4])
if ARGV[5] == '1' then redis.call('ZREM', KEYS[3], ARGV[4]) end
if redis.call('HEXISTS', KEYS[4], 'slot_wait') == 1 then redis.call('HDEL', KEYS[4], 'slot_wait') end
return 1
