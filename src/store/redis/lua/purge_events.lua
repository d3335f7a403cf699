-- KEYS: events, events:purged
-- ARGV: cutoff time, most events to look at
-- Trims the oldest entries whose events are all older than the cutoff (an
-- entry's events share one time, the last of each packed field), a few
-- entries at a time up to about the given number of events. Returns {events
-- trimmed, 1 if more may be due}.
local cutoff, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
local last, events, from, done = nil, 0, '-', false
while not done and events < budget do
  local page = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', 8)
  done = #page < 8
  for _, e in ipairs(page) do
    local f = e[2]
    local at = tonumber(string.match(f[#f], '([^\31]*)$'))
    if not (at and at < cutoff) then done = true; break end
    last = e[1]
    events = events + #f / 2
  end
  if last then from = '(' .. last end
end
if not last then return {0, 0} end
local seq = tonumber(string.match(last, '^(%d+)'))
redis.call('XTRIM', KEYS[1], 'MINID', (seq + 1) .. '-0')
local purged = tonumber(redis.call('GET', KEYS[2]) or '0')
if seq > purged then redis.call('SET', KEYS[2], seq) end
if done then return {events, 0} end
return {events, 1}
