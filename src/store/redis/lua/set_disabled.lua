-- KEYS: user, fences, pending, seq:session, deadlines, audit, audit:orgs,
--       seq:audit, then the user's four live indexes
-- ARGV: flag, now, actor, sid, target, user id, shards, shard, then the
--       four fence fields
-- Disabling fences every session of the user in the same step, so a login
-- racing it either comes first (and is fenced) or finds the user disabled.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local u = redis.call('HMGET', KEYS[1], 'id', 'org')
if u[1] ~= ARGV[6] then return -2 end
redis.call('HSET', KEYS[1], 'disabled', ARGV[1])
if ARGV[1] ~= '1' then return 0 end
local k = {fences = KEYS[2], pending = KEYS[3], seqsess = KEYS[4], deadlines = KEYS[5]}
local n = fence(k, tonumber(ARGV[7]), tonumber(ARGV[8]), 9, #KEYS, 9, '', 'LOGOFF_OTHER', ARGV[2], u[2])
audit(KEYS[6], KEYS[7], KEYS[8], u[2], ARGV[3], ARGV[4], 'LOGOFF_OTHER', ARGV[5], n, ARGV[2])
return n
