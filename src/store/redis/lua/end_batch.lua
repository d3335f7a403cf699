-- KEYS: deadlines, counts, events, seq:event, audit, audit:orgs, seq:audit,
--       then per session: session, token, live:user, live:org
-- ARGV: reason, now, mode ('all' or 'due'), org to audit ('' for none),
--       actor, then per session: id, digest
-- One bounded step of a bulk ending or of the expiry sweep. A session that
-- is already gone only loses its index entries. In 'due' mode only sessions
-- past their deadline end (one used since it was found due is left alone);
-- in 'all' mode only those not past it (the sweeper ends those as EXPIRED).
local ctx = {deadlines = KEYS[1], counts = KEYS[2], events = KEYS[3], seq = KEYS[4]}
local now = tonumber(ARGV[2])
local n = 0
for i = 8, #KEYS, 4 do
  local a = 6 + (i - 8) / 2
  local id, digest = ARGV[a], ARGV[a + 1]
  local v = redis.call('HMGET', KEYS[i], 'digest', 'kind', 'user_id', 'username', 'org', 'idle', 'expires')
  if v[1] ~= digest then
    redis.call('ZREM', KEYS[i + 2], id)
    redis.call('ZREM', KEYS[i + 3], id)
    redis.call('ZREM', ctx.deadlines, id)
  elseif (ARGV[3] == 'due') == (math.min(tonumber(v[6]), tonumber(v[7])) <= now) then
    finish(ctx, KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], id, v, ARGV[1], ARGV[2])
    n = n + 1
  end
end
if ARGV[4] ~= '' and n > 0 then
  audit(KEYS[5], KEYS[6], KEYS[7], ARGV[4], ARGV[5], '', ARGV[1], 'expired', n, ARGV[2])
end
return n
