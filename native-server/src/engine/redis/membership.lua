-- Joins or leaves a room. KEYS: meta, the room's members set in the source's shard.
-- ARGV: epoch ('' for the server's own decision: any epoch), room (hex), member (hex),
-- '1' to join or '0' to leave, the position in the room's log a new member starts after.
-- Returns {0, was a member (1/0)}, {5, 0, holder's instance} when fenced, {6} when the
-- source's state is gone (nobody with that source is connected or within its grace period).
local m = meta(KEYS[1])
if not m.exists then
  return {6}
end
if ARGV[1] ~= '' and m.epoch ~= tonumber(ARGV[1]) then
  return {5, 0, m.instance}
end
local room, member = ARGV[2], ARGV[3]
local rooms = redis.call('HGET', KEYS[1], 'rooms') or ','
local entry = ',' .. room .. ','
local at = string.find(rooms, entry, 1, true)
if ARGV[4] == '1' then
  if not at then
    redis.call('HSET', KEYS[1], 'rooms', rooms .. room .. ',', 'c:' .. room, ARGV[5])
  end
  redis.call('SADD', KEYS[2], member)
else
  if at then
    local left = string.sub(rooms, 1, at) .. string.sub(rooms, at + #entry)
    if left == ',' then
      redis.call('HDEL', KEYS[1], 'rooms')
    else
      redis.call('HSET', KEYS[1], 'rooms', left)
    end
    redis.call('HDEL', KEYS[1], 'c:' .. room)
  end
  redis.call('SREM', KEYS[2], member)
end
return {0, at and 1 or 0}
