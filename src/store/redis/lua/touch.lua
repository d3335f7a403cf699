-- KEYS: session, token, deadlines
-- ARGV: id, now, idle deadline, ttl grace, digest
local v = redis.call('HMGET', KEYS[1], 'idle', 'expires', 'digest')
if not v[1] or v[3] ~= ARGV[5] then return 0 end
local idle = tonumber(v[1])
if idle <= tonumber(ARGV[2]) or idle >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'seen', ARGV[2], 'idle', ARGV[3])
redis.call('HSET', KEYS[2], 'seen', ARGV[2], 'idle', ARGV[3])
local deadline = math.min(tonumber(ARGV[3]), tonumber(v[2]))
local ttl_at = deadline + tonumber(ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ttl_at)
redis.call('PEXPIREAT', KEYS[2], ttl_at)
redis.call('ZADD', KEYS[3], deadline, ARGV[1])
return 1
