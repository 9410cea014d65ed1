-- run_lease: take, renew or give up the lease of a run a worker drives. Uses the prelude.
-- KEYS[1] the run's hash   KEYS[2] the lease index (ZSET)
-- ARGV[1] rotation id   ARGV[2] owner   ARGV[3] lease ms
-- ARGV[4] 'acquire' (free, expired or already the owner's; counts one attempt), 'renew' (the
--         owner's only) or 'release' (kept off the re-drive list for ARGV[3] ms)
-- ARGV[5] the worker process taking it ('' or absent = unnamed), kept as lease_worker; an
--         acquire also drops next_attempt (the attempt it announced has begun)
-- Returns {'ok', lease until ms[, the record as HGETALL when acquired]}, {'missing', ''},
-- {'state', state} (not a leased state) or {'held', owner}.
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {'missing', ''} end
if not LEASED[cur] then return {'state', cur} end
local owner = redis.call('HGET', KEYS[1], 'lease_owner')
local lu = tonumber(redis.call('HGET', KEYS[1], 'lease_until_ms') or '0')
local mode = ARGV[4]
if owner and owner ~= '' and owner ~= ARGV[2] then
  if mode ~= 'acquire' or lu > now then return {'held', owner} end
end
if mode ~= 'acquire' and owner ~= ARGV[2] then return {'held', owner or ''} end
local until_ms = now + tonumber(ARGV[3])
if mode == 'release' then redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_worker')
else redis.call('HSET', KEYS[1], 'lease_owner', ARGV[2]) end
redis.call('HSET', KEYS[1], 'lease_until_ms', until_ms)
redis.call('ZADD', KEYS[2], until_ms, ARGV[1])
if mode == 'acquire' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HDEL', KEYS[1], 'next_attempt')
  if ARGV[5] and ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'lease_worker', ARGV[5]) end
  return {'ok', tostring(until_ms), redis.call('HGETALL', KEYS[1])}
end
return {'ok', tostring(until_ms)}
