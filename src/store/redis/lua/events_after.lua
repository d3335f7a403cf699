-- KEYS: events:purged, events
-- ARGV: after, first entry id, count
local purged = redis.call('GET', KEYS[1]) or '0'
if tonumber(ARGV[1]) < tonumber(purged) then return {'EXPIRED', purged} end
return {'OK', redis.call('XRANGE', KEYS[2], ARGV[2], '+', 'COUNT', ARGV[3])}
