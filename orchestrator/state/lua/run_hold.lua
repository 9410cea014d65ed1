-- run_hold: hold a run in a state no worker drives (grace) for one owner, or let it go. While
-- held, transitions without that owner are refused; a hold is in no lease index, so nothing
-- re-drives it. Uses the prelude.
-- KEYS[1] the run's hash
-- ARGV[1] owner   ARGV[2] hold ms   ARGV[3] the state the run must be in
-- ARGV[4] 'hold' or 'unhold' (a no-op unless ARGV[1] holds it)
-- Returns {'ok', ''}, {'state', current state} or {'held', owner}.
local cur = redis.call('HGET', KEYS[1], 'state')
if cur ~= ARGV[3] then return {'state', cur or ''} end
local owner = redis.call('HGET', KEYS[1], 'lease_owner')
local lu = tonumber(redis.call('HGET', KEYS[1], 'lease_until_ms') or '0')
if ARGV[4] == 'unhold' then
  if owner == ARGV[1] then redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until_ms') end
  return {'ok', ''}
end
if owner and owner ~= ARGV[1] and lu > now then return {'held', owner} end
redis.call('HSET', KEYS[1], 'lease_owner', ARGV[1], 'lease_until_ms', now + tonumber(ARGV[2]))
return {'ok', ''}
