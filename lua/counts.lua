--[[
  counts: one consistent snapshot of a queue's size per state (read-only).

  KEYS[1] meta       hash    `paused`
  KEYS[2] levels     zset    non-empty priority levels
  KEYS[3] delayed    zset
  KEYS[4] active     zset
  KEYS[5] completed  zset
  KEYS[6] dead       zset

  ARGV[1] prefix  the queue's key prefix (see enqueue.lua)

  Reply: {ready, delayed, active, completed, dead, paused (0|1)}; ready
  includes jobs of mutex groups waiting for a slot (includes/groups).
  Errors: none.
]]
-- @include "ready"
-- @include "active"
-- @include "groups"
local meta_key, levels_key = KEYS[1], KEYS[2]
local prefix = ARGV[1]
local paused = 0
if redis.call('HGET', meta_key, 'paused') == '1' then paused = 1 end
return {
  ready_count(prefix, levels_key) + group_waiting_count(prefix),
  redis.call('ZCARD', KEYS[3]),
  active_count(KEYS[4]),
  redis.call('ZCARD', KEYS[5]),
  redis.call('ZCARD', KEYS[6]),
  paused,
}
