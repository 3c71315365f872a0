-- end_session.lua: end an open session exactly once (Session.ended,
-- MemoryPool.end_session).
-- uses _lib.lua
--
-- KEYS[1]  sess:<sid>                hash, the session
-- KEYS[2]  held:<sid>:client         list of frames held for the client
-- KEYS[3]  held:<sid>:therapist      list of frames held for the therapist
-- KEYS[4]  holds                     hash therapist -> hold
-- KEYS[5]  graces                    zset user -> when the grace ends
-- KEYS[6]  graceseq                  hash user -> arming order
-- ARGV[1]  key base "<prefix>:{pool}:" (for opensess:<user>)
-- ARGV[2]  session id
-- ARGV[3]  reason
-- ARGV[4]  now
-- ARGV[5]  seconds an ended session is kept
-- ARGV[6]  the participant ending it, or '' (then ARGV[3] is the reason):
--          the reason is then rules.ended_by's, and anyone else is refused
--
-- Returns {'ok', <flat hash before>} to the caller that ended it, {} when the
-- session is already ended (or, with no ARGV[6], missing), {'not_participant'}
-- when ARGV[6] is not one of its two users (or it is missing).

local K = {holds = KEYS[4], graces = KEYS[5], grace_seq = KEYS[6]}
local sess, flat = load(KEYS[1])
local by, reason = ARGV[6], ARGV[3]
if by ~= '' then
  if not sess or (by ~= sess.client_id and by ~= sess.therapist_id) then
    return {'not_participant'}
  end
  reason = by == sess.client_id and 'ended_by_client' or 'ended_by_therapist'
end
if not sess or sess.state == 'ended' then
  return {}
end
end_session(K, ARGV[1], KEYS[1], {KEYS[2], KEYS[3]}, ARGV[2], sess, reason, ARGV[4], ARGV[5])
return {'ok', flat}
