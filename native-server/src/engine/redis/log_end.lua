-- The last position of a room's log, beginning the log if it has none (a member joining an
-- empty room is at its end). KEYS: the log's meta. ARGV: how long (ms) an idle log is kept.
-- Returns {end, start} (as text: positions are past what a Lua number prints exactly).
begin_log(KEYS[1], ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'end', 'start')
return {v[1], v[2]}
