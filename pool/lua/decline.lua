-- decline.lua: the client declines the claiming therapist, who never sees the
-- request again; the request waits again (rules.decline).
-- uses _lib.lua
--
-- KEYS[1]  req:<rid>   hash, the request
-- KEYS[2]  waiting     zset rid -> created_at
-- KEYS[3]  deadlines   zset rid -> expires_at
-- KEYS[4]  claimed     set of claimed rids
-- KEYS[5]  holds       hash therapist -> hold
-- ARGV[1]  rid
-- ARGV[2]  client id
-- ARGV[3]  now
-- ARGV[4]  request max wait, seconds
--
-- Returns {'not_found'} (no such request of this client), {'no_offer'} (not
-- claimed), or {'ok', <flat hash before>}.

local K = {waiting = KEYS[2], deadlines = KEYS[3], claimed = KEYS[4], holds = KEYS[5]}
local rid = ARGV[1]
local req, flat = load(KEYS[1])
if not req or req.client_id ~= ARGV[2] then
  return {'not_found'}
end
-- An offer past its confirm deadline counts as expired (rules.past_deadline).
if req.state ~= 'claimed' or (req.expires_at and tonumber(req.expires_at) <= tonumber(ARGV[3])) then
  return {'no_offer'}
end
back_to_waiting(K, KEYS[1], rid, req, 'declined', ARGV[3], ARGV[4])
return {'ok', flat}
