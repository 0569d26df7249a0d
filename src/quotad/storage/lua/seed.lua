-- Load a day's counter from its durable copy, unless Redis already holds it.
-- KEYS[1] counter hash   KEYS[2] the account's marker
-- ARGV: used, total, rejected, counter_ttl_s, fresh, the marker read before SQL was
-- fresh = 1 when SQL had no row: the counter is then not a stored day until a write
-- clears the mark (every writing script does), so reads do not report it.
-- Unless the marker is still the one read before SQL was, this Redis lost the account
-- meanwhile (and it may have been rebuilt since): what SQL said then may miss other
-- nodes' unflushed grants, so nothing is loaded (the caller starts over).
if redis.call('GET', KEYS[2]) ~= ARGV[6] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'used', ARGV[1], 'total', ARGV[2], 'rejected', ARGV[3],
             'fresh', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return 1
