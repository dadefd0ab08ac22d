-- Appends a frame to one source's box. KEYS: meta, box, from (of the recipient).
-- ARGV: frame, sender (hex, '' for the server), dedupe ('token|id', '' for none), window (-1:
-- never wait), max backlog, epoch the recipient must have ('' for any: a frame to somebody
-- else; set for a frame to oneself), the calling relay's node number, the recipient (hex).
-- Returns {status, position, owner}: 0 appended, 1 duplicate (with the owner, who may not have
-- heard of it), 2 unknown target, 3 blocked, 4 overflow, 5 fenced.
-- An appended frame whose owner is another relay is published to it here, in the same round
-- trip (a `Note::Frames` of wire.rs); the calling relay hands its own owners' frames over.
local now = now_ms()
local m = meta(KEYS[1])
if ARGV[6] ~= '' and (not m.exists or m.epoch ~= tonumber(ARGV[6])) then
  return {5, 0, ''}
end
if not reachable(m, now) then
  return {2, 0, ''}
end
local frame, sender, dedupe = ARGV[1], ARGV[2], ARGV[3]
if dedupe ~= '' then
  local previous = redis.call('HGET', KEYS[3], sender)
  if previous then
    local pt, pid = string.match(previous, '^(.*)|(%d+)$')
    local t, id = string.match(dedupe, '^(.*)|(%d+)$')
    if pt == t and tonumber(id) <= tonumber(pid) then
      -- Appended before (an answer that was lost): its owner may not have heard of it.
      local owner = ''
      if live(m, now) then
        owner = m.owner
      end
      return {1, 0, owner}
    end
  end
end
local window = tonumber(ARGV[4])
if window >= 0 and live(m, now) and m.bytes > window then
  return {3, 0, ''}
end
if m.bytes + #frame > tonumber(ARGV[5]) then
  return {4, 0, ''}
end
local position = push(KEYS[1], KEYS[2], m, frame)
if dedupe ~= '' then
  if redis.call('HSET', KEYS[3], sender, dedupe) == 1 then
    -- A new sender, maybe a new hash: it takes the meta's expiry.
    follow_ttl(KEYS[1], KEYS[3])
  end
end
local owner = ''
if live(m, now) then
  owner = m.owner
end
if owner ~= '' and owner ~= ARGV[7] then
  local note = 'F\n' .. ARGV[8] .. ' ' .. string.format('%d', position) .. '\n\n' .. frame
  redis.call('PUBLISH', 'wsr:n:' .. owner, note)
end
return {0, position, owner}
