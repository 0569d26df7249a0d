-- Record one account's new events, all in one step.
-- KEYS[1] the account's dirty set, then for each event: its de-duplication key, its counter.
-- ARGV: dedup_ttl_s, counter_ttl_s, then each event's amount and total.
-- Returns {"ok", accepted} | {"missing", counter key}
for i = 2, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then return {'missing', KEYS[i + 1]} end
end
local accepted = 0
for i = 2, #KEYS, 2 do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    local counter = KEYS[i + 1]
    -- A fresh counter is a new day: it takes this event's total, as a new SQL row would.
    if redis.call('HGET', counter, 'fresh') == '1' then
      redis.call('HSET', counter, 'total', ARGV[2 + i])
      redis.call('HDEL', counter, 'fresh')
    end
    redis.call('HINCRBY', counter, 'used', ARGV[1 + i])
    redis.call('EXPIRE', counter, ARGV[2])
    redis.call('SADD', KEYS[1], counter)
    accepted = accepted + 1
  end
end
return {'ok', tostring(accepted)}
