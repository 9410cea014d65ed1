-- lease_claim_expired: the runs whose lease expired (their worker died), for re-driving; each
-- is held off for another lease so the next sweep does not re-drive it again meanwhile. Uses
-- the prelude.
-- KEYS[1] the lease index (ZSET)
-- ARGV[1] lease ms   ARGV[2] at most this many
-- Returns the rotation ids.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), id) end
return ids
