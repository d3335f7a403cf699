-- KEYS: the signing keys hash (kid -> created_at \x1f base64 PKCS#8)
-- ARGV: kid, value, '1' to add only when no key is kept yet
-- Replicas starting together each offer a key; the first one kept wins.
if ARGV[3] ~= '1' or redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
