-- Stores sessions' places in rooms' logs (`c:<room>` of their metas), only while a session's
-- keys live: a place must not bring back the meta of a session that expired. A relay writes
-- the places its members reached every two seconds, in one call.
-- KEYS: metas. ARGV: per key, the field and the position. Returns how many were stored.
local stored = 0
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, ARGV[2 * i - 1], ARGV[2 * i])
    stored = stored + 1
  end
end
return stored
