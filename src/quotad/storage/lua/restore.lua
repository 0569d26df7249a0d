-- Finish rebuilding an account after a loss: restore its answered Idempotency-Keys from
-- SQL, then mark its counters whole again, unless the rebuild went stale.
-- KEYS[1] the account's marker   KEYS[2] its rebuild intent   then one idempotency hash
--   per claim.
-- ARGV[1]: per claim "fingerprint granted used total day expires_ms ttl_s", one line each.
-- ARGV[2]: "1" to write the marker (the last chunk of claims), "0" not yet.
-- ARGV[3]: the marker's new value, naming this incarnation of the account's counters.
-- ARGV[4]: the intent the rebuild began under (begin.lua).
-- Returns "present" (another node finished it), "stale" (Redis lost the account again
-- since the rebuild began: begin again) or "done".
-- A claim Redis holds already (answered since) is left as it is.
if redis.call('EXISTS', KEYS[1]) == 1 then return 'present' end
if redis.call('GET', KEYS[2]) ~= ARGV[4] then return 'stale' end
local k = 3
for line in string.gmatch(ARGV[1] or '', '[^\n]+') do
  local fp, granted, used, total, day, expires, ttl = string.match(
    line, '^(%S+) (%d) (%d+) (%d+) (%S+) (%d+) (%d+)$')
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('HSET', KEYS[k], 'fp', fp, 'granted', granted, 'used', used, 'total', total,
               'day', day, 'expires', expires)
    redis.call('EXPIRE', KEYS[k], ttl)
  end
  k = k + 1
end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('DEL', KEYS[2])
end
return 'done'
