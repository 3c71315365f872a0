-- release.lua: the claiming therapist lets go; the request waits again (rules.release).
-- uses _lib.lua
--
-- KEYS[1]  req:<rid>   hash, the request
-- KEYS[2]  waiting     zset rid -> created_at
-- KEYS[3]  deadlines   zset rid -> expires_at
-- KEYS[4]  claimed     set of claimed rids
-- KEYS[5]  holds       hash therapist -> hold
-- ARGV[1]  rid
-- ARGV[2]  therapist id
-- ARGV[3]  now
-- ARGV[4]  request max wait, seconds
--
-- Returns {'not_found'}, {'forbidden'} (not this therapist's claim), or
-- {'ok', <flat hash before>}.

local K = {waiting = KEYS[2], deadlines = KEYS[3], claimed = KEYS[4], holds = KEYS[5]}
local rid = ARGV[1]
local req, flat = load(KEYS[1])
if not req then
  return {'not_found'}
end
if req.state ~= 'claimed' or req.claimed_by ~= ARGV[2] then
  return {'forbidden'}
end
back_to_waiting(K, KEYS[1], rid, req, 'released', ARGV[3], ARGV[4])
return {'ok', flat}
