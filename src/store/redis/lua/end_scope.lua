-- KEYS: fences, pending, seq:session, deadlines, audit, audit:orgs,
--       seq:audit, then the live indexes the ending covers, then (for an
--       org's indexes) the indexes of its users' endings still pending
-- ARGV: reason, now, actor, sid, target, org, id to spare ('' for none),
--       shards, shard, then one fence field per covered index
-- The first, constant-time step of a bulk ending: fences make every covered
-- session invalid at once; their removal and events follow in batches.
local k = {fences = KEYS[1], pending = KEYS[2], seqsess = KEYS[3], deadlines = KEYS[4]}
local n = fence(k, tonumber(ARGV[8]), tonumber(ARGV[9]), 8, 7 + #ARGV - 9, 10, ARGV[7], ARGV[1],
  ARGV[2], ARGV[6])
-- The pending user endings changed since the caller read them.
if not n then return 'RETRY' end
-- A call that ended nothing leaves no audit record.
if n > 0 then
  audit(KEYS[5], KEYS[6], KEYS[7], ARGV[6], ARGV[3], ARGV[4], ARGV[1], ARGV[5], n, ARGV[2])
end
return n
