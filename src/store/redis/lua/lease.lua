-- KEYS: lease
-- ARGV: owner, milliseconds, 'take' | 'keep' | 'drop'
-- Who carries out a pending bulk ending: one replica at a time, so two do
-- not repeat each other's work; a lease its holder stops renewing (a crash)
-- lapses and the next sweep takes it over. Returns 1 if held by `owner`.
local held = redis.call('GET', KEYS[1])
if ARGV[3] == 'take' and not held then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if held ~= ARGV[1] then return 0 end
if ARGV[3] == 'drop' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
