-- stats.lua: trim the four 15-minute event windows and read every count of
-- pool.stats, as one snapshot (MemoryPool.stats). One script rather than a
-- MULTI: the same on one Redis and on a Redis Cluster, whose client would
-- queue a MULTI's commands one worker thread at a time.
--
-- KEYS[1]  st:created    zset event -> time
-- KEYS[2]  st:matched    zset "<rid>|<wait seconds>" -> time
-- KEYS[3]  st:expired    zset event -> time
-- KEYS[4]  st:cancelled  zset event -> time
-- KEYS[5]  waiting       zset rid -> created_at
-- KEYS[6]  claimed       set of claimed rids
-- KEYS[7]  online        set of therapists with a connection
-- KEYS[8]  available     set of therapists who said they are available
-- KEYS[9]  holds         hash therapist -> its claim or session
-- ARGV[1]  the window's start, exclusive ("(<time>"): older events are dropped
--
-- Returns {created, matched, expired, cancelled, matched members, waiting,
-- claimed, online, online and available, busy, {oldest rid, its created_at}
-- or {}}.

local out = {}
for i = 1, 4 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[1])
  out[i] = redis.call('ZCARD', KEYS[i])
end
out[5] = redis.call('ZRANGE', KEYS[2], 0, -1)
out[6] = redis.call('ZCARD', KEYS[5])
out[7] = redis.call('SCARD', KEYS[6])
out[8] = redis.call('SCARD', KEYS[7])
out[9] = redis.call('SINTERCARD', 2, KEYS[8], KEYS[7])
out[10] = redis.call('HLEN', KEYS[9])
out[11] = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
return out
