-- KEYS: pending
-- ARGV: index, the value read, the same value with the user's org appended
-- Gives a user's queued ending written by an older build (no org in its
-- value) its user's org, unless it changed since it was read.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
