-- Add delta to a day's use, and to Limits v2's other window counters of the same call,
-- each flooring at zero, in one step.
-- KEYS[1] the day's counter hash   KEYS[2] the account's marker   KEYS[3] this call's own
--   key   KEYS[4..] other windows'
-- ARGV: delta, counter_ttl_s, then each counter's total (KEYS[1]'s first, then KEYS[4..]'s),
--   and last how long (s) KEYS[3] is kept
-- Returns {used, total, rejected, applied delta, [applied delta of KEYS[4..]...]}
--   | {"missing", i...} (1-based indexes, the day's 1, KEYS[4]'s 2, …) | {"lost"}
-- The client library sends a call again when its answer is lost, and Redis may have run
-- it: the same call (same KEYS[3]) is answered the first one's reply, applied once.
local seen = redis.call('GET', KEYS[3])
if seen then
  local reply = {}
  for field in string.gmatch(seen, '%S+') do reply[#reply + 1] = field end
  return reply
end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'lost'} end
local counters = {KEYS[1]}
for i = 4, #KEYS do counters[#counters + 1] = KEYS[i] end
local missing = {'missing'}
for i, counter in ipairs(counters) do
  if redis.call('EXISTS', counter) == 0 then missing[#missing + 1] = i end
end
if #missing > 1 then return missing end
local applied = {}
for i, counter in ipairs(counters) do
  -- A fresh counter is a new window: it takes this call's total, as a new SQL row would.
  if redis.call('HGET', counter, 'fresh') == '1' then
    redis.call('HSET', counter, 'total', ARGV[2 + i])
    redis.call('HDEL', counter, 'fresh')
  end
  local before = tonumber(redis.call('HGET', counter, 'used'))
  local used = before + tonumber(ARGV[1])
  if used < 0 then used = 0 end
  redis.call('HSET', counter, 'used', string.format('%d', used))  -- not 1e+15
  redis.call('EXPIRE', counter, ARGV[2])
  applied[i] = string.format('%d', used - before)
end
local row = redis.call('HMGET', KEYS[1], 'used', 'total', 'rejected')
local reply = {row[1] or '0', row[2] or '0', row[3] or '0'}
for _, delta in ipairs(applied) do reply[#reply + 1] = delta end
redis.call('SET', KEYS[3], table.concat(reply, ' '), 'EX', ARGV[#ARGV])
return reply
