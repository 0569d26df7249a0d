-- Add delta to a day's use, and to Limits v2's other window counters of the same call,
-- each flooring at zero, in one step; with an Idempotency-Key, once.
-- KEYS[1] the day's counter hash   KEYS[2] the account's marker   KEYS[3] this call's own
--   key   KEYS[4] the Idempotency-Key's hash (KEYS[3] again without one)
--   KEYS[5..] other windows'
-- ARGV: delta, counter_ttl_s, how long (s) KEYS[3] is kept, the key's fingerprint ("-"
--   without one), its ttl_s, its expiry (ms), the day, the caller's clock (ms), then each
--   counter's total (KEYS[1]'s first, then KEYS[5..]'s)
-- Returns {used, total, rejected, applied delta, [applied delta of KEYS[5..]...]}
--   | {"replay", used, total, rejected} (the key seen before: nothing moved)
--   | {"conflict"} (the key seen with another request) | {"lost"}
--   | {"missing", i...} (1-based indexes, the day's 1, KEYS[5]'s 2, …)
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
for i = 5, #KEYS do counters[#counters + 1] = KEYS[i] end
local missing = {'missing'}
for i, counter in ipairs(counters) do
  if redis.call('EXISTS', counter) == 0 then missing[#missing + 1] = i end
end
if #missing > 1 then return missing end
local fp = ARGV[4]
if fp ~= '-' then
  local claim = redis.call('HMGET', KEYS[4], 'fp', 'expires')
  if claim[1] and tonumber(claim[2]) > tonumber(ARGV[8]) then
    if claim[1] ~= fp then return {'conflict'} end
    local row = redis.call('HMGET', KEYS[1], 'used', 'total', 'rejected')
    return {'replay', row[1] or '0', row[2] or '0', row[3] or '0'}
  end
end
local applied = {}
for i, counter in ipairs(counters) do
  -- A fresh counter is a new window: it takes this call's total, as a new SQL row would.
  if redis.call('HGET', counter, 'fresh') == '1' then
    redis.call('HSET', counter, 'total', ARGV[8 + i])
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
redis.call('SET', KEYS[3], table.concat(reply, ' '), 'EX', ARGV[3])
if fp ~= '-' then
  -- As a verify's Idempotency-Key answer is kept: SQL keeps it too, and a rebuild of the
  -- account's counters restores it.
  redis.call('HSET', KEYS[4], 'fp', fp, 'granted', '1', 'used', reply[1], 'total', reply[2],
             'day', ARGV[7], 'expires', ARGV[6])
  redis.call('EXPIRE', KEYS[4], ARGV[5])
end
return reply
