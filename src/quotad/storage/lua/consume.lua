-- Atomic consumes, decided one after the other in the order given. On a Redis Cluster
-- every key of one call shares a slot (callers group consumes by slot; each account's
-- keys carry its hash tag); a single Redis takes any mix of accounts in one call.
-- ARGV[1] counter_ttl_s; ARGV[2] m, the number of accounts to add to the set of dirty
-- accounts KEYS[1] (0 on a Cluster, where the caller adds them itself); ARGV[3 .. 2+m]
-- those accounts; then, per consume, "count cost total day" in one argument (count: the
-- consume's keys, 2, or 3 with an Idempotency-Key), and with an Idempotency-Key four more:
-- fingerprint, idem_expires_ms, now_ms, idem_ttl_s.
-- KEYS: [the dirty accounts set, when m > 0], then per consume: counter hash (used,
--   total, rejected), the account's dirty set, and the idempotency hash (key count 3)
-- Returns one reply per consume:
--   {"ok"|"replay", granted, used, total, day} | {"conflict"} | {"missing"}
-- Numbers go back as integer replies or as the caller's own text, never through Lua's
-- tostring (which writes 1e+15 for large ones).
local counter_ttl = ARGV[1]

local function consume(counter, dirty, idem, cost, total_text, day, fp, expires, now, idem_ttl)
  local total = tonumber(total_text)
  if idem then
    local seen = redis.call('HMGET', idem, 'fp', 'granted', 'used', 'total', 'day', 'expires')
    if seen[1] and tonumber(seen[6]) > tonumber(now) then
      if seen[1] ~= fp then return {'conflict'} end
      return {'replay', seen[2], seen[3], seen[4], seen[5]}
    end
  end
  -- A day the counters do not hold (new, or lost with a Redis restart) is loaded from
  -- SQL by the caller first, so a restart never starts a day again from zero.
  if redis.call('EXISTS', counter) == 0 then return {'missing'} end
  local used = tonumber(redis.call('HGET', counter, 'used'))
  local granted = 0
  if used + cost <= total then
    used = redis.call('HINCRBY', counter, 'used', cost)
    granted = 1
  else
    redis.call('HINCRBY', counter, 'rejected', 1)
  end
  redis.call('HSET', counter, 'total', total_text)
  redis.call('HDEL', counter, 'fresh')
  redis.call('EXPIRE', counter, counter_ttl)
  redis.call('SADD', dirty, counter)
  if idem then
    redis.call('HSET', idem, 'fp', fp, 'granted', granted, 'used', string.format('%d', used),
               'total', total_text, 'day', day, 'expires', expires)
    redis.call('EXPIRE', idem, idem_ttl)
  end
  return {'ok', granted, used, total_text, day}
end

local replies = {}
local marked = tonumber(ARGV[2])
local k, a = 1, 3 + marked
if marked > 0 then
  -- Marked in the same step as the change, so no changed counter goes unflushed.
  redis.call('SADD', KEYS[1], unpack(ARGV, 3, 2 + marked))
  k = 2
end
while a <= #ARGV do
  -- One argument "count cost total day" per consume: a fourth of the arguments the
  -- caller has to encode (the costly part of a batch), for one match here.
  local count, cost, total, day = string.match(ARGV[a], '^(%d) (%d+) (%d+) (%S+)$')
  cost = tonumber(cost)
  if count == '3' then
    replies[#replies + 1] = consume(KEYS[k], KEYS[k + 1], KEYS[k + 2], cost, total, day,
      ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
    a = a + 5
    k = k + 3
  else
    replies[#replies + 1] = consume(KEYS[k], KEYS[k + 1], nil, cost, total, day)
    a = a + 1
    k = k + 2
  end
end
return replies
