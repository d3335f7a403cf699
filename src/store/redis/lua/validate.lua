-- KEYS: token, fences
-- The session copy of a token, unless a bulk ending's fence covers it, and
-- the shard's version ('#epoch', when it has one) it was read at.
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return false end
local s = tomap(h)
if fenced(KEYS[2], s.id, s.kind, s.org, s.user_id) then return false end
local version = redis.call('HGET', KEYS[2], '#')
if version then
  h[#h + 1] = '#epoch'
  h[#h + 1] = version
end
return h
