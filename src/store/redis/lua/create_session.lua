-- KEYS: user, session, token, live:user, live:org, deadlines, counts, fences
-- ARGV: id, user id, digest, kind, now, idle, expires, addr, ua, ttl grace, peer
local u = redis.call('HMGET', KEYS[1], 'id', 'disabled', 'org', 'role', 'username')
if u[1] ~= ARGV[2] or u[2] ~= '0' then return 'NOUSER' end
-- An id reserved before a fence but used after it would be born ended.
if fenced(KEYS[8], ARGV[1], ARGV[4], u[3], ARGV[2]) then return 'RETRY' end
-- Validations are remembered only in a shard that has a version.
if redis.call('HEXISTS', KEYS[8], '#') == 0 then bump(KEYS[8]) end
local deadline = math.min(tonumber(ARGV[6]), tonumber(ARGV[7]))
local ttl_at = deadline + tonumber(ARGV[10])
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'digest', ARGV[3], 'kind', ARGV[4],
  'user_id', ARGV[2], 'username', u[5], 'org', u[3], 'role', u[4], 'created', ARGV[5],
  'seen', ARGV[5], 'idle', ARGV[6], 'expires', ARGV[7], 'addr', ARGV[8], 'ua', ARGV[9],
  'peer', ARGV[11])
redis.call('PEXPIREAT', KEYS[2], ttl_at)
-- The token key holds a copy of the session: validation reads only it.
local h = redis.call('HGETALL', KEYS[2])
redis.call('HSET', KEYS[3], unpack(h))
redis.call('PEXPIREAT', KEYS[3], ttl_at)
redis.call('ZADD', KEYS[4], ARGV[1], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[1], ARGV[1])
redis.call('ZADD', KEYS[6], deadline, ARGV[1])
redis.call('HINCRBY', KEYS[7], ARGV[4], 1)
return h
