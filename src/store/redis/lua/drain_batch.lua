-- KEYS: deadlines, counts, events, seq:event, the index being drained,
--       pending, then per session: session, token, its other index (its
--       user's when draining an org's, its org's when draining a user's)
-- ARGV: the index's kind, the pending work item being carried out, then per
--       session: id, event body (id, user, org, kind, reason, at)
-- One bounded step of a bulk ending, behind its fence (so the sessions are
-- invalid already and cannot change meanwhile). The caller read each
-- session's fields beforehand; a session gone since then (ended by another
-- call) only loses its index entries. The events of the step are one stream
-- entry: one 'e' field per session, the entry id the last one's sequence.
-- A work item no longer pending was finished (by another replica whose
-- lease this one outlived) and its fence removed: ids it covered may now
-- be reused by logins that reserved them before the fence, so the step
-- ends nothing and returns -1.
if redis.call('HGET', KEYS[6], KEYS[5]) ~= ARGV[2] then return -1 end
local ended, fv, dels, ids, others = 0, {}, {}, {}, {}
for i = 7, #KEYS, 3 do
  local a = (i - 7) / 3 * 2 + 3
  local id = ARGV[a]
  if redis.call('EXISTS', KEYS[i]) == 1 then
    ended = ended + 1
    fv[#fv + 1] = 'e'
    fv[#fv + 1] = ARGV[a + 1]
    dels[#dels + 1] = KEYS[i]
    dels[#dels + 1] = KEYS[i + 1]
  end
  ids[#ids + 1] = id
  local other = others[KEYS[i + 2]]
  if not other then other = {}; others[KEYS[i + 2]] = other end
  other[#other + 1] = id
end
if ended > 0 then
  local last = redis.call('INCRBY', KEYS[4], ended)
  redis.call('XADD', KEYS[3], last .. '-0', unpack(fv))
  redis.call('DEL', unpack(dels))
  redis.call('HINCRBY', KEYS[2], ARGV[1], -ended)
end
redis.call('ZREM', KEYS[5], unpack(ids))
redis.call('ZREM', KEYS[1], unpack(ids))
for key, members in pairs(others) do
  if key ~= KEYS[5] then redis.call('ZREM', key, unpack(members)) end
end
return ended
