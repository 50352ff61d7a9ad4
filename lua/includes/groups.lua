--[[
  include groups: mutex groups, at most K jobs of one group active at once
  across all workers.

  A job enqueued with group key G carries the fields `group` = G and
  `group_max` = K. Group G holds at most K slots. A job takes a slot when
  it enters a ready list and keeps it while it is active; it gives the
  slot back when it leaves both (completes, fails into backoff or the dead
  letter queue, is released with a delay, is reaped, or is drained). A
  ready job of G that finds no free slot waits in G's own list instead of
  the ready lists, so claims never see it: jobs of other groups flow past
  a busy group, and claims need no extra work for groups. Because the
  slot is given back when a crashed worker's lease is reaped, a crash
  cannot hold a group forever.

  Keys (under the queue's prefix):
    groups        hash   G -> slots held (the field is removed at 0)
    gwait:<G>     list   ready jobs of G waiting for a slot (LPUSH back,
                         RPOP front); their state is 'ready'

  make_ready(prefix, levels_key, id, level, group, group_max)
    The one door into the ready lists for a job that holds no slot: an
    ungrouped job goes straight in (push_ready); a grouped one takes a
    slot if one is free, else waits in gwait:<G>.
  group_leave(prefix, levels_key, group)
    A job of `group` that held a slot leaves ready-or-active: its slot
    goes to the next waiting job of the group, if any, else is freed.
    No-op for an ungrouped job (group nil or '').
  group_waiting_count(prefix) -> ready jobs waiting for a group slot. A
    group has a waiting list only while it holds slots, so the groups hash
    names every such list.
]]
-- @include "keys"
-- @include "ready"

local function make_ready(prefix, levels_key, id, level, group, group_max)
  if not group or group == '' then
    push_ready(prefix, levels_key, id, level, false)
    return
  end
  local groups_key = key_groups(prefix)
  local held = tonumber(redis.call('HGET', groups_key, group)) or 0
  if held < (tonumber(group_max) or 1) then
    redis.call('HINCRBY', groups_key, group, 1)
    push_ready(prefix, levels_key, id, level, false)
  else
    redis.call('LPUSH', key_gwait(prefix, group), id)
  end
end

local function group_leave(prefix, levels_key, group)
  if not group or group == '' then return end
  local waiting_key = key_gwait(prefix, group)
  -- Hand the slot to the next waiting job that still exists (an id
  -- without a hash is an orphan entry: drop it and look further).
  while true do
    local next_id = redis.call('RPOP', waiting_key)
    if not next_id then break end
    local level = redis.call('HGET', key_job(prefix, next_id), 'priority')
    if level then
      push_ready(prefix, levels_key, next_id, level, false)
      return
    end
  end
  local groups_key = key_groups(prefix)
  if redis.call('HINCRBY', groups_key, group, -1) <= 0 then
    redis.call('HDEL', groups_key, group)
  end
end

local function group_waiting_count(prefix)
  local total = 0
  for _, group in ipairs(redis.call('HKEYS', key_groups(prefix))) do
    total = total + redis.call('LLEN', key_gwait(prefix, group))
  end
  return total
end
