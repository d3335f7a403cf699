-- KEYS: session, token, live:user, live:org, deadlines, counts, events,
--       seq:event, fences, audit, audit:orgs, seq:audit
-- ARGV: id, digest, reason, now, org filter, kind filter, actor, sid, target
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local s = tomap(h)
local n = tonumber(ARGV[4])
if s.digest ~= ARGV[2] then return false end
if tonumber(s.idle) <= n or tonumber(s.expires) <= n then return false end
if ARGV[5] ~= '' and s.org ~= ARGV[5] then return false end
if ARGV[6] ~= '' and s.kind ~= ARGV[6] then return false end
if fenced(KEYS[9], s.id, s.kind, s.org, s.user_id) then return false end
local ctx = {deadlines = KEYS[5], counts = KEYS[6], events = KEYS[7], seq = KEYS[8]}
finish(ctx, KEYS[1], KEYS[2], KEYS[3], KEYS[4], s.id,
  {s.digest, s.kind, s.user_id, s.username, s.org}, ARGV[3], ARGV[4])
bump(KEYS[9])
audit(KEYS[10], KEYS[11], KEYS[12], s.org, ARGV[7], ARGV[8], ARGV[3], ARGV[9], 1, ARGV[4])
return h
