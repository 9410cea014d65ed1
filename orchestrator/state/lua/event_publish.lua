-- event_publish: claim a webhook event's id and enqueue its task, atomically: the claim exists
-- if and only if the message was pushed (and the event is in the pending events).
-- KEYS[1] the event's claim   KEYS[2] the broker list
-- KEYS[3] pending events (ZSET)   KEYS[4] event id -> message (hash)
-- ARGV[1] claim value (the task id)   ARGV[2] claim ttl seconds   ARGV[3] the task message
-- ARGV[4] event id   ARGV[5] now ms
-- Returns {1, claim} when claimed and pushed, {0, existing claim} for a duplicate. If a write
-- fails (e.g. OOM) the claim and the pending entry are deleted in the same run and the error is
-- returned; the message is pushed last, so a failed push leaves nothing behind.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {0, redis.call('GET', KEYS[1])}
end
local res = redis.pcall('HSET', KEYS[4], ARGV[4], ARGV[3])
if not (type(res) == 'table' and res.err) then
  res = redis.pcall('ZADD', KEYS[3], ARGV[5], ARGV[4])
end
if not (type(res) == 'table' and res.err) then
  res = redis.pcall('LPUSH', KEYS[2], ARGV[3])
end
if type(res) == 'table' and res.err then
  redis.call('HDEL', KEYS[4], ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('DEL', KEYS[1])
  return res
end
return {1, ARGV[1]}
