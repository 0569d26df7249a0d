-- Atomic consumes, decided one after the other in the order given. On a Redis Cluster
-- every key of one call shares a slot (callers group consumes by slot; each account's
-- keys carry its hash tag); a single Redis takes any mix of accounts in one call.
-- KEYS[1] this call's own key (its batch id; on a Cluster in the batch's slot), then per
--   consume: its counter hash (used, total, rejected), its account's marker
--   "<prefix>:{<account>}:m", and with an Idempotency-Key its idempotency hash.
-- ARGV[1] counter_ttl_s
-- ARGV[2] the consumes, one line each: "2 cost total day deadline_ms", or with an
--   Idempotency-Key "3 cost total day deadline_ms fingerprint idem_expires_ms now_ms
--   idem_ttl_s" (the first field counts the consume's keys). One argument for the whole
--   batch: each argument is encoded one by one by the client, which made them the costly
--   part of a batch.
-- Returns one reply per consume:
--   {"ok"|"replay", granted, used, total, day, marker} | {"conflict"} | {"missing"}
--   | {"lost"} | {"late"}
-- (marker: the account's marker, which names this incarnation of its counters)
-- ARGV[3] how long (s) this call's replies are kept under KEYS[1]
-- Numbers go back as integer replies or as the caller's own text, never through Lua's
-- tostring (which writes 1e+15 for large ones).
-- The client library sends a call again when its connection fails or times out after
-- sending it, and Redis may have run the first one: the same call (same KEYS[1]) is then
-- answered with the first one's replies, so no consume is ever applied twice.
local counter_ttl = ARGV[1]
local seen = redis.call('GET', KEYS[1])
if seen then
  local replies = {}
  for line in string.gmatch(seen, '[^\n]+') do
    local reply = {}
    for field in string.gmatch(line, '%S+') do reply[#reply + 1] = field end
    replies[#replies + 1] = reply
  end
  return replies
end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function consume(counter, marker, idem, cost, total_text, day, deadline, fp, expires,
                       now, idem_ttl)
  -- The caller stopped waiting at its deadline (in this server's clock) and answered
  -- 503 or an uncounted allow: a script that runs later (a Redis paused, then resumed)
  -- must not charge the call after all.
  if deadline > 0 and now_ms > deadline then return {'late'}, 'late' end
  -- The account's marker is written once its counters are known to be whole: without
  -- it, this Redis lost them (restart, failover, FLUSHALL) and the caller rebuilds them
  -- from SQL once every node's unflushed grants are there.
  local incarnation = redis.call('GET', marker)
  if not incarnation then return {'lost'}, 'lost' end
  local total = tonumber(total_text)
  if idem then
    local seen = redis.call('HMGET', idem, 'fp', 'granted', 'used', 'total', 'day', 'expires')
    if seen[1] and tonumber(seen[6]) > tonumber(now) then
      if seen[1] ~= fp then return {'conflict'}, 'conflict' end
      return {'replay', seen[2], seen[3], seen[4], seen[5], incarnation},
        table.concat({'replay', seen[2], seen[3], seen[4], seen[5], incarnation}, ' ')
    end
  end
  -- A day the counters do not hold yet is loaded from SQL by the caller first.
  if redis.call('EXISTS', counter) == 0 then return {'missing'}, 'missing' end
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
  if idem then
    redis.call('HSET', idem, 'fp', fp, 'granted', granted, 'used', string.format('%d', used),
               'total', total_text, 'day', day, 'expires', expires)
    redis.call('EXPIRE', idem, idem_ttl)
  end
  -- Numbers as integers in the cached line, never as 1e+15.
  local line = string.format('ok %d %d ', granted, used) .. total_text .. ' ' .. day .. ' '
    .. incarnation
  return {'ok', granted, used, total_text, day, incarnation}, line
end

local replies, lines, k = {}, {}, 2
for line in string.gmatch(ARGV[2], '[^\n]+') do
  local count, cost, total, day, deadline, fp, expires, now, idem_ttl = string.match(
    line, '^(%d) (%d+) (%d+) (%S+) (%d+) ?(%S*) ?(%S*) ?(%S*) ?(%S*)$')
  local idem = nil
  if count == '3' then idem = KEYS[k + 2] end
  local n = #replies + 1
  replies[n], lines[n] = consume(KEYS[k], KEYS[k + 1], idem, tonumber(cost), total, day,
    tonumber(deadline), fp, expires, now, idem_ttl)
  k = k + tonumber(count)
end
redis.call('SET', KEYS[1], table.concat(lines, '\n'), 'EX', ARGV[3])
return replies
