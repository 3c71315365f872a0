-- due_widenings.lua: the waiting requests offered to a few whose widened_at
-- is at most ARGV[2], oldest widened_at first (ties by request id), at most
-- ARGV[3] (MemoryPool.due_widenings; DISPATCH_OFFER_FANOUT). A read of the
-- due-widening index, not of every waiting request.
--
-- KEYS[1]  widening  zset rid -> widened_at (the due-widening index)
-- ARGV[1]  key base "<prefix>:{pool}:" (req:<rid>)
-- ARGV[2]  the latest widened_at that is due
-- ARGV[3]  limit
--
-- A claimed request keeps its entry and is skipped: back to waiting (a
-- decline, a release, its therapist lost) it keeps its widened_at and is due
-- again. An entry whose request is gone, finished or open to everyone is
-- dropped here (the steps that end a request drop it already; this heals
-- whatever they could not, such as a record that expired).
--
-- Returns a list of flat request hashes.

local out = {}
local limit = tonumber(ARGV[3])
for _, rid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])) do
  if #out >= limit then
    break
  end
  local key = ARGV[1] .. 'req:' .. rid
  local state, widened_at = unpack(redis.call('HMGET', key, 'state', 'widened_at'))
  if state == 'waiting' and widened_at then
    out[#out + 1] = redis.call('HGETALL', key)
  elseif state ~= 'claimed' or not widened_at then
    redis.call('ZREM', KEYS[1], rid)
  end
end
return out
