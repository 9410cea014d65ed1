-- claim_release_stale: free a path's active claim whose holder no longer holds it: its run
-- record is gone or ended (after Redis data loss, or a hand edit). Every path a run takes keeps
-- the claim and the record in step, so this is the rare path behind a 'busy' answer. Uses the
-- prelude.
-- KEYS[1] the path's active claim   KEYS[2] the holder's run hash
-- ARGV[1] the rotation id the claim named
-- Returns 1 when the claim was freed, else 0.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local state = redis.call('HGET', KEYS[2], 'state')
if state and not TERMINAL[state] then return 0 end
redis.call('DEL', KEYS[1])
return 1
