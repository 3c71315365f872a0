-- put_profile.lua: store a therapist's profile and the digest of its JSON
-- (RedisPool.put_profile), in one step so that the two never disagree.
--
-- KEYS[1]  profile:<therapist>  string, the profile as JSON
-- KEYS[2]  profver              hash therapist -> digest of that JSON
-- ARGV[1]  therapist id
-- ARGV[2]  the profile as JSON
-- ARGV[3]  its digest

redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
