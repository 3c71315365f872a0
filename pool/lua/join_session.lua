-- join_session.lua: a participant's console opened the call; the session goes
-- live when both have joined, and the frames held for the joiner are handed
-- over once (Session.joined_by, MemoryPool.join_session).
-- uses _lib.lua
--
-- KEYS[1]  sess:<sid>                hash, the session
-- KEYS[2]  held:<sid>:client         list of msgpack frames held for the client
-- KEYS[3]  held:<sid>:therapist      list of msgpack frames held for the therapist
-- ARGV[1]  user id
-- ARGV[2]  now
--
-- Returns {'no_session'} (missing or ended), {'not_participant'}, or
-- {'ok', <flat hash before>, {frame, ...}} with the held frames, oldest first.

local user, now = ARGV[1], ARGV[2]
local sess, flat = load(KEYS[1])
if not sess or sess.state == 'ended' then
  return {'no_session'}
end
local mine = participant(sess, user, {KEYS[2], KEYS[3]})
if not mine then
  return {'not_participant'}
end

local joined = cjson.decode(sess.joined or '[]')
if not contains(joined, user) then
  joined[#joined + 1] = user
  table.sort(joined)
  redis.call('HSET', KEYS[1], 'joined', cjson.encode(joined))
end
if sess.state == 'ready' and contains(joined, sess.client_id)
    and contains(joined, sess.therapist_id) then
  redis.call('HSET', KEYS[1], 'state', 'live', 'started_at', now)
end
local frames = redis.call('LRANGE', mine, 0, -1)
redis.call('DEL', mine)
return {'ok', flat, frames}
