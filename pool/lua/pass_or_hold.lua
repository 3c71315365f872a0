-- pass_or_hold.lua: relay a frame to the other participant: say "pass" when
-- it has joined, else hold the frame for its join (MemoryPool.pass_or_hold).
-- One step with join_session.lua, so a frame is never lost between the two.
-- uses _lib.lua
--
-- KEYS[1]  sess:<sid>                hash, the session
-- KEYS[2]  held:<sid>:client         list of msgpack frames held for the client
-- KEYS[3]  held:<sid>:therapist      list of msgpack frames held for the therapist
-- ARGV[1]  sender's user id
-- ARGV[2]  the frame, msgpack
-- ARGV[3]  how many frames may be held for one peer at most
--
-- Returns {'no_session'} (missing or ended), {'not_participant'},
-- {'too_many_held'} (nothing held), {'pass'} or {'held'}.

local sess = load(KEYS[1])
if not sess or sess.state == 'ended' then
  return {'no_session'}
end
local _, theirs, peer = participant(sess, ARGV[1], {KEYS[2], KEYS[3]})
if not theirs then
  return {'not_participant'}
end
if contains(cjson.decode(sess.joined or '[]'), peer) then
  return {'pass'}
end
if redis.call('LLEN', theirs) >= tonumber(ARGV[3]) then
  return {'too_many_held'}
end
redis.call('RPUSH', theirs, ARGV[2])
return {'held'}
