-- A connection takes a source. KEYS: meta, box, from, members.
-- ARGV: owner (node slot), exclusive ('1'/'0'), lease ms, grace ms, member (source hex),
-- the attempt's instance and number ('' and '' when the upgrade named none).
-- Returns {epoch, next position, previous live owner or '', 1 when the previous owner is
-- superseded (same instance) or 0}; {-1} when exclusive and another instance holds the source;
-- {-2} when the attempt is stale. The order of attempts is Succession::of in
-- wsrelay_core::server::engine: a stale attempt is refused whether or not anyone is connected.
local now = now_ms()
local m = meta(KEYS[1])
local instance, number = ARGV[6], tonumber(ARGV[7])
local last = redis.call('HMGET', KEYS[1], 'instance', 'attempt')
local same = instance ~= '' and last[1] == instance
if same and number <= num(last[2], 0) then
  return {-2}
end
local previous = ''
if live(m, now) then
  if ARGV[2] == '1' and not same then
    return {-1}
  end
  previous = m.owner
end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease', now + tonumber(ARGV[3]))
if instance ~= '' then
  redis.call('HSET', KEYS[1], 'instance', instance, 'attempt', number)
else
  redis.call('HDEL', KEYS[1], 'instance', 'attempt')
end
if not m.exists then
  redis.call('HSET', KEYS[1], 'first', 1, 'bytes', 0)
end
local ttl = tonumber(ARGV[3]) + tonumber(ARGV[4])
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ttl)
end
redis.call('SADD', KEYS[4], ARGV[5])
return {epoch, m.first + redis.call('LLEN', KEYS[2]), previous, same and 1 or 0}
