-- The owner is alive: extends its lease, and the keys' expiry past it. KEYS: meta, box, from.
-- ARGV: epoch, lease ms, grace ms. Returns 1, or 0 for a stale claim (or gone state).
local m = meta(KEYS[1])
if not m.exists or m.epoch ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'lease', now_ms() + tonumber(ARGV[2]))
local ttl = tonumber(ARGV[2]) + tonumber(ARGV[3])
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return 1
