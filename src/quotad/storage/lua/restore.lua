-- Mark an account's counters whole again after a loss, with its answered
-- Idempotency-Keys restored from SQL first (so a retry after the loss still replays).
-- KEYS[1] the account's marker, then one idempotency hash per claim.
-- ARGV[1]: per claim "fingerprint granted used total day expires_ms ttl_s", one line each.
-- ARGV[2]: "1" to write the marker (the last chunk of claims), "0" not yet.
-- ARGV[3]: the marker's new value, naming this incarnation of the account's counters.
-- A claim Redis holds already (answered since) is left as it is.
local k = 2
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
if ARGV[2] == '1' then redis.call('SET', KEYS[1], ARGV[3]) end
return 1
