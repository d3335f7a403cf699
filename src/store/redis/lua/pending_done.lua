-- KEYS: pending, fences
-- ARGV: index, the work item that was drained, the index's fence field, the
--       fence value that work item set
-- Marks a bulk ending carried out. Every session its fence covered is gone
-- (or expired, the sweeper's), so the fence goes too, unless a newer ending
-- replaced it: fences would otherwise pile up, one per user and org ever
-- ended.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[4] then
    redis.call('HDEL', KEYS[2], ARGV[3])
  end
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
