-- claim.lua: a therapist claims a waiting request (rules.claim).
-- uses _lib.lua
--
-- KEYS[1]  req:<rid>   hash, the request
-- KEYS[2]  holds       hash therapist -> "claim:<rid>" | "session:<sid>"
-- KEYS[3]  waiting     zset rid -> created_at
-- KEYS[4]  deadlines   zset rid -> expires_at
-- KEYS[5]  claimed     set of claimed rids
-- KEYS[6]  lastclaim   zset therapist -> when it last claimed (offer ranking)
-- ARGV[1]  rid
-- ARGV[2]  therapist id
-- ARGV[3]  what rules.may_take weighs of the therapist, JSON:
--          [regions, languages, topics, works_with_minors] (checked here, in
--          the same step: no read of the request's fields before it)
-- ARGV[4]  now
-- ARGV[5]  expires_at (now + claim confirm timeout)
--
-- Checks in the order of rules.claim and returns the first that fails:
-- {'not_found'} / {'expired'}, {'taken_own'} / {'busy'}, {'not_eligible'}, {'head_start'},
-- {'not_offered'}, {'taken'};
-- else claims and returns {'ok', <flat hash before the claim>}. 'taken' (the
-- request is no longer waiting) comes with the request's flat hash too.

local rid, tid, now = ARGV[1], ARGV[2], ARGV[4]
local req, flat = load(KEYS[1])
if not req or req.state == 'cancelled' or req.state == 'expired' then
  return {'not_found'}
end
-- Past its deadline a waiting request counts as expired (rules.past_deadline).
if req.state == 'waiting' and req.expires_at and tonumber(req.expires_at) <= tonumber(now) then
  return {'expired'}
end
local hold = redis.call('HGET', KEYS[2], tid)
if hold then
  if hold == 'claim:' .. rid then
    return {'taken_own'}
  end
  return {'busy'}
end
if not may_take(req, cjson.decode(ARGV[3])) or contains(cjson.decode(req.declined or '[]'), tid) then
  return {'not_eligible'}
end
-- rules.head_start_holder: a referred client's request is its therapist's alone
-- until head_start_until, while it has never been claimed (no reason yet).
if req.referred_to and req.referred_to ~= tid and req.head_start_until and not req.reason
    and tonumber(now) < tonumber(req.head_start_until) then
  return {'head_start'}
end
-- rules.offered_to: offered to a few at a time, the others may not claim it yet.
if req.offered and not contains(cjson.decode(req.offered), tid) then
  return {'not_offered'}
end
if req.state ~= 'waiting' then
  return {'taken', flat}
end

redis.call('HSET', KEYS[1], 'state', 'claimed', 'claimed_by', tid, 'claimed_at', now,
  'expires_at', ARGV[5], 'updated_at', now)
redis.call('HDEL', KEYS[1], 'reason')
redis.call('ZREM', KEYS[3], rid)
redis.call('ZADD', KEYS[4], ARGV[5], rid)
redis.call('SADD', KEYS[5], rid)
redis.call('HSET', KEYS[2], tid, 'claim:' .. rid)
redis.call('ZADD', KEYS[6], now, tid)
return {'ok', flat}
