-- fire_due.lua: apply every deadline and reconnect grace that is due, at most
-- ARGV[3] changes (MemoryPool.fire_due). One script, so each fires exactly
-- once however many servers call it at the same time.
-- uses _lib.lua
--
-- KEYS[1]  deadlines    zset rid -> expires_at
-- KEYS[2]  waiting      zset rid -> created_at
-- KEYS[3]  claimed      set of claimed rids
-- KEYS[4]  holds        hash therapist -> hold
-- KEYS[5]  graces       zset user -> when the grace ends
-- KEYS[6]  graceseq     hash user -> arming order
-- KEYS[7]  st:expired   zset rid -> time (stats)
-- KEYS[8]  widening     zset rid -> widened_at (the due-widening index)
-- ARGV[1]  key base "<prefix>:{pool}:" (req:<rid>, active:<client>, conns:<user>,
--          opensess:<user>, sess:<sid>, held:<sid>:<role>)
-- ARGV[2]  now
-- ARGV[3]  limit
-- ARGV[4]  request max wait, seconds
-- ARGV[5]  seconds a finished request or an ended session is kept
--
-- Returns a list of {kind, user, <flat hash before>}: kind 'expired' (the
-- request's deadline passed: rules.on_deadline), 'lost' (its claiming
-- therapist `user` stayed away past the grace: rules.on_therapist_lost) or
-- 'peer_lost' (the hash is a session that participant `user` stayed away from
-- past the grace: ended as end_session.lua ends it, reason peer_lost).

local K = {deadlines = KEYS[1], waiting = KEYS[2], claimed = KEYS[3], holds = KEYS[4],
  graces = KEYS[5], grace_seq = KEYS[6], widening = KEYS[8]}
local base, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}

-- Deadlines, oldest first (ties by request id).
local due = redis.call('ZRANGEBYSCORE', K.deadlines, '-inf', now, 'LIMIT', 0, limit)
for _, rid in ipairs(due) do
  local key = base .. 'req:' .. rid
  local req, flat = load(key)
  local reason = nil
  if req and req.state == 'waiting' then
    reason = 'no_therapist'
  elseif req and req.state == 'claimed' then
    reason = 'client_no_response'
  end
  if reason then
    finish(K, key, rid, req, 'expired', reason, now, ARGV[5],
      base .. 'active:' .. req.client_id, KEYS[7])
    out[#out + 1] = {'expired', '', flat}
  else
    redis.call('ZREM', K.deadlines, rid) -- no live request behind it
  end
end

-- Graces, in the order they end; those ending together in arming order.
local graces = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'WITHSCORES')
local order = {}
for i = 1, #graces, 2 do
  local user = graces[i]
  order[#order + 1] = {user = user, at = tonumber(graces[i + 1]),
    seq = tonumber(redis.call('HGET', KEYS[6], user) or '0')}
end
table.sort(order, function(a, b)
  if a.at ~= b.at then
    return a.at < b.at
  end
  return a.seq < b.seq
end)
for _, g in ipairs(order) do
  if #out >= limit then
    break
  end
  local user = g.user
  -- An ending earlier in this loop may have cancelled this grace already.
  local armed = redis.call('ZREM', KEYS[5], user) == 1
  redis.call('HDEL', KEYS[6], user)
  local hold = redis.call('HGET', K.holds, user)
  local away = armed and redis.call('EXISTS', base .. 'conns:' .. user) == 0
  local sid = redis.call('GET', base .. 'opensess:' .. user)
  if away and hold and string.sub(hold, 1, 6) == 'claim:' then
    local rid = string.sub(hold, 7)
    local key = base .. 'req:' .. rid
    local req, flat = load(key)
    if req and req.state == 'claimed' and req.claimed_by == user then
      back_to_waiting(K, key, rid, req, 'therapist_lost', now, ARGV[4])
      out[#out + 1] = {'lost', user, flat}
    end
  elseif away and sid then
    local key = base .. 'sess:' .. sid
    local sess, flat = load(key)
    if sess and sess.state ~= 'ended' then
      local held = {base .. 'held:' .. sid .. ':client', base .. 'held:' .. sid .. ':therapist'}
      end_session(K, base, key, held, sid, sess, 'peer_lost', now, ARGV[5])
      out[#out + 1] = {'peer_lost', user, flat}
    end
  end
end
return out
