-- KEYS: a failure counter
-- ARGV: window in ms
-- Counts a credential failure in a fixed window that starts with the first.
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
