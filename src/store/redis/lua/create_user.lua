-- KEYS: user, seq:user, uids, users
-- ARGV: username, org, role, hash, now, shards, shard
if redis.call('EXISTS', KEYS[1]) == 1 then return 'EXISTS' end
local id = redis.call('INCR', KEYS[2]) * tonumber(ARGV[6]) + tonumber(ARGV[7])
redis.call('HSET', KEYS[1], 'id', id, 'username', ARGV[1], 'org', ARGV[2], 'role', ARGV[3],
  'hash', ARGV[4], 'disabled', '0', 'created', ARGV[5])
redis.call('HSET', KEYS[3], id, ARGV[1] .. '\31' .. ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1])
return tostring(id)
