-- KEYS: user, uids, users
-- ARGV: username, user id
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
