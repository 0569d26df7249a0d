-- Load counters (day rows, and Limits v2's other windows) from their durable copy,
-- each unless Redis already holds it.
-- KEYS[1] the account's marker, then the counter hashes
-- ARGV[1] the marker read before SQL was, ARGV[2] counter_ttl_s, then per counter: used,
-- total, rejected, fresh.
-- fresh = 1 when SQL had no row: the counter is then not a stored day until a write
-- clears the mark (every writing script does), so reads do not report it.
-- Unless the marker is still the one read before SQL was, this Redis lost the account
-- meanwhile (and it may have been rebuilt since): what SQL said then may miss other
-- nodes' unflushed grants, so nothing is loaded (the caller starts over).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local base = 3 + (i - 2) * 4
    redis.call('HSET', KEYS[i], 'used', ARGV[base], 'total', ARGV[base + 1],
               'rejected', ARGV[base + 2], 'fresh', ARGV[base + 3])
    redis.call('EXPIRE', KEYS[i], ARGV[2])
  end
end
return 1
