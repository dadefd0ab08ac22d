-- Frames of a box from a position. KEYS: meta, box. ARGV: epoch, from, most.
-- Returns {0, frame, ...}, {5, holder's client instance} fenced, {6} gone.
local m = meta(KEYS[1])
if not m.exists then
  return {6}
end
if m.epoch ~= tonumber(ARGV[1]) then
  return {5, m.instance}
end
local start = math.max(tonumber(ARGV[2]) - m.first, 0)
local frames = redis.call('LRANGE', KEYS[2], start, start + tonumber(ARGV[3]) - 1)
table.insert(frames, 1, 0)
return frames
