-- cancel.lua: the owning client cancels while waiting or claimed (rules.cancel).
-- uses _lib.lua
--
-- KEYS[1]  req:<rid>        hash, the request
-- KEYS[2]  active:<client>  string, the client's waiting or claimed request
-- KEYS[3]  waiting          zset rid -> created_at
-- KEYS[4]  deadlines        zset rid -> expires_at
-- KEYS[5]  claimed          set of claimed rids
-- KEYS[6]  holds            hash therapist -> hold
-- KEYS[7]  st:cancelled     zset rid -> time (stats)
-- KEYS[8]  widening         zset rid -> widened_at (the due-widening index)
-- ARGV[1]  rid
-- ARGV[2]  client id
-- ARGV[3]  now
-- ARGV[4]  seconds a finished request is kept
--
-- Returns {'not_found'}, {'not_cancellable'}, or {'ok', <flat hash before>}.

local K = {waiting = KEYS[3], deadlines = KEYS[4], claimed = KEYS[5], holds = KEYS[6],
  widening = KEYS[8]}
local rid = ARGV[1]
local req, flat = load(KEYS[1])
if not req or req.client_id ~= ARGV[2] then
  return {'not_found'}
end
if req.state ~= 'waiting' and req.state ~= 'claimed' then
  return {'not_cancellable'}
end
finish(K, KEYS[1], rid, req, 'cancelled', 'cancelled', ARGV[3], ARGV[4], KEYS[2], KEYS[7])
return {'ok', flat}
