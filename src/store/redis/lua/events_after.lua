-- KEYS: events:purged, events
-- ARGV: after, first entry id, how many events make a full answer
-- Entries whose id (their last event's sequence) is past `after`, until they
-- hold at least that many events; an entry holds one event ('e' field) or,
-- from a bulk step, several (the caller drops what exceeds the count). Read
-- a few entries at a time, so a reply exceeds it by at most a few entries.
local purged = redis.call('GET', KEYS[1]) or '0'
if tonumber(ARGV[1]) < tonumber(purged) then return {'EXPIRED', purged} end
local want, out, events, from = tonumber(ARGV[3]), {}, 0, ARGV[2]
local step = math.min(8, want)
while events < want do
  local page = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', step)
  for _, e in ipairs(page) do
    out[#out + 1] = e
    events = events + #e[2] / 2
  end
  if #page < step then break end
  from = '(' .. page[#page][1]
end
return {'OK', out}
