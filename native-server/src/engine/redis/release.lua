-- A connection ended. KEYS: meta, box, from, members. ARGV: epoch, grace ms, member, key
-- prefix of the shard.
-- Its session is kept for the grace period; a source without one is forgotten.
-- Returns 1 when released, 0 for a stale claim.
local m = meta(KEYS[1])
if not m.exists or m.epoch ~= tonumber(ARGV[1]) then
  return 0
end
if m.session then
  redis.call('HSET', KEYS[1], 'owner', '', 'lease', 0)
  for i = 1, 3 do
    redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2]))
  end
else
  leave_rooms(KEYS[1], ARGV[4], ARGV[3])
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  redis.call('SREM', KEYS[4], ARGV[3])
end
return 1
