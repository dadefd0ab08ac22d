-- Shared by every script (prepended to each): the clock, and what a source's meta says.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function num(value, default)
  return tonumber(value) or default
end

-- The meta fields every script reads, in one call.
local FIELDS = {'epoch', 'owner', 'lease', 'session', 'first', 'bytes', 'broken', 'instance',
  'consumed'}

local function meta(key)
  local v = redis.call('HMGET', key, unpack(FIELDS))
  return {
    exists = v[5] ~= false,
    epoch = num(v[1], 0),
    owner = v[2] or '',
    lease = num(v[3], 0),
    session = v[4] == '1',
    first = num(v[5], 1),
    bytes = num(v[6], 0),
    broken = v[7] == '1',
    -- The client instance of the last claim ('' when it named none).
    instance = v[8] or '',
    -- The session's de-duplication watermark.
    consumed = num(v[9], 0),
  }
end

-- A connection holds the source, and its relay renewed the lease in time.
local function live(m, now)
  return m.owner ~= '' and m.lease > now
end

-- Frames addressed to the source are taken: a live connection holds it, or it has a session
-- within its grace period (the keys of a source without either are gone).
local function reachable(m, now)
  return m.exists and (live(m, now) or (m.session and not m.broken))
end

-- Keeps a key created after the meta's expiry was set on the same expiry (claim, renew and
-- release set it on the keys that exist then).
local function follow_ttl(meta_key, key)
  local ttl = redis.call('PTTL', meta_key)
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  end
end

-- Drops the first `n` frames of a box; returns how many and their bytes.
local function pop(key, n)
  if n <= 0 then
    return 0, 0
  end
  local popped = redis.call('LPOP', key, n)
  if not popped then
    return 0, 0
  end
  local freed = 0
  for _, frame in ipairs(popped) do
    freed = freed + #frame
  end
  return #popped, freed
end

-- Appends a frame to a source's box; returns its position.
local function push(meta_key, box_key, m, frame)
  local len = redis.call('RPUSH', box_key, frame)
  redis.call('HSET', meta_key, 'bytes', m.bytes + #frame)
  m.bytes = m.bytes + #frame
  if len == 1 then
    -- A new box. One that existed already has the meta's expiry: claim, renew and release
    -- set it on every key of the source.
    follow_ttl(meta_key, box_key)
  end
  return m.first + len - 1
end

-- Rooms a session is a member of: the meta's `rooms` field, room names in hex between commas
-- (',72,6c6f,'); the per-shard room sets ('r:<room>') are an index of it.
local function in_room(meta_key, room)
  local rooms = redis.call('HGET', meta_key, 'rooms')
  return rooms ~= false and string.find(rooms, ',' .. room .. ',', 1, true) ~= nil
end

-- The session leaves every room it is in (it ended, or a fresh one begins).
local function leave_rooms(meta_key, prefix, member)
  local rooms = redis.call('HGET', meta_key, 'rooms')
  if rooms then
    for room in string.gmatch(rooms, '[^,]+') do
      redis.call('SREM', prefix .. 'r:' .. room, member)
      redis.call('HDEL', meta_key, 'c:' .. room)
    end
    redis.call('HDEL', meta_key, 'rooms')
  end
end

-- Begins a room's log if its meta has none: positions start at the time in microseconds, so
-- that a log lost and begun again numbers after the old one (unless the old one took more
-- than a million messages a second). Returns the last position.
local function begin_log(lmeta, idle)
  local last = redis.call('HGET', lmeta, 'end')
  if last then
    return last
  end
  last = string.format('%d', now_ms() * 1000)
  redis.call('HSET', lmeta, 'end', last, 'start', last)
  redis.call('PEXPIRE', lmeta, idle * 6)
  return last
end
