-- Take (read and clear) the set of an account's counters changed since the last flush.
-- KEYS[1] the account's dirty set
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members
