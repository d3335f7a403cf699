-- KEYS: the username's directory entry
-- ARGV: the org it must still name
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
