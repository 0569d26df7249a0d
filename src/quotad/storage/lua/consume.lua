-- Atomic consumes, decided one after the other in the order given. On a Redis Cluster
-- every key of one call shares a slot (callers group consumes by slot; each account's
-- keys carry its hash tag); a single Redis takes any mix of accounts in one call.
-- KEYS: [the set of dirty accounts, when ARGV[2] > 0], then per consume: its counter hash
--   (used, total, rejected), its account's dirty set "<prefix>:{<account>}:dirty", and
--   with an Idempotency-Key its idempotency hash.
-- ARGV[1] counter_ttl_s
-- ARGV[2] where the account starts in a dirty set's name (the prefix's length + 3), or 0
--   on a Cluster, where the caller marks the dirty accounts itself
-- ARGV[3] the consumes, one line each: "2 cost total day", or with an Idempotency-Key
--   "3 cost total day fingerprint idem_expires_ms now_ms idem_ttl_s" (the first field
--   counts the consume's keys). One argument for the whole batch: each argument is
--   encoded one by one by the client, which made them the costly part of a batch.
-- Returns one reply per consume:
--   {"ok"|"replay", granted, used, total, day} | {"conflict"} | {"missing"}
-- Numbers go back as integer replies or as the caller's own text, never through Lua's
-- tostring (which writes 1e+15 for large ones).
local counter_ttl = ARGV[1]
local account_at = tonumber(ARGV[2])

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

local consumes, k = {}, 1
if account_at > 0 then k = 2 end
for line in string.gmatch(ARGV[3], '[^\n]+') do
  local count, cost, total, day, fp, expires, now, idem_ttl = string.match(
    line, '^(%d) (%d+) (%d+) (%S+) ?(%S*) ?(%S*) ?(%S*) ?(%S*)$')
  local idem = nil
  if count == '3' then idem = KEYS[k + 2] end
  consumes[#consumes + 1] = {KEYS[k], KEYS[k + 1], idem, tonumber(cost), total, day, fp,
    expires, now, idem_ttl}
  k = k + tonumber(count)
end

if account_at > 0 then
  -- Marked before any change, in the same step: no changed counter goes unflushed.
  local accounts = {}
  for i, c in ipairs(consumes) do accounts[i] = string.sub(c[2], account_at, -8) end
  redis.call('SADD', KEYS[1], unpack(accounts))
end

local replies = {}
for i, c in ipairs(consumes) do replies[i] = consume(unpack(c, 1, 10)) end
return replies
