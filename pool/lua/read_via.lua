-- read_via.lua: follow a pointer to a hash in one step: a client's active
-- request, a user's open session. Read-only.
--
-- KEYS[1]  the pointer: active:<client> or opensess:<user> (string id)
-- ARGV[1]  the hash's key prefix: "<prefix>:{pool}:req:" or "<prefix>:{pool}:sess:"
--
-- Returns the flat hash, or an empty list when the pointer or hash is missing.

local id = redis.call('GET', KEYS[1])
if not id then
  return {}
end
return redis.call('HGETALL', ARGV[1] .. id)
