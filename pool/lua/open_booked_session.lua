-- open_booked_session.lua: open the call of a booking as a ready session the
-- therapist holds, or answer the one already open under that id
-- (rules.open_booked, MemoryPool.open_booked_session).
-- uses _lib.lua
--
-- KEYS[1]  sess:<sid>              hash, the session
-- KEYS[2]  holds                   hash therapist -> hold
-- KEYS[3]  opensess:<client>       string, the client's open session
-- KEYS[4]  opensess:<therapist>    string, the therapist's open session
-- KEYS[5]  active:<client>         string, the client's waiting or claimed request
-- ARGV[1]  session id
-- ARGV[2]  booking id
-- ARGV[3]  client id
-- ARGV[4]  therapist id
-- ARGV[5]  now
--
-- Returns {'session_id_used'}, {'therapist_busy'}, {'client_busy'},
-- {'client_waiting'}, {'existing', <flat hash>} (this booking's session, any
-- state, unchanged) or {'ok'} (opened).

local sid, booking, client, tid, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local sess, flat = load(KEYS[1])
if sess then
  if sess.booking_id ~= booking or sess.client_id ~= client or sess.therapist_id ~= tid then
    return {'session_id_used'}
  end
  return {'existing', flat}
end
if redis.call('HEXISTS', KEYS[2], tid) == 1 then
  return {'therapist_busy'}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {'client_busy'}
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  return {'client_waiting'}
end

redis.call('HSET', KEYS[1], 'id', sid, 'request_id', booking, 'booking_id', booking,
  'client_id', client, 'therapist_id', tid, 'state', 'ready', 'created_at', now)
redis.call('HSET', KEYS[2], tid, 'session:' .. sid)
redis.call('SET', KEYS[3], sid)
redis.call('SET', KEYS[4], sid)
return {'ok'}
