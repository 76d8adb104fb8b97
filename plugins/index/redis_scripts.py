"""The Lua scripts of the Redis index (helios.plugins.index.redis): a write, and the
fencing of a member whose partitions another member took over.

Fencing. A Kafka member frozen past its session (a stopped VM, a long pause) wakes with
batches in hand and writes queued for Redis, for windows the group has given to another
member meanwhile, which read the same messages again and decided them. Its lease
(helios.plugins.sources.kafka_lease) stops it deciding anything new once it wakes, but
a write already on its way cannot be called back. So Redis refuses it: every write
carries its member's *epoch* (`<p>:fence`, field = member), and a member that takes a
partition over from one that did not hand it back (`<p>:owners`, field = the
partition's mark name) raises that member's epoch. A member hands its partitions back
(DISOWN) on a clean rebalance, after its last write for them, so only a member that
lost them while it could not answer is fenced. Its writes made before are refused
whole ("FENCED"); it learns its new epoch when the group next gives it partitions.
"""

from __future__ import annotations

# One write: the member's epoch ("": a spilled write of an earlier version, not
# checked), tenants' TTLs (tenant, seconds: index.tenant_ttl_seconds), records (id,
# value, deadline or "" once closed), the write's outcomes (first sequence, and all of
# them marshalled as one stream entry), the member's meta, and marks (name, value,
# name@, when). A write of a fenced epoch changes nothing. Keys are built from the prefix
# here (KEYS[1], the open set, only routes the call on a cluster, where the prefix is
# the hash tag of every key). Redis calls
# are what a write costs Redis (each one from Lua costs about a microsecond besides its
# work), so the open set changes go as one ZADD and one ZREM per 1,000 ids, and the
# outcomes as one XADD. A record is one SETEX, its TTL passed as the string it came as
# (SET .. EX with a Lua number cost Redis 12-15% more per record:
# benchmarks/redis_script.py).
# A write sent again (it reached Redis, but its answer did not reach heliosd, so it
# was spilled and replayed) adds no second stream entry: the member's last_sequence
# already covers its outcomes.
WRITE = """
local p, ttl, minid, member, epoch = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if epoch ~= '' and (redis.call('HGET', p .. ':fence', member) or '0') ~= epoch then
  return redis.error_reply('FENCED: member ' .. member .. ' wrote at epoch ' .. epoch ..
    ', but another member has taken over its partitions since')
end
local openkey, i, ttls, scoped = p .. ':open', 7, {}, false
local meta = p .. ':meta:' .. member
for _ = 1, tonumber(ARGV[6]) do
  ttls[ARGV[i]] = ARGV[i + 1]
  scoped, i = true, i + 2
end
local records = tonumber(ARGV[i])
i = i + 1
local opened, closed = {}, {}
for _ = 1, records do
  local id, deadline, life = ARGV[i], ARGV[i + 2], ttl
  if scoped then
    local sep = string.find(id, '\\31', 1, true)
    if sep then life = ttls[string.sub(id, 1, sep - 1)] or ttl end
  end
  redis.call('SETEX', p .. ':{' .. id .. '}', life, ARGV[i + 1])
  if deadline == '' then
    closed[#closed + 1] = id
  else
    opened[#opened + 1] = deadline
    opened[#opened + 1] = id
  end
  i = i + 3
end
for s = 1, #closed, 1000 do
  redis.call('ZREM', openkey, unpack(closed, s, math.min(s + 999, #closed)))
end
for s = 1, #opened, 2000 do
  redis.call('ZADD', openkey, unpack(opened, s, math.min(s + 1999, #opened)))
end
local first = ARGV[i]
if first ~= '' then
  local done = tonumber(redis.call('HGET', meta, 'last_sequence') or '0')
  if tonumber(first) > done then
    redis.call('XADD', p .. ':outcomes:' .. member, 'MINID', '~', minid,
      first .. '-0', 'b', ARGV[i + 1])
  end
end
i = i + 2
redis.call('HSET', meta, 'last_sequence', ARGV[i], 'saved_at', ARGV[i + 1])
local marks = tonumber(ARGV[i + 2])
i = i + 3
for _ = 1, marks do
  redis.call('HSET', p .. ':marks', ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  i = i + 4
end
return records
"""

# Take partitions (their mark names, ARGV[4:]) for `member`; a previous holder that did
# not hand one back is fenced. With a scope (ARGV[3], a mark-name prefix: one Kafka
# input's), every other partition of that scope the member still holds is handed back
# in the same step: what it lost while Redis was away, or before a restart, when it
# could not disown it (else the next holder would fence it for partitions it no longer
# has, and its writes for the ones it has would be refused). Returns the member's epoch.
CLAIM = """
local p, member, scope = ARGV[1], ARGV[2], ARGV[3]
local owners, fence = p .. ':owners', p .. ':fence'
local taking = {}
for k = 4, #ARGV do
  taking[ARGV[k]] = true
  local held = redis.call('HGET', owners, ARGV[k])
  if held and held ~= member then redis.call('HINCRBY', fence, held, 1) end
  redis.call('HSET', owners, ARGV[k], member)
end
if scope ~= '' then
  local all = redis.call('HGETALL', owners)
  for i = 1, #all, 2 do
    local name = all[i]
    if all[i + 1] == member and not taking[name] and string.sub(name, 1, #scope) == scope then
      redis.call('HDEL', owners, name)
    end
  end
end
return redis.call('HGET', fence, member) or '0'
"""

# Hand partitions back: the next holder fences no one.
DISOWN = """
local p, member = ARGV[1], ARGV[2]
local owners = p .. ':owners'
for k = 3, #ARGV do
  if redis.call('HGET', owners, ARGV[k]) == member then redis.call('HDEL', owners, ARGV[k]) end
end
return 0
"""
