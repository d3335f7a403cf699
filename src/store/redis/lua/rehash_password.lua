-- KEYS: user
-- ARGV: old hash, new hash
-- Replaces the hash only while it is still the one that was checked.
if redis.call('HGET', KEYS[1], 'hash') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'hash', ARGV[2])
return 1
