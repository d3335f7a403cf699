-- KEYS: deadlines, counts, events, seq:event,
--       then per session: session, token, live:user, live:org
-- ARGV: per session: id, kind, event body (id, user, org, kind, reason, at)
-- One bounded step of a bulk ending, behind its fence (so the sessions are
-- invalid already and cannot change meanwhile). The caller read each
-- session's fields beforehand; a session gone since then (ended by another
-- call) only loses its index entries. The events of the step are one stream
-- entry: one 'e' field per session, the entry id the last one's sequence.
local ended, fv, by_key, per_kind, dels = 0, {}, {}, {}, {}
local function drop(key, id)
  local ids = by_key[key]
  if not ids then ids = {}; by_key[key] = ids end
  ids[#ids + 1] = id
end
for i = 5, #KEYS, 4 do
  local a = (i - 5) / 4 * 3 + 1
  local id = ARGV[a]
  if redis.call('EXISTS', KEYS[i]) == 1 then
    ended = ended + 1
    fv[#fv + 1] = 'e'
    fv[#fv + 1] = ARGV[a + 2]
    dels[#dels + 1] = KEYS[i]
    dels[#dels + 1] = KEYS[i + 1]
    per_kind[ARGV[a + 1]] = (per_kind[ARGV[a + 1]] or 0) + 1
  end
  drop(KEYS[i + 2], id)
  drop(KEYS[i + 3], id)
  drop(KEYS[1], id)
end
if ended > 0 then
  local last = redis.call('INCRBY', KEYS[4], ended)
  redis.call('XADD', KEYS[3], last .. '-0', unpack(fv))
  redis.call('DEL', unpack(dels))
  for kind, n in pairs(per_kind) do redis.call('HINCRBY', KEYS[2], kind, -n) end
end
for key, ids in pairs(by_key) do redis.call('ZREM', key, unpack(ids)) end
return ended
