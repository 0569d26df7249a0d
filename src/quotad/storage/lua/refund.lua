-- Give back a consume whose caller stopped waiting before its answer came (it was told
-- 503, or allowed uncounted): its units on its day and on every other window counter
-- it moved (Limits v2; a rate's bucket is left alone), and its Idempotency-Key's
-- answer, so a retry is decided afresh.
-- KEYS[1] counter hash   KEYS[2] the account's marker   KEYS[3] idempotency hash (unused
--   without an Idempotency-Key)   KEYS[4] this refund's own key   KEYS[5..] the other
--   window counters
-- ARGV: what the grant moved KEYS[1] by, the marker the grant was made under, fingerprint
--   ("" without a key), how long (s) KEYS[4] is kept, then what the grant moved each of
--   KEYS[5..] by (limits.decide's after minus before: a credit slot's take, not its cost;
--   negative for a give-back)
-- Counters rebuilt since the grant came from SQL, where the grant and its refund are
-- written together: they are right already.
-- A refund is sent again when its answer is lost (the client library's resend, then the
-- caller's retries), and Redis may have run it: it applies once, under KEYS[4].
if redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[4]) == false then
  return 0
end
if redis.call('GET', KEYS[2]) == ARGV[2] then
  local counters, costs = {KEYS[1]}, {ARGV[1]}
  for i = 5, #KEYS do
    counters[#counters + 1] = KEYS[i]
    costs[#costs + 1] = ARGV[i]
  end
  for i, counter in ipairs(counters) do
    if redis.call('EXISTS', counter) == 1 then
      local used = tonumber(redis.call('HGET', counter, 'used')) - tonumber(costs[i])
      if used < 0 then used = 0 end
      redis.call('HSET', counter, 'used', string.format('%d', used))
    end
  end
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[3], 'fp') == ARGV[3] then
  redis.call('DEL', KEYS[3])
end
return 1
