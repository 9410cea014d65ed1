-- due_claim: claim due finalizations for a lease: each due entry's score moves to now + lease,
-- so an entry whose finalize task is lost comes back by itself once the lease passes. Uses the
-- prelude.
-- KEYS[1] the due-queue (ZSET)
-- ARGV[1] lease ms   ARGV[2] at most this many
-- Returns {rotation id, lease until ms, ...}.
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local lease_until = now + tonumber(ARGV[1])
local out = {}
for _, m in ipairs(items) do
  redis.call('ZADD', KEYS[1], 'XX', lease_until, m)
  out[#out + 1] = m
  out[#out + 1] = tostring(lease_until)
end
return out
