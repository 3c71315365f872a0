-- disconnect.lua: forget a connection; on the user's last one, arm the
-- reconnect grace if it holds a claim or an open session (MemoryPool.disconnect).
-- uses _lib.lua
--
-- KEYS[1]  conns:<user>       set "<server>|<conn>"
-- KEYS[2]  srvconns:<server>  set "<user>|<conn>"
-- KEYS[3]  opensess:<user>    string, the user's open session
-- KEYS[4]  available          set of available therapists
-- KEYS[5]  online             set of therapists with a connection
-- KEYS[6]  holds              hash therapist -> hold
-- KEYS[7]  graces             zset user -> when the grace ends
-- KEYS[8]  graceseq           hash user -> arming order
-- KEYS[9]  seq                counter behind graceseq
-- ARGV[1]  user id
-- ARGV[2]  "<server>|<conn>"
-- ARGV[3]  "<user>|<conn>"
-- ARGV[4]  when a grace armed now ends (now + reconnect grace)

local K = {available = KEYS[4], online = KEYS[5], holds = KEYS[6], graces = KEYS[7],
  grace_seq = KEYS[8], seq = KEYS[9]}
redis.call('SREM', KEYS[2], ARGV[3])
drop_conn(K, KEYS[1], KEYS[3], ARGV[1], ARGV[2], ARGV[4])
return 1
