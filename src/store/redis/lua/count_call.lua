-- KEYS: a rate-limit window counter
-- ARGV: the most calls a window holds, window in ms
-- Counts one call in a fixed window that starts with the first. Past the
-- limit nothing is counted, and the time left in the window (ms) is
-- returned; -1 when the call was counted.
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n == 0 then
  redis.call('SET', KEYS[1], 1, 'PX', ARGV[2])
  return -1
end
if n >= tonumber(ARGV[1]) then
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then return left end
  -- A counter without an expiry never ends its window: start a new one.
  redis.call('SET', KEYS[1], 1, 'PX', ARGV[2])
  return -1
end
redis.call('INCR', KEYS[1])
return -1
