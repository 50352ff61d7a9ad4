--[[
  repair: fix one violation that the invariant checker (`Client::check_queue`)
  reported, if it still holds.

  The checker reads a queue without blocking Redis, so by the time a repair
  runs the job may have moved on: each action first re-checks, inside this
  script, the exact condition it fixes, and changes nothing when the
  condition no longer holds. Actions:

  unlisted <id>   A job hash that no structure lists. It goes back where its
                  `state` says: ready -> the back of its priority's ready
                  list (and `levels`); delayed -> `delayed` at its `due_at`
                  (now when unset); active -> `active` with an already
                  expired deadline, so the reaper retries it through the
                  normal failure path ('lease expired'); completed ->
                  `completed` at its `finished_at`; dead -> `dead` at its
                  `died_at` (now when unset). Any other state is left alone.
  missing <id> <place>
                  A structure (`ready`, `delayed`, `active`, `completed`,
                  `dead`) lists an id whose job hash is missing. The id is
                  removed from it, with an 'orphan' event as claim emits.
  hidden <level>  A non-empty ready list whose level is missing from
                  `levels`. The level is added back.
  mismatch <id> <place>
                  The job's `state` disagrees with the one structure that
                  lists it. The structure wins: `state` is set to <place>
                  (delayed also gets `due_at` = its score).
  groupslots <group>
                  A mutex group's slot count in `groups` disagrees with its
                  jobs in the ready lists and `active`. It is counted again
                  here (reading every ready and active job: O(ready +
                  active)) and set; freed slots go to the group's waiting
                  jobs, as when a job of the group finishes.

  Ready lists are looked for at levels 0..9 and at every level in `levels`;
  a ready job of a mutex group may also wait in its group's list
  (includes/groups). A relisted ready job of a group goes through the
  group's door (make_ready): it takes a free slot or waits. Where that
  leaves the group's slot count wrong (the job still held a slot when it
  went missing), the next check reports it and 'groupslots' fixes it.

  KEYS[1] meta       hash    counter `repaired`
  KEYS[2] levels     zset    non-empty priority levels
  KEYS[3] delayed    zset    due time (ms) per job id
  KEYS[4] active     zset    lease deadline (ms) per job id
  KEYS[5] completed  zset    finish time (ms) per job id
  KEYS[6] dead       zset    time of death (ms) per job id
  KEYS[7] events     stream  lifecycle events

  ARGV[1] prefix  the queue's key prefix (see enqueue.lua)
  ARGV[2] cap     events stream bound (0 = no events)
  ARGV[3] action  'unlisted', 'missing', 'hidden', 'mismatch' or
                  'groupslots'
  ARGV[4] target  the job id, the level for 'hidden', the group for
                  'groupslots'
  ARGV[5] place   the structure named by 'missing' and 'mismatch'

  Reply: {status, detail}: status 'repaired' (detail says what was done) or
  'skipped' (detail says why nothing was changed).
  Errors: none.
]]
-- @include "clock"
-- @include "keys"
-- @include "events"
-- @include "ready"
-- @include "groups"
local meta_key, levels_key, delayed_key, active_key, completed_key, dead_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local prefix = ARGV[1]
local log = event_log(prefix, KEYS[7], tonumber(ARGV[2]))
local action, target, place = ARGV[3], ARGV[4], ARGV[5]

local now = now_ms()
local zsets = {delayed = delayed_key, active = active_key, completed = completed_key, dead = dead_key}

-- Every ready list that may exist: levels 0..9 and whatever `levels` names.
local function ready_lists()
  local seen, lists = {}, {}
  local function add(level)
    level = tostring(level)
    if not seen[level] then
      seen[level] = true
      lists[#lists + 1] = key_ready(prefix, level)
    end
  end
  for level = 0, 9 do add(level) end
  for _, level in ipairs(redis.call('ZRANGE', levels_key, 0, -1)) do add(level) end
  return lists
end

-- The structures that list `id` (of mutex group `group`, or nil) now, one
-- entry per listing.
local function places_of(id, group)
  local found = {}
  for _, list_key in ipairs(ready_lists()) do
    if redis.call('LPOS', list_key, id) then found[#found + 1] = 'ready' end
  end
  if group and group ~= '' and redis.call('LPOS', key_gwait(prefix, group), id) then
    found[#found + 1] = 'ready'
  end
  for name, key in pairs(zsets) do
    if redis.call('ZSCORE', key, id) then found[#found + 1] = name end
  end
  return found
end

-- A numeric field as a time in ms, or `fallback` for a missing or garbage one.
local function time_or(value, fallback)
  local t = tonumber(value)
  if t and t >= 0 then return math.floor(t) end
  return fallback
end

local function done(detail)
  redis.call('HINCRBY', meta_key, 'repaired', 1)
  return {'repaired', detail}
end

local function relist(id)
  local job_key = key_job(prefix, id)
  local f = redis.call('HMGET', job_key, 'state', 'priority', 'due_at', 'finished_at', 'died_at', 'name',
    'attempt', 'correlation_id', 'group', 'group_max')
  if not f[1] then return {'skipped', 'the job hash no longer exists'} end
  if #places_of(id, f[9]) > 0 then return {'skipped', 'a structure lists the job again'} end
  local state, detail = f[1], nil
  if state == 'ready' then
    local level = tonumber(f[2])
    if not level or level < 0 or level > 9 or level ~= math.floor(level) then level = 0 end
    make_ready(prefix, levels_key, id, tostring(level), f[9], f[10])
    detail = 'put back at the end of ready level ' .. level
    if f[9] and f[9] ~= '' then detail = detail .. ' (through mutex group ' .. f[9] .. ')' end
  elseif state == 'delayed' then
    local due = time_or(f[3], now)
    schedule(prefix, delayed_key, id, due)
    detail = 'put back in delayed, due at ' .. due
  elseif state == 'active' then
    -- An expired lease: the reaper retries the job (or buries it when its
    -- attempts are spent) exactly as if its worker had died.
    redis.call('ZADD', active_key, now - 1, id)
    detail = 'put back in active with an expired lease; the reaper will retry it'
  elseif state == 'completed' then
    redis.call('ZADD', completed_key, time_or(f[4], now), id)
    detail = 'put back in completed'
  elseif state == 'dead' then
    redis.call('ZADD', dead_key, time_or(f[5], now), id)
    detail = 'put back in the dead letter queue'
  else
    return {'skipped', 'state ' .. string.format('%q', state) .. ' names no structure'}
  end
  emit(log, 'repaired', id, f[6], tonumber(f[7]) or 0, f[8], {'action', 'relisted', 'to', state})
  return done(detail)
end

local function drop_missing(id)
  if redis.call('EXISTS', key_job(prefix, id)) == 1 then
    return {'skipped', 'the job hash exists again'}
  end
  local removed = 0
  if place == 'ready' then
    for _, list_key in ipairs(ready_lists()) do
      removed = removed + redis.call('LREM', list_key, 0, id)
    end
    for _, group in ipairs(redis.call('HKEYS', key_groups(prefix))) do
      removed = removed + redis.call('LREM', key_gwait(prefix, group), 0, id)
    end
  elseif zsets[place] then
    removed = redis.call('ZREM', zsets[place], id)
  else
    return {'skipped', 'unknown place ' .. string.format('%q', place)}
  end
  if removed == 0 then return {'skipped', place .. ' no longer lists the job'} end
  emit(log, 'orphan', id, '', 0, '', {'from', place})
  return done('removed from ' .. place)
end

local function show_level(level)
  local score = tonumber(level)
  if not score then return {'skipped', 'level ' .. string.format('%q', level) .. ' is not a number'} end
  if redis.call('ZSCORE', levels_key, level) then return {'skipped', 'the level is in levels again'} end
  if redis.call('LLEN', key_ready(prefix, level)) == 0 then
    return {'skipped', 'the ready list is empty now'}
  end
  redis.call('ZADD', levels_key, score, level)
  signal_ready(prefix)
  return done('level ' .. level .. ' added back to levels')
end

local function restate(id)
  local job_key = key_job(prefix, id)
  local f = redis.call('HMGET', job_key, 'state', 'name', 'attempt', 'correlation_id', 'group')
  if not f[1] then return {'skipped', 'the job hash no longer exists'} end
  local found = places_of(id, f[5])
  if #found ~= 1 or found[1] ~= place then
    return {'skipped', 'the job is no longer listed in ' .. place .. ' alone'}
  end
  if f[1] == place then return {'skipped', 'the state agrees now'} end
  redis.call('HSET', job_key, 'state', place)
  if place == 'delayed' then
    redis.call('HSET', job_key, 'due_at', redis.call('ZSCORE', delayed_key, id))
  end
  emit(log, 'repaired', id, f[2], tonumber(f[3]) or 0, f[4],
    {'action', 'restated', 'from', f[1], 'to', place})
  return done('state ' .. string.format('%q', f[1]) .. ' set to ' .. place)
end

-- Jobs of `group` holding a slot: in a ready list or `active`, with the
-- state that goes with it.
local function count_holders(group)
  local holders = 0
  local function tally(ids, state)
    for _, id in ipairs(ids) do
      local f = redis.call('HMGET', key_job(prefix, id), 'state', 'group')
      if f[1] == state and f[2] == group then holders = holders + 1 end
    end
  end
  for _, list_key in ipairs(ready_lists()) do tally(redis.call('LRANGE', list_key, 0, -1), 'ready') end
  tally(redis.call('ZRANGEBYSCORE', active_key, '-inf', '(inf'), 'active')
  return holders
end

local function recount(group)
  local groups_key = key_groups(prefix)
  local recorded = tonumber(redis.call('HGET', groups_key, group)) or 0
  local holders = count_holders(group)
  if holders == recorded then return {'skipped', 'the slot count agrees now'} end
  -- Freed slots go to waiting jobs of the group, within its limit.
  local waiting_key = key_gwait(prefix, group)
  local handed = 0
  while true do
    local next_id = redis.call('LINDEX', waiting_key, -1)
    if not next_id then break end
    local w = redis.call('HMGET', key_job(prefix, next_id), 'priority', 'group_max')
    if w[1] and holders >= (tonumber(w[2]) or 1) then break end
    redis.call('RPOP', waiting_key)
    if w[1] then
      push_ready(prefix, levels_key, next_id, w[1], false)
      holders = holders + 1
      handed = handed + 1
    end
  end
  if holders > 0 then
    redis.call('HSET', groups_key, group, holders)
  else
    redis.call('HDEL', groups_key, group)
  end
  local detail = 'slots of mutex group ' .. group .. ' set from ' .. recorded .. ' to ' .. holders
  if handed > 0 then detail = detail .. ' (' .. handed .. ' waiting job(s) moved to ready)' end
  return done(detail)
end

if action == 'unlisted' then return relist(target) end
if action == 'groupslots' then return recount(target) end
if action == 'missing' then return drop_missing(target) end
if action == 'hidden' then return show_level(target) end
if action == 'mismatch' then return restate(target) end
return {'skipped', 'unknown action ' .. string.format('%q', action)}
