-- positions.lua: the places of some requests in the waiting queue
-- (MemoryPool.positions), read in one step. Read-only.
--
-- KEYS[1]  waiting  zset rid -> created_at
-- ARGV     the request ids
--
-- Returns one entry per id, in order: its 0-based rank, or -1 when it is not
-- waiting. One script, not a pipeline of ZRANKs: one command to send and one
-- reply to parse however many clients a server has waiting.

local out = {}
for i, rid in ipairs(ARGV) do
  out[i] = redis.call('ZRANK', KEYS[1], rid) or -1
end
return out
