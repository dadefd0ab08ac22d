-- The client has every frame through a position. KEYS: meta, box. ARGV: epoch, through.
-- Returns {status, bytes left}: 0 done, 5 fenced, 6 gone.
local m = meta(KEYS[1])
if not m.exists then
  return {6, 0}
end
if m.epoch ~= tonumber(ARGV[1]) then
  return {5, 0}
end
local popped, freed = pop(KEYS[2], tonumber(ARGV[2]) - m.first + 1)
if popped > 0 then
  redis.call('HSET', KEYS[1], 'first', m.first + popped, 'bytes', m.bytes - freed)
end
return {0, m.bytes - freed}
