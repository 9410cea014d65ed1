-- prelude: loaded ahead of every script whose header says "Uses the prelude". Touches no key.
-- now            Redis's TIME in milliseconds: the one clock every worker goes by
-- TERMINAL       the run states a rotation ends in (orchestrator.state.records.TERMINAL)
-- LEASED         the run states a worker drives under a lease (records.LEASED)
-- apply_fields   set ARGV[from], ARGV[from + 1], ... on a hash (an empty value deletes the
--                field) and stamp updated_ms with now
local TERMINAL = {cancelled = true, done = true, failed = true, rolled_back = true, skipped = true}
local LEASED = {applying = true, finalizing = true, minting = true, queued = true, storing = true,
                verifying = true}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function apply_fields(key, from)
  for i = from, #ARGV, 2 do
    if ARGV[i + 1] == '' then redis.call('HDEL', key, ARGV[i])
    else redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
  end
  redis.call('HSET', key, 'updated_ms', now)
end
