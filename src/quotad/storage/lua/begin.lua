-- Start rebuilding an account whose counters this Redis lost, or join a rebuild under way.
-- KEYS[1] the account's marker   KEYS[2] its rebuild intent
-- ARGV[1] a fresh intent value
-- Returns {"present"} when the marker is back (nothing to rebuild), else {"intent", value}.
-- The intent is the witness that no loss happened since the rebuild began: a loss takes
-- it too, and a rebuild only finishes (restore.lua) while it is unchanged, so counters are
-- never rebuilt from a barrier that began before the latest loss.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'present'} end
local current = redis.call('GET', KEYS[2])
if current then return {'intent', current} end
redis.call('SET', KEYS[2], ARGV[1])
return {'intent', ARGV[1]}
