-- create.lua: a client's new request enters the pool (MemoryPool.create).
-- uses _lib.lua
--
-- KEYS[1]  req:<rid>             hash, the new request
-- KEYS[2]  active:<client>       string, the client's waiting or claimed request
-- KEYS[3]  waiting               zset rid -> created_at
-- KEYS[4]  deadlines             zset rid -> expires_at
-- KEYS[5]  st:created            zset rid -> time (stats)
-- KEYS[6]  st:matched            zset, trimmed here
-- KEYS[7]  st:expired            zset, trimmed here
-- KEYS[8]  st:cancelled          zset, trimmed here
-- KEYS[9]  opensess:<client>      string, the client's open session (ready or live)
-- KEYS[10] widening             zset rid -> widened_at (the due-widening index)
-- KEYS[11] idem:<client>:<key>   string "<lapses at>|<rid>" (only with an idempotency key)
-- ARGV[1]  key base "<prefix>:{pool}:" (to read the request an idempotency key names)
-- ARGV[2]  rid
-- ARGV[3]  now (= created_at)
-- ARGV[4]  expires_at (created_at + max wait)
-- ARGV[5]  when the idempotency key lapses (now + 24 h; unused without a key)
-- ARGV[6]  idempotency key TTL, whole seconds
-- ARGV[7]  stats entries scored below this are dropped
-- ARGV[8]  widened_at when offered to a few (DISPATCH_OFFER_FANOUT), else ''
-- ARGV[9]  the creation's effects as the bus publishes them (MessagePack), or ''
-- ARGV[10] the five bytes in ARGV[9] that stand for the request's place (a
--          MessagePack uint32 placeholder: redis_store._announcement)
-- ARGV[11] PUBLISH, or SPUBLISH on a cluster (the bus's channel carries {pool})
-- ARGV[12] the bus's channel
-- ARGV[13..] the request's hash: field, value, field, value, ...
--
-- Returns {'ok', <0-based rank in waiting>, <1 if it published ARGV[9], else
-- 0>}; {'in_session'} while the client is in an open session
-- (pool.rules.check_may_ask); {'dup', <flat hash of the first request>} for a
-- live idempotency key of this client; {'request_exists'}; {'id_used'}.

local base, rid, now = ARGV[1], ARGV[2], ARGV[3]
local idem = KEYS[11]

-- In an open session a client may not ask for another therapist: checked in
-- the same atomic step that writes the request (no check-then-act).
if redis.call('EXISTS', KEYS[9]) == 1 then
  return {'in_session'}
end

if idem then
  local hit = redis.call('GET', idem)
  if hit then
    local sep = string.find(hit, '|', 1, true)
    if tonumber(string.sub(hit, 1, sep - 1)) > tonumber(now) then
      local _, flat = load(base .. 'req:' .. string.sub(hit, sep + 1))
      if #flat > 0 then
        return {'dup', flat}
      end
    end
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'request_exists'}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'id_used'}
end

redis.call('HSET', KEYS[1], unpack(ARGV, 13))
redis.call('ZADD', KEYS[3], now, rid)
redis.call('ZADD', KEYS[4], ARGV[4], rid)
redis.call('SET', KEYS[2], rid)
redis.call('ZADD', KEYS[5], now, rid)
if ARGV[8] ~= '' then
  redis.call('ZADD', KEYS[10], ARGV[8], rid)
end
for i = 5, 8 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[7])
end
if idem then
  redis.call('SET', idem, ARGV[5] .. '|' .. rid, 'EX', ARGV[6])
end
local rank = redis.call('ZRANK', KEYS[3], rid)

-- The announcement, published in this same step: no crash between the
-- request and its request.new leaves a request nobody was told of. Its
-- place goes over the placeholder (same length: the encoding stands), only
-- when the placeholder is there exactly once; else the caller publishes.
local announced = 0
local payload, placeholder = ARGV[9], ARGV[10]
if payload ~= '' then
  local at = string.find(payload, placeholder, 1, true)
  if at and not string.find(payload, placeholder, at + 1, true) then
    local p = rank + 1
    local place = string.char(0xce, math.floor(p / 16777216) % 256,
      math.floor(p / 65536) % 256, math.floor(p / 256) % 256, p % 256)
    redis.call(ARGV[11], ARGV[12],
      string.sub(payload, 1, at - 1) .. place .. string.sub(payload, at + 5))
    announced = 1
  end
end
return {'ok', rank, announced}
