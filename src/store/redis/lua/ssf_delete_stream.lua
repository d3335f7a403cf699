-- KEYS: streams hash, versions hash, orgs hash, the stream's lease, the
--       id set of the stream's org (read by the caller: a stream's org
--       never changes)
-- ARGV: id, that org ('' for every org)
-- Returns 1 when the stream was deleted.
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
redis.call('SREM', KEYS[5], ARGV[1])
return 1
