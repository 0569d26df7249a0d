-- Add delta to a day's use, flooring at zero.
-- KEYS[1] counter hash   KEYS[2] the account's marker   ARGV: delta, counter_ttl_s, total
-- Returns {used, total, rejected, applied delta} | {"missing"} | {"lost"}
if redis.call('EXISTS', KEYS[2]) == 0 then return {'lost'} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
-- A fresh counter is a new day: it takes this call's total, as a new SQL row would.
if redis.call('HGET', KEYS[1], 'fresh') == '1' then
  redis.call('HSET', KEYS[1], 'total', ARGV[3])
  redis.call('HDEL', KEYS[1], 'fresh')
end
local before = tonumber(redis.call('HGET', KEYS[1], 'used'))
local used = before + tonumber(ARGV[1])
if used < 0 then used = 0 end
redis.call('HSET', KEYS[1], 'used', string.format('%d', used))  -- not 1e+15
redis.call('EXPIRE', KEYS[1], ARGV[2])
local row = redis.call('HMGET', KEYS[1], 'used', 'total', 'rejected')
return {row[1], row[2], row[3], string.format('%d', used - before)}
