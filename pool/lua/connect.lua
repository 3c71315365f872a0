-- connect.lua: record a live connection and cancel the user's reconnect grace
-- (MemoryPool.connect).
--
-- KEYS[1]  conns:<user>       set "<server>|<conn>"
-- KEYS[2]  srvconns:<server>  set "<user>|<conn>"
-- KEYS[3]  online             set of therapists with a connection
-- KEYS[4]  graces             zset user -> when the grace ends
-- KEYS[5]  graceseq           hash user -> arming order
-- ARGV[1]  user id
-- ARGV[2]  "<server>|<conn>"
-- ARGV[3]  "<user>|<conn>"
-- ARGV[4]  '1' when the user connects as a therapist (the latest role counts)

local user = ARGV[1]
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[3], user)
else
  redis.call('SREM', KEYS[3], user)
end
redis.call('ZREM', KEYS[4], user)
redis.call('HDEL', KEYS[5], user)
return 1
