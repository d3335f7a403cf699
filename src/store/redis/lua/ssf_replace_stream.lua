-- KEYS: streams hash, versions hash
-- ARGV: id, expected version, new version, new body
-- A compare-and-set: 1 when written, 0 when the stream changed or is gone.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
