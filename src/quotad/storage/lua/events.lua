-- Add events that SQL has just accepted to the counters Redis holds (a counter it does
-- not hold is loaded from SQL, events included, when next used).
-- KEYS[1] the account's marker, then one counter hash per event's day, and per window
-- counter the event counts in (Limits v2).
-- ARGV: counter_ttl_s, then each counter's amount and total ("-" for a window counter,
-- whose total is its limit's, set by the next consume).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #KEYS do
  local counter = KEYS[i]
  if redis.call('EXISTS', counter) == 1 then
    -- A fresh counter is a new day: it takes this event's total, as the new SQL row did.
    if redis.call('HGET', counter, 'fresh') == '1' then
      if ARGV[2 * i - 1] ~= '-' then redis.call('HSET', counter, 'total', ARGV[2 * i - 1]) end
      redis.call('HDEL', counter, 'fresh')
    end
    redis.call('HINCRBY', counter, 'used', ARGV[2 * i - 2])
    redis.call('EXPIRE', counter, ARGV[1])
  end
end
return 1
