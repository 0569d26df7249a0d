-- Record one account's new events, all in one step.
-- KEYS[1] the account's dirty set, then for each event: its de-duplication key, its counter.
-- ARGV: dedup_ttl_s, counter_ttl_s, then each event's amount.
-- Returns {"ok", accepted} | {"missing", counter key}
for i = 2, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then return {'missing', KEYS[i + 1]} end
end
local accepted = 0
for i = 2, #KEYS, 2 do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('HINCRBY', KEYS[i + 1], 'used', ARGV[2 + i / 2])
    redis.call('EXPIRE', KEYS[i + 1], ARGV[2])
    redis.call('SADD', KEYS[1], KEYS[i + 1])
    accepted = accepted + 1
  end
end
return {'ok', tostring(accepted)}
