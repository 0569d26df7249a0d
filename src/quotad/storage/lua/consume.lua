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
--
-- Limits v2 (SPEC 9): a line "v" decides several slots (counters) in one step, all or
-- nothing: "v nkeys day deadline_ms fp expires_ms now_ms idem_ttl_s now_us" (fp "-"
-- without an Idempotency-Key, the next three "0"; now_us the caller's clock in µs, the
-- rates' now, 0: this server's TIME), then ";" and per slot "kind mode cost total
-- interval_us" (kind: d a day row, w another window, r a rate; mode as
-- limits.HARD/SOFT/SHADOW/TALLY, or CREDIT/LEDGER/CREDIT_TAKE for a grant's counters, kind
-- w; a cost may be negative: a TALLY give-back). The consumes of one call mostly share
-- their slots' text (the same plan): each distinct text is read once a call.
-- Its keys: slot 1's counter, the marker, [the idempotency hash], then the other slots'
-- (a window's hash like a day's; a rate's string holding its GCRA theoretical arrival
-- time in microseconds).
-- Replies: {"ok"|"replay", granted, used, total, day, marker, refused, now_us, before...}
--   (refused: the 0-based index of the first hard slot without room, -1 none; before: each
--   slot's value before, in order; none on a replay) | {"missing", i...} (1-based indexes of
--   window slots Redis does not hold: the caller loads them from SQL and sends it again)
--   | {"conflict"} | {"lost"} | {"late"}
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
  -- A day the counters do not hold yet is loaded from SQL by the caller first. (Every
  -- counter hash holds 'used': one HMGET reads what the writes below need.)
  local row = redis.call('HMGET', counter, 'used', 'fresh', 'total')
  if not row[1] then return {'missing'}, 'missing' end
  local used = tonumber(row[1])
  local granted = 0
  if used + cost <= total then
    used = redis.call('HINCRBY', counter, 'used', cost)
    granted = 1
  else
    redis.call('HINCRBY', counter, 'rejected', 1)
  end
  if row[3] ~= total_text then redis.call('HSET', counter, 'total', total_text) end
  if row[2] then redis.call('HDEL', counter, 'fresh') end
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

local HARD = 0

-- limits.fits, exactly: the rate's terms are regrouped (its lead over now, then the cost)
-- so each stays far below 2^53, where Lua's doubles are exact.
local function fits(slot, value, now_us)
  if slot.interval > 0 then
    return (math.max(value, now_us) - now_us) + slot.cost * slot.interval
      <= slot.total * slot.interval
  end
  return value + slot.cost <= slot.total
end

local CREDIT, LEDGER = 4, 5

-- limits.decide, exactly: the first hard slot without room (0-based, -1 when none), and
-- every counter as it is if the call passes. Windows move by their cost (past the total
-- when soft or shadow); a rate's bucket only when the tokens are there; credit slots
-- (mode >= CREDIT) are one pool owing the first one's cost, each taking what it can in
-- order, each LEDGER slot moving by the take before it, a hard pool left owing refusing.
local function decide(values, slots, now_us)
  local refused, after = -1, {}
  local owed, taken, pool = -1, 0, 0
  for i = 1, #slots do
    local slot, value = slots[i], values[i]
    if slot.mode >= CREDIT then
      if slot.mode == LEDGER then
        after[i] = value + taken
      else
        if owed < 0 then owed, pool = slot.cost, i end
        local left = slot.total - value
        if owed < left then taken = owed elseif left > 0 then taken = left else taken = 0 end
        owed = owed - taken
        after[i] = value + taken
      end
    else
      local room = fits(slot, value, now_us)
      if slot.interval > 0 then
        if room then after[i] = math.max(value, now_us) + slot.cost * slot.interval
        else after[i] = value end
      else
        after[i] = value + slot.cost
      end
      if not room and refused < 0 and slot.mode == HARD then refused = i - 1 end
    end
  end
  if owed > 0 and slots[pool].mode == CREDIT and (refused < 0 or pool - 1 < refused) then
    refused = pool - 1
  end
  return refused, after
end

-- A line's slots, from their text (read-only tables: consumes with the same text share
-- them).
local function read_slots(text)
  local fields = {}
  for field in string.gmatch(text, '%S+') do fields[#fields + 1] = field end
  local slots = {}
  for base = 1, #fields, 5 do
    slots[#slots + 1] = {kind = fields[base], mode = tonumber(fields[base + 1]),
                         cost = tonumber(fields[base + 2]), cost_text = fields[base + 2],
                         total_text = fields[base + 3], total = tonumber(fields[base + 3]),
                         interval = tonumber(fields[base + 4])}
  end
  return slots
end

local function consume_slots(f, slots, keys, marker, idem, counter_ttl_s)
  local deadline = tonumber(f[4])
  if deadline > 0 and now_ms > deadline then return {'late'}, 'late' end
  local incarnation = redis.call('GET', marker)
  if not incarnation then return {'lost'}, 'lost' end
  local day = f[3]
  -- The caller's clock, as every store decides rates; 0: TIME.
  local now_us = tonumber(f[9])
  if now_us == 0 then now_us = tonumber(clock[1]) * 1000000 + tonumber(clock[2]) end
  local now_text = string.format('%d', now_us)
  if idem then
    local seen = redis.call('HMGET', idem, 'fp', 'granted', 'used', 'total', 'day', 'expires',
                            'refused')
    if seen[1] and tonumber(seen[6]) > tonumber(f[7]) then
      if seen[1] ~= f[5] then return {'conflict'}, 'conflict' end
      -- An answer restored from SQL has no refused index: the day row's, when refused.
      local refused = seen[7] or (seen[2] == '1' and '-1' or '0')
      local reply = {'replay', seen[2], seen[3], seen[4], seen[5], incarnation, refused, now_text}
      return reply, table.concat(reply, ' ')
    end
  end
  local values, missing, stored = {}, {}, {}
  for i = 1, #keys do
    local slot = slots[i]
    if slot.kind == 'r' then
      -- A bucket Redis does not hold is full (never loaded from SQL).
      values[i] = tonumber(redis.call('GET', keys[i]) or '0')
    else
      -- One read of what the writes below need: every counter hash holds 'used' (seed,
      -- consume, adjust, events and refund all write it), so a hash without it is absent.
      local row = redis.call('HMGET', keys[i], 'used', 'fresh', 'total')
      if not row[1] then
        missing[#missing + 1] = i
      else
        values[i], stored[i] = tonumber(row[1]), row
      end
    end
  end
  if #missing > 0 then
    local reply = {'missing'}
    for _, i in ipairs(missing) do reply[#reply + 1] = i end
    return reply, table.concat(reply, ' ')
  end
  local refused, after = decide(values, slots, now_us)
  if refused >= 0 then after = values end
  for i = 1, #keys do
    local slot, key = slots[i], keys[i]
    if slot.kind == 'r' then
      if after[i] ~= values[i] then
        -- Kept until the bucket is full again: an absent bucket is a full one.
        local ttl_ms = string.format('%d', math.floor((after[i] - now_us) / 1000) + 1000)
        redis.call('SET', key, string.format('%d', after[i]), 'PX', ttl_ms)
      end
    else
      -- Only what changes is written: 'fresh' goes with the first write, and the total
      -- when the call's differs from the stored one.
      local row = stored[i]
      local written = refused < 0 or slot.kind == 'd'
      if refused < 0 then
        -- What decide moved it by (a credit slot: its take), as text: never 1e+15.
        redis.call('HINCRBY', key, 'used', string.format('%d', after[i] - values[i]))
      elseif slot.kind == 'd' then
        redis.call('HINCRBY', key, 'rejected', 1)
      end
      if written and row[2] then redis.call('HDEL', key, 'fresh') end
      if row[3] ~= slot.total_text then redis.call('HSET', key, 'total', slot.total_text) end
      redis.call('EXPIRE', key, counter_ttl_s)
    end
  end
  local granted = refused < 0 and 1 or 0
  local used = after[1]
  if idem then
    redis.call('HSET', idem, 'fp', f[5], 'granted', granted, 'used', string.format('%d', used),
               'total', slots[1].total_text, 'day', day, 'expires', f[6], 'refused', refused)
    redis.call('EXPIRE', idem, f[8])
  end
  local reply = {'ok', granted, used, slots[1].total_text, day, incarnation, refused, now_us}
  local line = {'ok', granted, string.format('%d', used), slots[1].total_text, day, incarnation,
                refused, now_text}
  for i = 1, #keys do
    reply[#reply + 1] = values[i]
    line[#line + 1] = string.format('%d', values[i])
  end
  return reply, table.concat(line, ' ')
end

local replies, lines, k = {}, {}, 2
local shapes = {}  -- each distinct slots' text of this call, read
for line in string.gmatch(ARGV[2], '[^\n]+') do
  if string.sub(line, 1, 1) == 'v' then
    local head, text = string.match(line, '^([^;]*);(.*)$')
    local f = {}
    for field in string.gmatch(head, '%S+') do f[#f + 1] = field end
    local slots = shapes[text]
    if not slots then
      slots = read_slots(text)
      shapes[text] = slots
    end
    local count = tonumber(f[2])
    local idem, first = nil, k + 2
    if f[5] ~= '-' then idem, first = KEYS[k + 2], k + 3 end
    local keys = {KEYS[k]}
    for i = first, k + count - 1 do keys[#keys + 1] = KEYS[i] end
    local n = #replies + 1
    replies[n], lines[n] = consume_slots(f, slots, keys, KEYS[k + 1], idem, counter_ttl)
    k = k + count
  else
    local count, cost, total, day, deadline, fp, expires, now, idem_ttl = string.match(
      line, '^(%d) (%d+) (%d+) (%S+) (%d+) ?(%S*) ?(%S*) ?(%S*) ?(%S*)$')
    local idem = nil
    if count == '3' then idem = KEYS[k + 2] end
    local n = #replies + 1
    replies[n], lines[n] = consume(KEYS[k], KEYS[k + 1], idem, tonumber(cost), total, day,
      tonumber(deadline), fp, expires, now, idem_ttl)
    k = k + tonumber(count)
  end
end
redis.call('SET', KEYS[1], table.concat(lines, '\n'), 'EX', ARGV[3])
return replies
