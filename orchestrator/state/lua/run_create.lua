-- run_create: store a new run record; an active one claims its path, a leased one may take its
-- lease in the same step. Uses the prelude.
-- KEYS[1] the run's hash            KEYS[2] the path's active claim   KEYS[3] the path's last run
-- KEYS[4] the status index (ZSET)   KEYS[5] the lease index (ZSET)
-- ARGV[1] rotation id   ARGV[2] lease owner ('' = none)   ARGV[3] lease ms
-- ARGV[4] ttl seconds ('' = keep): the record expires (a decision that stored nothing); it
--         becomes the path's last run only if the path has none, and that pointer expires too
-- ARGV[5..] field, value, ... (one of them is 'state')
-- Returns {'ok', state, the record as HGETALL, ms since the path's previous run last changed or
-- -1}, {'exists', state} or {'busy', holder}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists', redis.call('HGET', KEYS[1], 'state')}
end
local state = nil
for i = 5, #ARGV, 2 do if ARGV[i] == 'state' then state = ARGV[i + 1] end end
if not TERMINAL[state] then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[1] then return {'busy', holder} end
  redis.call('SET', KEYS[2], ARGV[1])
end
apply_fields(KEYS[1], 5)
local quiet = -1
local previous = redis.call('GET', KEYS[3])
if previous then
  local changed = redis.call('ZSCORE', KEYS[4], previous)
  if changed then quiet = now - tonumber(changed) end
end
if ARGV[2] ~= '' and LEASED[state] then
  local until_ms = now + tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'lease_owner', ARGV[2], 'lease_until_ms', until_ms)
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('ZADD', KEYS[5], until_ms, ARGV[1])
end
redis.call('ZADD', KEYS[4], now, ARGV[1])
if ARGV[4] == '' then
  redis.call('SET', KEYS[3], ARGV[1])
else
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  redis.call('SET', KEYS[3], ARGV[1], 'NX', 'EX', tonumber(ARGV[4]))
end
return {'ok', state, redis.call('HGETALL', KEYS[1]), quiet}
