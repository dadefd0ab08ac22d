-- Consumes message `id` of a source: de-duplicates it against the watermark and advances the
-- watermark, and appends its answer to the source's own box when there is one.
-- KEYS: meta, box. ARGV: epoch, id ('' for none), frame for the source itself ('' for none).
-- Returns {status, position}: 0 done, 1 duplicate, 5 fenced (then the holder's client instance
-- third), 6 gone.
local m = meta(KEYS[1])
if not m.exists then
  return {6, 0}
end
if m.epoch ~= tonumber(ARGV[1]) then
  return {5, 0, m.instance}
end
local id = tonumber(ARGV[2])
if id and m.session then
  local consumed = num(redis.call('HGET', KEYS[1], 'consumed'), 0)
  if id <= consumed then
    return {1, 0}
  end
end
local position = 0
if ARGV[3] ~= '' then
  position = push(KEYS[1], KEYS[2], m, ARGV[3])
end
if id and m.session then
  redis.call('HSET', KEYS[1], 'consumed', id)
end
return {0, position}
