-- Give back a consume whose caller stopped waiting before its answer came (it was told
-- 503, or allowed uncounted): its units, and its Idempotency-Key's answer, so a retry
-- is decided afresh.
-- KEYS[1] counter hash   KEYS[2] the account's marker   [KEYS[3] idempotency hash]
-- ARGV: cost, the marker the grant was made under, [fingerprint]
-- Counters rebuilt since the grant came from SQL, where the grant and its refund are
-- written together: they are right already.
if redis.call('GET', KEYS[2]) == ARGV[2] and redis.call('EXISTS', KEYS[1]) == 1 then
  local used = tonumber(redis.call('HGET', KEYS[1], 'used')) - tonumber(ARGV[1])
  if used < 0 then used = 0 end
  redis.call('HSET', KEYS[1], 'used', string.format('%d', used))
end
if KEYS[3] and redis.call('HGET', KEYS[3], 'fp') == ARGV[3] then
  redis.call('DEL', KEYS[3])
end
return 1
