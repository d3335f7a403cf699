-- KEYS: events, events:purged
-- ARGV: cutoff time, count
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[2])
local last = nil
for _, e in ipairs(entries) do
  local f = e[2]
  local at = nil
  -- The time is the last of the packed fields.
  for i = 1, #f, 2 do
    if f[i] == 'e' then at = tonumber(string.match(f[i + 1], '([^\31]*)$')) end
  end
  if at and at < tonumber(ARGV[1]) then last = e[1] else break end
end
if not last then return 0 end
local seq = tonumber(string.match(last, '^(%d+)'))
local removed = redis.call('XTRIM', KEYS[1], 'MINID', (seq + 1) .. '-0')
local purged = tonumber(redis.call('GET', KEYS[2]) or '0')
if seq > purged then redis.call('SET', KEYS[2], seq) end
return removed
