-- Appends a message to a room's log (PROTOCOL.md section 14.1), once whatever the number of
-- members, and consumes it (the sender's watermark) in the same step. KEYS: the log (a
-- stream), its meta (a hash), the room's slow set (each the room's, hash tag {r:<room>}), and
-- the sender's meta (for the server's own message, the room's meta again, not read).
-- ARGV: frame (without its position), most entries kept, how long (ms) an idle log is kept,
-- room (hex, '' for the log of everyone), who does not receive it (hex, '' for nobody), the
-- sender's epoch ('' for the server), the message's id ('' for none).
-- A client's message checks the sender's claim (a relay replaced, or a store that lost its
-- data, appends nothing), is recognized when sent again (the watermark), and waits while a
-- relay says a member is behind (the slow set). The position is written into the frame, which
-- every relay is told of on `wsr:all` (`L room position exclude`, a newline, the frame).
-- Returns {0, position} appended, {1} duplicate, {3} a member is behind, {5, 0, holder's
-- instance} the claim is stale, {6} the sender's state is gone (nothing appended but {0}).
local log, lmeta, slow, sender = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local frame, idle, epoch, id = ARGV[1], ARGV[3], ARGV[6], tonumber(ARGV[7])
local m
if epoch ~= '' then
  m = meta(sender)
  if not m.exists then
    return {6}
  end
  if m.epoch ~= tonumber(epoch) then
    return {5, 0, m.instance}
  end
  if id and m.session and id <= m.consumed then
    return {1}
  end
  if redis.call('ZCARD', slow) > 0 then
    redis.call('ZREMRANGEBYSCORE', slow, '-inf', now_ms())
    if redis.call('ZCARD', slow) > 0 then
      return {3}
    end
  end
end
local pos = redis.call('HINCRBY', lmeta, 'end', 1)
if pos == 1 then
  -- A new log (or one that expired): it begins now.
  redis.call('HDEL', lmeta, 'end')
  pos = begin_log(lmeta, idle) + 1
  redis.call('HSET', lmeta, 'end', string.format('%d', pos))
end
local at = string.format('%d', pos)
local framed = '{"pos":' .. at .. ',' .. string.sub(frame, 2)
redis.call('XADD', log, 'MAXLEN', '~', ARGV[2], at .. '-0', 'f', framed, 'x', ARGV[5])
if pos % 16 == 1 then
  -- Kept while in use, the expiry pushed back every 16 messages. The meta outlives its log by
  -- far, so that a log deleted while idle goes on from its last position: members that had
  -- everything lost nothing, and are not told otherwise.
  redis.call('PEXPIRE', log, idle)
  redis.call('PEXPIRE', lmeta, idle * 6)
end
if id and m and m.session then
  redis.call('HSET', sender, 'consumed', id)
end
redis.call('PUBLISH', 'wsr:all', 'L ' .. ARGV[4] .. ' ' .. at .. ' ' .. ARGV[5] .. '\n' .. framed)
return {0, at}
