-- _lib.lua: helpers shared by the pool's scripts (not a script itself).
-- pool/_redis_scripts.py prepends this file to every script whose header says
-- "uses _lib.lua", so each script runs as one unit with these locals above it.
--
-- K is a table of the pool's index keys the script received in KEYS:
--   K.waiting, K.deadlines, K.claimed, K.holds (and, to end a request,
--   K.widening; for presence,
--   K.available, K.online, K.graces, K.grace_seq, K.seq; for ending a
--   session, K.holds, K.graces, K.grace_seq).
-- Per-id keys follow pool/_redis_keys.py; times are strings that round-trip a
-- double (repr(float) from Python, '%.17g' here).

local function as_map(flat)
  local m = {}
  for i = 1, #flat, 2 do
    m[flat[i]] = flat[i + 1]
  end
  return m
end

-- A number as a string that parses back to the same double.
local function num(x)
  return string.format('%.17g', x)
end

-- Put an available therapist in the availability index of each region its
-- profile's JSON names (avail:<region>, read by offer_candidates.lua); a
-- profile that does not parse indexes nothing.
local function index_available(base, tid, profile_json)
  local ok, p = pcall(cjson.decode, profile_json)
  if ok and type(p) == 'table' and type(p.regions) == 'table' then
    for _, region in ipairs(p.regions) do
      redis.call('SADD', base .. 'avail:' .. region, tid)
    end
  end
end

-- The hash at key as (map, flat), or (nil, {}) when it does not exist.
local function load(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then
    return nil, flat
  end
  return as_map(flat), flat
end

local function contains(list, value)
  for _, v in ipairs(list) do
    if v == value then
      return true
    end
  end
  return false
end

-- rules.may_take: the request's region and language are among the
-- therapist's, its topics are none or share one with the therapist's, and a
-- minor (age under 18) needs a therapist who works with minors. ``q`` is
-- {regions, languages, topics, works_with_minors} (claim.lua's ARGV[3]).
local function may_take(req, q)
  local regions, languages, topics, minors = q[1], q[2], q[3], q[4]
  if not contains(regions, req.region) or not contains(languages, req.language) then
    return false
  end
  local asked = cjson.decode(req.topics or '[]')
  if #asked > 0 then
    local shared = false
    for _, topic in ipairs(asked) do
      if contains(topics, topic) then
        shared = true
        break
      end
    end
    if not shared then
      return false
    end
  end
  local age = tonumber(req.age or '')
  return not (age and age < 18 and minors ~= true)
end

-- The claiming therapist lets go of its hold when it is this very claim.
local function drop_claim_hold(K, req, rid)
  local tid = req.claimed_by
  if tid and redis.call('HGET', K.holds, tid) == 'claim:' .. rid then
    redis.call('HDEL', K.holds, tid)
  end
end

-- rules.back_to_waiting: claimed -> waiting. The deadline is created_at + max
-- wait again; a decline adds the claimer to the request's declined set.
local function back_to_waiting(K, key, rid, req, reason, now, max_wait)
  local expires = num(tonumber(req.created_at) + tonumber(max_wait))
  if reason == 'declined' and req.claimed_by then
    local declined = cjson.decode(req.declined or '[]')
    if not contains(declined, req.claimed_by) then
      declined[#declined + 1] = req.claimed_by
    end
    redis.call('HSET', key, 'declined', cjson.encode(declined))
  end
  redis.call('HDEL', key, 'claimed_by', 'claimed_at')
  redis.call('HSET', key, 'state', 'waiting', 'expires_at', expires, 'reason', reason,
    'updated_at', now)
  redis.call('ZADD', K.waiting, req.created_at, rid)
  redis.call('ZADD', K.deadlines, expires, rid)
  redis.call('SREM', K.claimed, rid)
  drop_claim_hold(K, req, rid)
end

-- waiting|claimed -> a final state (rules.cancel, rules.on_deadline): leaves
-- every index, frees the client and the claimer, counts the event, and lets
-- the record expire after ttl seconds. The client's notes go at once: they
-- were for the therapist deciding to claim (rules.cancel, rules.on_deadline).
local function finish(K, key, rid, req, state, reason, now, ttl, active_key, stat_key)
  redis.call('HSET', key, 'state', state, 'reason', reason, 'updated_at', now)
  redis.call('HDEL', key, 'expires_at', 'notes')
  redis.call('ZREM', K.waiting, rid)
  redis.call('ZREM', K.deadlines, rid)
  redis.call('SREM', K.claimed, rid)
  redis.call('ZREM', K.widening, rid)
  if redis.call('GET', active_key) == rid then
    redis.call('DEL', active_key)
  end
  drop_claim_hold(K, req, rid)
  redis.call('EXPIRE', key, ttl)
  redis.call('ZADD', stat_key, now, rid)
end

-- A connection ends (MemoryPool._drop_conn). On the user's last connection
-- anywhere: not online, not available, and if it holds a claim or an open
-- session, the reconnect grace starts (graces due together fire in the order
-- they were armed, hence the sequence number).
local function drop_conn(K, conns_key, open_session_key, user, member, due)
  if redis.call('EXISTS', conns_key) == 0 then
    return
  end
  redis.call('SREM', conns_key, member)
  if redis.call('EXISTS', conns_key) == 1 then
    return
  end
  redis.call('SREM', K.available, user)
  redis.call('SREM', K.online, user)
  if redis.call('HEXISTS', K.holds, user) == 1 or redis.call('EXISTS', open_session_key) == 1 then
    redis.call('ZADD', K.graces, due, user)
    if redis.call('HEXISTS', K.grace_seq, user) == 0 then
      redis.call('HSET', K.grace_seq, user, redis.call('INCR', K.seq))
    end
  end
end

-- Session.role_of / peer_of: the held-frames key of `user` and of its peer
-- ({held_client, held_therapist} in `held`), the peer's id; nil when `user`
-- is not a participant of `sess`.
local function participant(sess, user, held)
  if user == sess.client_id then
    return held[1], held[2], sess.therapist_id
  elseif user == sess.therapist_id then
    return held[2], held[1], sess.client_id
  end
  return nil
end

-- ready|live -> ended (Session.ended, MemoryPool._end): frees the therapist's
-- hold and both open-session pointers, drops the held frames, cancels each
-- user's reconnect grace when it holds nothing else, and lets the session's
-- record expire after ttl seconds. K needs holds, graces, grace_seq; `held`
-- is {held_client, held_therapist}; opensess:<user> is built from base.
local function end_session(K, base, key, held, sid, sess, reason, now, ttl)
  redis.call('HSET', key, 'state', 'ended', 'ended_at', now, 'end_reason', reason)
  redis.call('EXPIRE', key, ttl)
  redis.call('DEL', held[1], held[2])
  local tid = sess.therapist_id
  if redis.call('HGET', K.holds, tid) == 'session:' .. sid then
    redis.call('HDEL', K.holds, tid)
  end
  for _, user in ipairs({sess.client_id, tid}) do
    local open_key = base .. 'opensess:' .. user
    if redis.call('GET', open_key) == sid then
      redis.call('DEL', open_key)
    end
    if redis.call('HEXISTS', K.holds, user) == 0 and redis.call('EXISTS', open_key) == 0 then
      redis.call('ZREM', K.graces, user)
      redis.call('HDEL', K.grace_seq, user)
    end
  end
end
