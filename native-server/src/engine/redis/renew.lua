-- The owner is alive: extends its lease, and the keys' expiry past it. KEYS: meta, box, from.
-- ARGV: epoch, lease ms, grace ms. Returns 1, 2 when the lease had lapsed (appends meanwhile
-- were taken for a source without a connection, and announced to nobody), or 0 for a stale
-- claim (or gone state).
local m = meta(KEYS[1])
if not m.exists or m.epoch ~= tonumber(ARGV[1]) then
  return 0
end
local now = now_ms()
redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[2]))
local ttl = tonumber(ARGV[2]) + tonumber(ARGV[3])
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ttl)
end
if m.lease <= now then
  return 2
end
return 1
