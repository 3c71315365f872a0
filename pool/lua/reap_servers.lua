-- reap_servers.lua: every connection of a server silent since before the
-- cutoff counts as disconnected, arming graces as disconnect.lua does
-- (MemoryPool.reap_servers).
-- uses _lib.lua
--
-- KEYS[1]  servers    zset server -> last heartbeat
-- KEYS[2]  srvseq     hash server -> order of first heartbeat
-- KEYS[3]  available  set of available therapists
-- KEYS[4]  online     set of therapists with a connection
-- KEYS[5]  holds      hash therapist -> hold
-- KEYS[6]  graces     zset user -> when the grace ends
-- KEYS[7]  graceseq   hash user -> arming order
-- KEYS[8]  seq        counter behind graceseq
-- ARGV[1]  key base "<prefix>:{pool}:" (srvconns:<server>, conns:<user>, opensess:<user>)
-- ARGV[2]  cutoff: servers whose last heartbeat is below it are dead
-- ARGV[3]  when a grace armed now ends (now + reconnect grace)
--
-- Returns the dead servers' ids, in the order they first beat.

local K = {available = KEYS[3], online = KEYS[4], holds = KEYS[5], graces = KEYS[6],
  grace_seq = KEYS[7], seq = KEYS[8]}
local base = ARGV[1]
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
local seqs = {}
for _, server in ipairs(dead) do
  seqs[server] = tonumber(redis.call('HGET', KEYS[2], server) or '0')
end
table.sort(dead, function(a, b) return seqs[a] < seqs[b] end)

for _, server in ipairs(dead) do
  redis.call('ZREM', KEYS[1], server)
  redis.call('HDEL', KEYS[2], server)
  local skey = base .. 'srvconns:' .. server
  local gone = {}
  for _, m in ipairs(redis.call('SMEMBERS', skey)) do
    local sep = string.find(m, '|', 1, true)
    gone[#gone + 1] = {user = string.sub(m, 1, sep - 1), conn = string.sub(m, sep + 1)}
  end
  redis.call('DEL', skey)
  -- By (user, conn), so that graces armed together get a repeatable order.
  table.sort(gone, function(a, b)
    if a.user ~= b.user then
      return a.user < b.user
    end
    return a.conn < b.conn
  end)
  for _, g in ipairs(gone) do
    drop_conn(K, base .. 'conns:' .. g.user, base .. 'opensess:' .. g.user, g.user,
      server .. '|' .. g.conn, ARGV[3])
  end
end
return dead
