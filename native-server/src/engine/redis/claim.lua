-- A connection takes a source. KEYS: meta, box, from, members.
-- ARGV: owner (node slot), exclusive ('1'/'0'), lease ms, grace ms, member (source hex).
-- Returns {epoch, next position, previous live owner or ''}; {-1} when exclusive and taken.
local now = now_ms()
local m = meta(KEYS[1])
local previous = ''
if live(m, now) then
  if ARGV[2] == '1' then
    return {-1}
  end
  previous = m.owner
end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease', now + tonumber(ARGV[3]))
if not m.exists then
  redis.call('HSET', KEYS[1], 'first', 1, 'bytes', 0)
end
local ttl = tonumber(ARGV[3]) + tonumber(ARGV[4])
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ttl)
end
redis.call('SADD', KEYS[4], ARGV[5])
return {epoch, m.first + redis.call('LLEN', KEYS[2]), previous}
