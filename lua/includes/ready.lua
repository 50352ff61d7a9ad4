--[[
  include ready: the ready lists, one list per priority level.

  Key layout (all under the queue's hash-tagged prefix):
    <prefix>ready:<level>   list   job ids of one priority level; new jobs
                                   are LPUSHed, claims RPOP (FIFO); the
                                   "front" of the line is the right end.
    <prefix>levels          zset   the levels that may hold jobs,
                                   member = score = level; higher is served
                                   first. May name a level whose list has
                                   emptied; pop_ready removes it lazily.
    <prefix>wake            list   wake-up tokens for idle workers, which
                                   block on it (BLPOP) instead of polling.
                                   At most WAKE_TOKENS entries.

  push_ready(prefix, levels_key, id, level, front)
    front = true puts the job at the head of its level (release). When the
    level's list was empty, an idle worker may be waiting: signal_ready.
  push_ready_many(prefix, levels_key, ids, level)
    push_ready for several ids of one level (at the back, in order) with
    one LPUSH; a no-op for an empty list.
  signal_ready(prefix)
    Adds a wake token unless WAKE_TOKENS are already waiting. Tokens cost a
    command only when a list turns non-empty (or after a full claim that
    left work behind), never per job of a busy queue.
  schedule(prefix, delayed_key, id, due)
    Adds a job to the delayed zset. When it becomes the earliest due job,
    a wake token lets an idle worker (asleep until the old earliest) re-plan,
    so delayed jobs start on time without polling.
  pop_ready(prefix, levels_key, count, share_every, meta_key) -> list of at
    most count ids, highest level first, FIFO within a level. With
    share_every > 0 and several levels holding jobs, each lower level gets
    one job in every run of share_every (its minimum share, so sustained
    high-priority load cannot starve it); the position in that run is the
    counter `served` in meta_key. share_every = 0 (or nil) is strict
    priority and costs nothing extra.
  ready_count(prefix, levels_key) -> total ids in all ready lists.
  zadd_all(key, score, members)
    Adds every member of `members` to the sorted set `key` with one score,
    in one ZADD (a no-op for none). Used for the other sorted sets too:
    `completed` and the rate log (`active` has its own: includes/active).
]]
-- @include "keys"

local WAKE_TOKENS = 4

local function signal_ready(prefix)
  local wake_key = key_wake(prefix)
  if redis.call('LLEN', wake_key) < WAKE_TOKENS then
    redis.call('LPUSH', wake_key, '1')
  end
end

local function push_ready(prefix, levels_key, id, level, front)
  local list_key = key_ready(prefix, level)
  local len
  if front then
    len = redis.call('RPUSH', list_key, id)
  else
    len = redis.call('LPUSH', list_key, id)
  end
  if len == 1 then
    redis.call('ZADD', levels_key, level, level)
    signal_ready(prefix)
  end
end

local function zadd_all(key, score, members)
  if #members == 0 then return end
  local args = {}
  for _, member in ipairs(members) do
    args[#args + 1] = score
    args[#args + 1] = member
  end
  redis.call('ZADD', key, unpack(args))
end

local function push_ready_many(prefix, levels_key, ids, level)
  if #ids == 0 then return end
  local list_key = key_ready(prefix, level)
  if redis.call('LPUSH', list_key, unpack(ids)) == #ids then
    redis.call('ZADD', levels_key, level, level)
    signal_ready(prefix)
  end
end

local function schedule(prefix, delayed_key, id, due)
  redis.call('ZADD', delayed_key, due, id)
  if redis.call('ZRANGE', delayed_key, 0, 0)[1] == id then
    signal_ready(prefix)
  end
end

-- Pops one id from `levels[i]`'s list; drops a level found empty (from
-- the zset and from `levels`). Returns the id, or nil if the list was empty.
local function pop_one(prefix, levels_key, levels, i)
  local id = redis.call('RPOP', key_ready(prefix, levels[i]))
  if not id then
    redis.call('ZREM', levels_key, levels[i])
    table.remove(levels, i)
  end
  return id
end

-- pop_ready with minimum shares for the lower levels (see the header).
local function pop_shared(prefix, levels_key, levels, count, share_every, meta_key)
  local ids = {}
  local served = tonumber(redis.call('HGET', meta_key, 'served')) or 0
  while #ids < count and #levels > 0 do
    -- The last #levels - 1 turns of each run go to the lower levels, one
    -- each, so a short burst still starts with the highest level.
    local lower_turn = (served + #ids) % share_every - (share_every - (#levels - 1))
    local id = nil
    if lower_turn >= 0 then
      id = pop_one(prefix, levels_key, levels, lower_turn + 2)
    end
    while not id and #levels > 0 do
      id = pop_one(prefix, levels_key, levels, 1)
    end
    if id then ids[#ids + 1] = id end
  end
  if #ids > 0 then redis.call('HSET', meta_key, 'served', (served + #ids) % share_every) end
  return ids
end

local function pop_ready(prefix, levels_key, count, share_every, meta_key)
  local ids = {}
  if count <= 0 then return ids end
  local levels = redis.call('ZREVRANGE', levels_key, '0', '-1')
  if share_every and share_every > 0 and #levels > 1 then
    return pop_shared(prefix, levels_key, levels, count, share_every, meta_key)
  end
  for _, level in ipairs(levels) do
    local need = count - #ids
    if need <= 0 then break end
    -- The count as text: redis.call would format a number with %.17g.
    local got = redis.call('RPOP', key_ready(prefix, level), string.format('%d', need))
    if (not got) or #got < need then
      redis.call('ZREM', levels_key, level)
    end
    if got then
      -- One level (the usual case) needs no copy.
      if #ids == 0 then
        ids = got
      else
        for _, id in ipairs(got) do ids[#ids + 1] = id end
      end
    end
  end
  return ids
end

local function ready_count(prefix, levels_key)
  local total = 0
  for _, level in ipairs(redis.call('ZRANGE', levels_key, 0, -1)) do
    total = total + redis.call('LLEN', key_ready(prefix, level))
  end
  return total
end
