-- Atomic consume of one account's day counter (all keys share the account's hash tag).
-- KEYS[1] counter hash (used, total, rejected)   KEYS[2] the account's dirty set
-- KEYS[3] idempotency hash, present only with an Idempotency-Key
-- ARGV: cost, total, counter_ttl_s, fingerprint, idem_expires_ms, now_ms, day, idem_ttl_s
-- Returns {"ok"|"replay", granted, used, total, day} | {"conflict"} | {"missing"}
local cost, total = tonumber(ARGV[1]), tonumber(ARGV[2])
if #KEYS == 3 then
  local seen = redis.call('HMGET', KEYS[3], 'fp', 'granted', 'used', 'total', 'day', 'expires')
  if seen[1] and tonumber(seen[6]) > tonumber(ARGV[6]) then
    if seen[1] ~= ARGV[4] then return {'conflict'} end
    return {'replay', seen[2], seen[3], seen[4], seen[5]}
  end
end
-- A day the counters do not hold (new, or lost with a Redis restart) is loaded from
-- SQL by the caller first, so a restart never starts a day again from zero.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local used = tonumber(redis.call('HGET', KEYS[1], 'used'))
local granted = 0
if used + cost <= total then
  used = redis.call('HINCRBY', KEYS[1], 'used', cost)
  granted = 1
else
  redis.call('HINCRBY', KEYS[1], 'rejected', 1)
end
redis.call('HSET', KEYS[1], 'total', total)
redis.call('HDEL', KEYS[1], 'fresh')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], KEYS[1])
if #KEYS == 3 then
  redis.call('HSET', KEYS[3], 'fp', ARGV[4], 'granted', granted, 'used', used,
             'total', total, 'day', ARGV[7], 'expires', ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[8])
end
return {'ok', tostring(granted), tostring(used), tostring(total), ARGV[7]}
