-- KEYS: token, fences
-- The session copy of a token, unless a bulk ending's fence covers it.
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local s = tomap(h)
if fenced(KEYS[2], s.id, s.kind, s.org, s.user_id) then return false end
return h
