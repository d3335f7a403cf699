-- KEYS: streams hash (id -> body), versions hash (id -> version),
--       orgs hash (id -> org, '' for every org), the org's id set
-- ARGV: id, org, version, body, max streams of the org
-- Returns 1 when created, 0 when the org holds its maximum, -1 when the id exists.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
if redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1])
return 1
