-- put_profile.lua: store a therapist's profile and the digest of its JSON
-- (RedisPool.put_profile), in one step so that the two never disagree; an
-- available therapist joins the availability index of each region of the
-- new profile (avail:<region>; a region it left keeps it until
-- offer_candidates.lua finds it unavailable, and the reader checks regions).
-- uses _lib.lua
--
-- KEYS[1]  profile:<therapist>  string, the profile as JSON
-- KEYS[2]  profver              hash therapist -> digest of that JSON
-- KEYS[3]  available            set of available therapists
-- ARGV[1]  therapist id
-- ARGV[2]  the profile as JSON
-- ARGV[3]  its digest
-- ARGV[4]  key base "<prefix>:{pool}:" (avail:<region>)

redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  index_available(ARGV[4], ARGV[1], ARGV[2])
end
return 1
