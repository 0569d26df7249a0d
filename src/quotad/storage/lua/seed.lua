-- Load a day's counter from its durable copy, unless Redis already holds it.
-- KEYS[1] counter hash   ARGV: used, total, rejected, counter_ttl_s
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'used', ARGV[1], 'total', ARGV[2], 'rejected', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return 1
