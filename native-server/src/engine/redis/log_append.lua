-- Appends a message to a room's log (PROTOCOL.md section 14.1), once whatever the number of
-- members. KEYS: the log (a stream), its meta (a hash), the room's slow set (each the room's,
-- hash tag {r:<room>}), and the sender's meta (whose session must still be the claim's: a
-- relay replaced, or a store that lost its data, appends nothing; for the server's own
-- message, the room's meta again, not read).
-- ARGV: frame (without its position), sender (hex, '' for the server), dedupe ('token|id',
-- '' for none), most entries kept, how long (ms) an idle log is kept, room (hex, '' for the
-- log of everyone), who does not receive it (hex, '' for nobody), the sender's epoch ('' for
-- the server: then it never waits while a relay says a member is behind).
-- The position is written into the frame, which every relay is told of on `wsr:all`
-- (`L room position exclude`, a newline, the frame).
-- Returns {0, position} appended, {1} duplicate (the sender's message was appended before),
-- {3} a member is behind: nothing appended, {5, 0, holder's instance} the claim is stale,
-- {6} the sender's state is gone.
local log, lmeta, slow = KEYS[1], KEYS[2], KEYS[3]
local frame, sender, dedupe = ARGV[1], ARGV[2], ARGV[3]
if ARGV[8] ~= '' then
  local m = meta(KEYS[4])
  if not m.exists then
    return {6}
  end
  if m.epoch ~= tonumber(ARGV[8]) then
    return {5, 0, m.instance}
  end
end
if dedupe ~= '' then
  local previous = redis.call('HGET', lmeta, 's:' .. sender)
  if previous then
    local pt, pid = string.match(previous, '^(.*)|(%d+)$')
    local t, id = string.match(dedupe, '^(.*)|(%d+)$')
    if pt == t and tonumber(id) <= tonumber(pid) then
      return {1}
    end
  end
end
local now = now_ms()
if ARGV[8] ~= '' then
  redis.call('ZREMRANGEBYSCORE', slow, '-inf', now)
  if redis.call('ZCARD', slow) > 0 then
    return {3}
  end
end
begin_log(lmeta, now)
local pos = string.format('%d', redis.call('HINCRBY', lmeta, 'end', 1))
local framed = '{"pos":' .. pos .. ',' .. string.sub(frame, 2)
redis.call('XADD', log, 'MAXLEN', '~', ARGV[4], pos .. '-0', 'f', framed, 'x', ARGV[7])
if dedupe ~= '' then
  redis.call('HSET', lmeta, 's:' .. sender, dedupe)
end
redis.call('PEXPIRE', log, ARGV[5])
redis.call('PEXPIRE', lmeta, ARGV[5])
redis.call('PUBLISH', 'wsr:all', 'L ' .. ARGV[6] .. ' ' .. pos .. ' ' .. ARGV[7] .. '\n' .. framed)
return {0, pos}
