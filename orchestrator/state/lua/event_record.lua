-- event_record: claim a webhook event's id and append it to a path's history, atomically.
-- KEYS[1] the event's claim   KEYS[2] the path's history stream
-- ARGV[1] claim value   ARGV[2] claim ttl seconds   ARGV[3] the stream's approximate max length
-- ARGV[4..] the entry's field, value, ...
-- Returns {1, claim} when claimed and recorded, {0, existing claim} for a duplicate; if the
-- append fails the claim is deleted and the error returned.
-- A stream the engine keeps (one without a TTL) is only appended to; any other expires with
-- the claim, so events naming paths the engine never wrote to cannot grow Redis for ever (the
-- engine's own appends make a stream permanent).
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {0, redis.call('GET', KEYS[1])}
end
local kept = redis.call('TTL', KEYS[2]) == -1
local res = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
if type(res) == 'table' and res.err then
  redis.call('DEL', KEYS[1])
  return res
end
if not kept then
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return {1, ARGV[1]}
