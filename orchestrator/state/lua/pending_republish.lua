-- pending_republish: publish an accepted event's task message again if it was lost (neither on
-- the queue nor held by a worker), or note that it is only waiting.
-- KEYS[1] pending events (ZSET, by last publish ms)   KEYS[2] event id -> message (hash)
-- KEYS[3] event id -> publishes (hash)   KEYS[4] the broker list   KEYS[5] kombu's unacked hash
-- ARGV[1] event id   ARGV[2] the score the sweep read   ARGV[3] the fresh message
-- ARGV[4] now ms   ARGV[5] '1' if it may publish again
-- Returns 'gone' (settled meanwhile), 'raced' (another sweep took it), 'waiting' (still queued
-- or held: score bumped), 'lost' (lost, but out of publishes: nothing changed) or 'published'.
-- LPOS searches from the tail, where old messages are (LPUSHed, consumed by BRPOP).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 'gone' end
if tonumber(score) ~= tonumber(ARGV[2]) then return 'raced' end
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  local tag = cjson.decode(old)['properties']['delivery_tag']
  if redis.call('LPOS', KEYS[4], old, 'RANK', -1) or redis.call('HEXISTS', KEYS[5], tag) == 1 then
    redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
    return 'waiting'
  end
end
if ARGV[5] ~= '1' then return 'lost' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('LPUSH', KEYS[4], ARGV[3])
return 'published'
