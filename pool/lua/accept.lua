-- accept.lua: the client accepts the offer: the request is matched, session
-- <sid> opens (state ready) and the therapist holds it instead of the claim
-- (rules.accept, MemoryPool.accept).
-- uses _lib.lua
--
-- KEYS[1]  req:<rid>          hash, the request
-- KEYS[2]  active:<client>    string, the client's waiting or claimed request
-- KEYS[3]  deadlines          zset rid -> expires_at
-- KEYS[4]  claimed            set of claimed rids
-- KEYS[5]  holds              hash therapist -> hold
-- KEYS[6]  sess:<sid>         hash, the new session
-- KEYS[7]  opensess:<client>  string, the client's open session
-- KEYS[8]  st:matched         zset "<rid>|<wait s>" -> time (stats)
-- KEYS[9]  widening           zset rid -> widened_at (the due-widening index)
-- ARGV[1]  key base "<prefix>:{pool}:" (for opensess:<therapist>)
-- ARGV[2]  rid
-- ARGV[3]  client id
-- ARGV[4]  session id
-- ARGV[5]  now
-- ARGV[6]  seconds a finished request is kept
--
-- Returns {'not_found'}, {'no_offer'}, or {'ok', <flat hash before>, <the
-- therapist's profile JSON, or false>} (the profile for the call log: read in
-- the same step, not in a round trip of its own).

local base, rid, client, sid, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local req, flat = load(KEYS[1])
if not req or req.client_id ~= client then
  return {'not_found'}
end
-- An offer past its confirm deadline counts as expired (rules.past_deadline).
if req.state ~= 'claimed' or (req.expires_at and tonumber(req.expires_at) <= tonumber(now)) then
  return {'no_offer'}
end
local tid = req.claimed_by

redis.call('HSET', KEYS[1], 'state', 'matched', 'session_id', sid, 'reason', 'matched',
  'updated_at', now)
-- The client's notes were for the therapist deciding to claim (rules.accept).
redis.call('HDEL', KEYS[1], 'expires_at', 'notes')
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZREM', KEYS[3], rid)
redis.call('SREM', KEYS[4], rid)
redis.call('ZREM', KEYS[9], rid)
if redis.call('GET', KEYS[2]) == rid then
  redis.call('DEL', KEYS[2])
end
redis.call('HSET', KEYS[5], tid, 'session:' .. sid)
redis.call('HSET', KEYS[6], 'id', sid, 'request_id', rid, 'client_id', client,
  'therapist_id', tid, 'state', 'ready', 'created_at', now)
redis.call('SET', KEYS[7], sid)
redis.call('SET', base .. 'opensess:' .. tid, sid)
local wait = num(tonumber(req.claimed_at or now) - tonumber(req.created_at))
redis.call('ZADD', KEYS[8], now, rid .. '|' .. wait)
return {'ok', flat, redis.call('GET', base .. 'profile:' .. tid)}
