-- run_transition: move a run to another state, or only set fields (an update), checked
-- atomically. Uses the prelude.
-- KEYS[1] the run's hash          KEYS[2] the run path's active claim
-- KEYS[3] the lease index (ZSET)  KEYS[4] the status index (ZSET)  KEYS[5] the due-queue (ZSET)
-- KEYS[6] a counter hash (only read when ARGV[7] names a field)
-- KEYS[7] the finalize waiting index (ZSET: runs whose finalize waits for the old credential
--         to be unused, scored by waiting_since_ms)
-- ARGV[1] rotation id
-- ARGV[2] the state to move to ('' = keep the state: an update)
-- ARGV[3] the states it may move from, comma-separated
-- ARGV[4] lease owner ('' = any): refused unless this owner holds the lease
-- ARGV[5] '1' = refused while an updater's sealed value is held (it may be applied), or once
--         the run has entered storing (write_sent: a write of its value may land late)
-- ARGV[6] due in ms ('' = none): the run is due that long after now (finalize_after_ms) and
--         enters the due-queue unless it is there already
-- ARGV[7] counter field ('' = none): incremented only if the change is made
-- ARGV[8] due ms of a record that predates finalize_after_ms ('' = none)
-- ARGV[9..] field, value, ...
-- Grace -> finalizing is refused before finalize_after_ms unless finalize_requested is set.
-- A run that leaves the leased states drops its lease and its target slot wait (slot_wait),
-- unless this change sets slot_wait (a finalize waiting for a slot waits back in grace).
-- A run that moves to grace with a 'waiting' field is waiting for its old credential to be
-- unused: the first time stamps waiting_since_ms and indexes it; leaving grace and finalizing
-- drops it from the index.
-- A run that enters storing is marked write_sent for good: from then on a write of its new
-- value may be in flight or land late, whatever state the run is in later.
-- Returns {'ok', previous state, the record as HGETALL} or {why, detail}: why is 'missing',
-- 'illegal', 'lease', 'sealed', 'sent', 'held', 'early' or 'busy'.
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {'missing', ''} end
local to = ARGV[2]
if to == '' then
  to = cur
else
  local allowed = {}
  for s in string.gmatch(ARGV[3], '[^,]+') do allowed[s] = true end
  if not allowed[cur] then return {'illegal', cur} end
end
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'lease_owner') ~= ARGV[4] then
  return {'lease', cur}
end
if ARGV[5] == '1' then
  if redis.call('HEXISTS', KEYS[1], 'sealed') == 1 then return {'sealed', cur} end
  if redis.call('HEXISTS', KEYS[1], 'write_sent') == 1 then return {'sent', cur} end
end
if cur == 'grace' then
  local holder = redis.call('HGET', KEYS[1], 'lease_owner')
  local held = tonumber(redis.call('HGET', KEYS[1], 'lease_until_ms') or '0')
  if holder and holder ~= ARGV[4] and held > now then return {'held', holder} end
  if to == 'finalizing' and not redis.call('HGET', KEYS[1], 'finalize_requested') then
    local due = tonumber(redis.call('HGET', KEYS[1], 'finalize_after_ms') or ARGV[8])
    if (not due) or due > now then return {'early', tostring(due or '')} end
  end
end
if TERMINAL[to] then
  if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
elseif TERMINAL[cur] then
  local holder = redis.call('GET', KEYS[2])
  if holder and holder ~= ARGV[1] then return {'busy', holder} end
  redis.call('SET', KEYS[2], ARGV[1])
end
if not LEASED[to] then redis.call('HDEL', KEYS[1], 'slot_wait') end
redis.call('HSET', KEYS[1], 'state', to)
if to == 'storing' then redis.call('HSET', KEYS[1], 'write_sent', '1') end
apply_fields(KEYS[1], 9)
if LEASED[to] then
  local lu = redis.call('HGET', KEYS[1], 'lease_until_ms')
  redis.call('ZADD', KEYS[3], lu or now, ARGV[1])
else
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until_ms', 'lease_worker')
end
redis.call('ZADD', KEYS[4], now, ARGV[1])
if ARGV[6] ~= '' then
  local due = now + tonumber(ARGV[6])
  redis.call('HSET', KEYS[1], 'finalize_after_ms', due)
  redis.call('ZADD', KEYS[5], 'NX', due, ARGV[1])
end
if ARGV[7] ~= '' then redis.call('HINCRBY', KEYS[6], ARGV[7], 1) end
if to == 'grace' and redis.call('HEXISTS', KEYS[1], 'waiting') == 1 then
  local since = redis.call('HGET', KEYS[1], 'waiting_since_ms')
  if not since then
    since = now
    redis.call('HSET', KEYS[1], 'waiting_since_ms', since)
  end
  redis.call('ZADD', KEYS[7], 'NX', since, ARGV[1])
elseif to ~= 'grace' and to ~= 'finalizing' then
  redis.call('ZREM', KEYS[7], ARGV[1])
end
return {'ok', cur, redis.call('HGETALL', KEYS[1])}
