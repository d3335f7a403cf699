-- Shared by every script that ends sessions (prepended to each). Every key
-- is declared in KEYS by the caller; names only fill fields and values.
-- Event fields are packed into one value, split by the unit separator (a
-- control character names never hold): one field per entry keeps XADD cheap.
local US = '\31'

local function tomap(h)
  local m = {}
  for i = 1, #h, 2 do m[h[i]] = h[i + 1] end
  return m
end

-- A fence value: '<watermark>' or '<watermark>:<spared id>'.
local function parse_fence(v)
  if not v then return -1, '' end
  local w, keep = string.match(v, '^(%d+):?(%d*)$')
  return tonumber(w) or -1, keep or ''
end

-- Whether a bulk ending already covers the session: its id is at or below
-- the watermark of a fence on its org and kind, or on its user and kind.
local function fenced(fences, id, kind, org, uid)
  local f = redis.call('HMGET', fences, 'o:' .. kind .. ':' .. org, 'u:' .. kind .. ':' .. uid)
  local n = tonumber(id)
  local ow = parse_fence(f[1])
  if n <= ow then return true end
  local uw, keep = parse_fence(f[2])
  return n <= uw and tostring(id) ~= keep
end

-- Gives the shard a new version ('#' in its fences): a replica that
-- remembered a validation at the old version reads the session again.
-- Server time plus a counter never repeats, not even on a replica promoted
-- without the shard's newest writes, where a counter alone could.
local function bump(fences)
  local t = redis.call('TIME')
  local n = redis.call('HINCRBY', fences, '#n', 1)
  redis.call('HSET', fences, '#', t[1] .. '.' .. t[2] .. '.' .. n)
end

-- One audit record per call, in the org's audit stream.
local function audit(key, orgs, seq, org, actor, sid, reason, target, ended, now)
  local id = redis.call('INCR', seq)
  redis.call('XADD', key, id .. '-0', 'at', now, 'actor', actor, 'sid', sid,
    'reason', reason, 'target', target, 'ended', ended)
  redis.call('SADD', orgs, org)
end

-- Ends one session: its event, then its keys and index entries go.
-- ctx: {deadlines, counts, events, seq}; v: {digest, kind, user_id, username, org}.
local function finish(ctx, s, t, lu, lo, id, v, reason, now)
  local seq = redis.call('INCR', ctx.seq)
  redis.call('XADD', ctx.events, seq .. '-0', 'e',
    id .. US .. v[4] .. US .. v[5] .. US .. v[2] .. US .. reason .. US .. now)
  redis.call('DEL', s, t)
  redis.call('ZREM', lu, id)
  redis.call('ZREM', lo, id)
  redis.call('ZREM', ctx.deadlines, id)
  redis.call('HINCRBY', ctx.counts, v[2], -1)
end

-- A pending value: watermark, reason, time, spared id, the user's org.
local PENDING = '^([^' .. US .. ']*)' .. US .. '[^' .. US .. ']*' .. US .. '[^' .. US .. ']*' ..
  US .. '([^' .. US .. ']*)' .. US .. '(.*)$'

-- The pending user endings of `kind` in `org` among `pending` (its fields
-- and values, as HGETALL gives them), as {index, watermark, spared id};
-- nil when one of their indexes is not among `declared` (the caller read
-- `pending` before it changed, and must read it again).
local function pending_users(pending, kind, org, declared)
  local out = {}
  local marker = ':lu:' .. kind .. ':'
  for i = 1, #pending, 2 do
    if string.find(pending[i], marker, 1, true) then
      local w, spare, uorg = string.match(pending[i + 1], PENDING)
      if uorg == org then
        if not declared[pending[i]] then return nil end
        out[#out + 1] = {pending[i], tonumber(w), spare}
      end
    end
  end
  return out
end

-- Fences the live indexes KEYS[first..last] (fence fields ARGV[ffirst..])
-- at the shard's newest session id, sparing `keep`, and queues their
-- removal in `pending`. Returns how many live sessions the fences newly
-- cover: not those an older fence covers already (the index's own; for a
-- user's index, the org-wide fence of its kind in `org`, a LogoutAll still
-- being carried out; for an org's index, the fence of each of its users'
-- endings of that kind still being carried out, whose indexes the caller
-- declares in KEYS[last+1..]), nor the expired ones not swept yet, which
-- are the sweeper's (they are few, as it runs every interval; at most 1000
-- are looked at). Returns nil when the declared user indexes are not all
-- those pending.
local function fence(k, shards, shard, first, last, ffirst, keep, reason, now, org)
  local w = tonumber(redis.call('GET', k.seqsess) or '0') * shards + shard
  local due = redis.call('ZRANGEBYSCORE', k.deadlines, '-inf', now, 'LIMIT', 0, 1000)
  local declared = {}
  for i = last + 1, #KEYS do declared[KEYS[i]] = true end
  -- Checked before anything is written: a script is not rolled back.
  local users_of, pending = {}, nil
  for i = first, last do
    local okind = string.match(ARGV[ffirst + i - first], '^o:([^:]+):')
    if okind then
      pending = pending or redis.call('HGETALL', k.pending)
      users_of[i] = pending_users(pending, okind, org, declared)
      if not users_of[i] then return nil end
    end
  end
  local n = 0
  for i = first, last do
    local idx, field = KEYS[i], ARGV[ffirst + i - first]
    local ow, okeep = parse_fence(redis.call('HGET', k.fences, field))
    local xw = -1
    local kind = string.match(field, '^u:([^:]+):')
    if kind and org ~= '' then
      xw = parse_fence(redis.call('HGET', k.fences, 'o:' .. kind .. ':' .. org))
    end
    local covered = math.max(ow, xw)
    local spare = keep
    -- An id an older fence covered stays ended.
    if spare ~= '' and ((tonumber(spare) <= ow and spare ~= okeep) or tonumber(spare) <= xw) then
      spare = ''
    end
    n = n + redis.call('ZCOUNT', idx, '(' .. covered, w)
    if okeep ~= '' and okeep ~= spare and tonumber(okeep) > xw and redis.call('ZSCORE', idx, okeep) then
      n = n + 1
    end
    if spare ~= '' and tonumber(spare) > covered and redis.call('ZSCORE', idx, spare) then n = n - 1 end
    for _, id in ipairs(due) do
      local v = tonumber(id)
      if v > covered and v <= w and id ~= spare and redis.call('ZSCORE', idx, id) then n = n - 1 end
    end
    for _, u in ipairs(users_of[i] or {}) do
      local uidx, uw, ukeep = u[1], u[2], u[3]
      -- Counted above and by the user's ending: in its index (so not
      -- removed yet), newly covered here, within its fence, not its
      -- spared id, nor one left out above (spared, or expired).
      local hi = math.min(uw, w)
      if hi > covered then
        n = n - redis.call('ZCOUNT', uidx, '(' .. covered, hi)
        local function unsubtract(id)
          local v = tonumber(id)
          if v > covered and v <= hi and redis.call('ZSCORE', uidx, id) then n = n + 1 end
        end
        if ukeep ~= '' then unsubtract(ukeep) end
        if spare ~= '' and spare ~= ukeep then unsubtract(spare) end
        for _, id in ipairs(due) do
          if id ~= spare and id ~= ukeep then unsubtract(id) end
        end
      end
    end
    local value = tostring(w)
    if spare ~= '' then value = value .. ':' .. spare end
    redis.call('HSET', k.fences, field, value)
    redis.call('HSET', k.pending, idx, w .. US .. reason .. US .. now .. US .. spare .. US .. org)
  end
  bump(k.fences)
  return n
end
