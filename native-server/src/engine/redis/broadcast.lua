-- Appends a frame to every source of one shard but the sender, or to every member of a room
-- in the shard. KEYS: the shard's members set (or the room's members in the shard), the
-- shard's broadcast de-duplication hash. ARGV: frame, sender (hex, '' for the server),
-- dedupe ('token|id', '' for none), window (-1: never wait), max backlog, key prefix of the
-- shard ('wsr:{7}:'), the room (hex, '' for everyone). A room's set is an index: a member
-- counts only if its meta's `rooms` lists the room (a session that expired and came back
-- afresh is no member), and entries that do not are dropped from the set.
-- Every key touched is of this shard (one slot): those of the members found in the set.
-- Returns {0, member, position, owner, ...} appended (owner '' when not connected; a member
-- whose box was full and lost the frame comes with position -1), {1, member, owner, ...}
-- duplicate (with the connected members, whose owners may not have heard of it), or
-- {3, member} when a connected member is over the window (nothing appended).
local now = now_ms()
local frame, sender, dedupe, prefix, room = ARGV[1], ARGV[2], ARGV[3], ARGV[6], ARGV[7] or ''
local members = redis.call('SMEMBERS', KEYS[1])
if room ~= '' then
  local kept = {}
  for _, member in ipairs(members) do
    if in_room(prefix .. 'm:' .. member, room) then
      kept[#kept + 1] = member
    else
      redis.call('SREM', KEYS[1], member)
    end
  end
  members = kept
end
if dedupe ~= '' then
  local previous = redis.call('HGET', KEYS[2], sender)
  if previous then
    local pt, pid = string.match(previous, '^(.*)|(%d+)$')
    local t, id = string.match(dedupe, '^(.*)|(%d+)$')
    if pt == t and tonumber(id) <= tonumber(pid) then
      -- Applied before (an answer that was lost): the connected members' owners may not
      -- have heard of it.
      local out = {1}
      for _, member in ipairs(members) do
        local m = meta(prefix .. 'm:' .. member)
        if member ~= sender and live(m, now) then
          out[#out + 1] = member
          out[#out + 1] = m.owner
        end
      end
      return out
    end
  end
end
local window, max = tonumber(ARGV[4]), tonumber(ARGV[5])
local found = {}
for _, member in ipairs(members) do
  if member ~= sender then
    local m = meta(prefix .. 'm:' .. member)
    if not m.exists then
      redis.call('SREM', KEYS[1], member)
    elseif reachable(m, now) then
      if window >= 0 and live(m, now) and m.bytes > window then
        return {3, member}
      end
      found[#found + 1] = {member, m}
    end
  end
end
local out = {0}
for _, entry in ipairs(found) do
  local member, m = entry[1], entry[2]
  local meta_key = prefix .. 'm:' .. member
  local owner = ''
  if live(m, now) then
    owner = m.owner
  end
  local position = -1
  if m.bytes + #frame > max then
    -- The session loses continuity, and its client is told when it comes back.
    redis.call('HINCRBY', meta_key, 'lost', 1)
    redis.call('HSET', meta_key, 'broken', 1)
  else
    position = push(meta_key, prefix .. 'b:' .. member, m, frame)
  end
  out[#out + 1] = member
  out[#out + 1] = position
  out[#out + 1] = owner
end
if dedupe ~= '' then
  redis.call('HSET', KEYS[2], sender, dedupe)
end
return out
