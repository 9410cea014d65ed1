-- event_publish: claim a webhook event's id and enqueue its task, atomically: the claim exists
-- if and only if the message was pushed (and the event is in the pending events).
-- KEYS[1] the event's claim   KEYS[2] the broker list
-- KEYS[3] pending events (ZSET)   KEYS[4] event id -> message (hash)
-- ARGV[1] claim value (the task id)   ARGV[2] claim ttl seconds   ARGV[3] the task message
-- ARGV[4] event id   ARGV[5] now ms
-- Returns {1, claim} when claimed and pushed, {0, existing claim} for a duplicate. If a write
-- fails (a key of the wrong type) the claim and the pending entry are deleted in the same run
-- and the error is returned; the message is pushed last, so a failed push leaves nothing behind.
-- (An OOM refuses the claim itself, the first write, so it leaves nothing either.)
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
  redis.call('DEL', KEYS[1])
  redis.pcall('HDEL', KEYS[4], ARGV[4])  -- pcall: the key that failed may be one of these
  redis.pcall('ZREM', KEYS[3], ARGV[4])
  return res
end
return {1, ARGV[1]}
