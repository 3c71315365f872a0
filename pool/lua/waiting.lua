-- waiting.lua: every waiting request, oldest first, read in one step so the
-- list is a consistent snapshot (MemoryPool.waiting). Read-only.
--
-- KEYS[1]  waiting  zset rid -> created_at
-- ARGV[1]  key base "<prefix>:{pool}:" (req:<rid>)
--
-- Returns a list of flat request hashes.

local out = {}
for _, rid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. 'req:' .. rid)
end
return out
