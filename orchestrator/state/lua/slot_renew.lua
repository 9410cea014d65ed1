-- slot_renew: extend a holder's slot lease. Uses the prelude.
-- KEYS[1] the target's holders (ZSET)
-- ARGV[1] holder   ARGV[2] lease ms
-- Returns 1 when renewed, 0 when the holder no longer holds a slot (its lease passed and
-- another acquire dropped it).
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then  -- only ever extended
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 1
