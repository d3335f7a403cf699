-- KEYS: deadlines, counts, events, seq:event, audit, audit:orgs, seq:audit,
--       then per session: session, token, live:user, live:org
-- ARGV: reason, now, org to audit ('' for none), actor,
--       then per session: id, digest
-- One bounded step of the expiry sweep: only sessions past their deadline
-- end (one used since it was found due is left alone); one that is already
-- gone only loses its index entries. Deletions are variadic, one call per
-- key: far cheaper than per session.
local now = tonumber(ARGV[2])
local ended, by_key, per_kind, dels = {}, {}, {}, {}
local function drop(key, id)
  by_key[key] = by_key[key] or {}
  table.insert(by_key[key], id)
end
for i = 8, #KEYS, 4 do
  local a = 5 + (i - 8) / 2
  local id, digest = ARGV[a], ARGV[a + 1]
  local v = redis.call('HMGET', KEYS[i], 'digest', 'kind', 'user_id', 'username', 'org', 'idle', 'expires')
  if v[1] ~= digest then
    drop(KEYS[i + 2], id)
    drop(KEYS[i + 3], id)
    drop(KEYS[1], id)
  elseif math.min(tonumber(v[6]), tonumber(v[7])) <= now then
    ended[#ended + 1] = {i, id, v}
  end
end
if #ended > 0 then
  -- One stream entry for the step: an 'e' field per session, the entry id
  -- the last one's sequence.
  local fv = {}
  for _, e in ipairs(ended) do
    local i, id, v = e[1], e[2], e[3]
    fv[#fv + 1] = 'e'
    fv[#fv + 1] = id .. US .. v[4] .. US .. v[5] .. US .. v[2] .. US .. ARGV[1] .. US .. ARGV[2]
    dels[#dels + 1] = KEYS[i]
    dels[#dels + 1] = KEYS[i + 1]
    drop(KEYS[i + 2], id)
    drop(KEYS[i + 3], id)
    drop(KEYS[1], id)
    per_kind[v[2]] = (per_kind[v[2]] or 0) + 1
  end
  redis.call('XADD', KEYS[3], redis.call('INCRBY', KEYS[4], #ended) .. '-0', unpack(fv))
  redis.call('DEL', unpack(dels))
  for kind, n in pairs(per_kind) do redis.call('HINCRBY', KEYS[2], kind, -n) end
end
for key, ids in pairs(by_key) do redis.call('ZREM', key, unpack(ids)) end
if ARGV[3] ~= '' and #ended > 0 then
  audit(KEYS[5], KEYS[6], KEYS[7], ARGV[3], ARGV[4], '', ARGV[1], 'expired', #ended, ARGV[2])
end
return #ended
