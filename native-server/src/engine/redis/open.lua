-- Opens the session a hello names, or a fresh one, or sets up a bare client.
-- KEYS: meta, box. ARGV: epoch, token ('' for a bare client), ack, sid the hello named ('' if
-- none), fresh_next, the name of a new instance, key prefix of the shard, member (hex). A
-- session not resumed leaves its rooms: membership belongs to the session.
-- Returns {resumed, consumed, base, next, lost (-1: none), sid} or {-1} when fenced,
-- {-2} when the source's state is gone.
local m = meta(KEYS[1])
if not m.exists then
  return {-2}
end
if m.epoch ~= tonumber(ARGV[1]) then
  return {-1}
end
local token, ack, sid, fresh_next = ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local len = redis.call('LLEN', KEYS[2])
local stored = redis.call('HMGET', KEYS[1], 'token', 'sid', 'consumed', 'base', 'lost')
local consumed, base = num(stored[3], 0), num(stored[4], 0)
if token ~= '' and m.session and stored[1] == token and not m.broken then
  if sid ~= '' and stored[2] == sid then
    local through = base + ack
    if through + 1 >= m.first and through < m.first + len then
      local _, freed = pop(KEYS[2], through - m.first + 1)
      redis.call('HSET', KEYS[1], 'first', through + 1, 'bytes', m.bytes - freed)
      return {1, consumed, base, through + 1, -1, stored[2]}
    end
  else
    -- The client never heard of this instance: it starts at the instance's beginning.
    return {0, consumed, base, math.max(m.first, base + 1), -1, stored[2]}
  end
end
-- Not resumable: frames before fresh_next were the previous session's, and so were its rooms.
leave_rooms(KEYS[1], ARGV[7], ARGV[8])
local dropped, freed = pop(KEYS[2], math.min(fresh_next - m.first, len))
local lost = -1
if m.session or m.broken then
  lost = dropped + num(stored[5], 0)
end
local kept = 0
if token ~= '' and m.session and stored[1] == token then
  kept = consumed
end
redis.call('HSET', KEYS[1], 'first', fresh_next, 'bytes', m.bytes - freed, 'lost', 0, 'broken', 0)
if token == '' then
  redis.call('HDEL', KEYS[1], 'session', 'token', 'sid', 'consumed', 'base')
  return {0, 0, fresh_next - 1, fresh_next, -1, ''}
end
redis.call('HSET', KEYS[1], 'session', 1, 'token', token, 'sid', ARGV[6], 'consumed', kept,
  'base', fresh_next - 1)
return {0, kept, fresh_next - 1, fresh_next, lost, ARGV[6]}
