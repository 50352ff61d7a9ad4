--[[
  replay: move dead jobs back to ready, keeping their history.

  Each named id that is in the dead letter zset goes to the back of its
  priority level with a fresh attempt budget (attempt = 0). Its error history
  stays; `replays` counts replays, `replayed_at` records the last one, and
  the reason it died moves to `last_dead_reason`. Ids that are not dead are
  reported and left alone.

  KEYS[1] meta    hash    counter `replayed`
  KEYS[2] dead    zset    time of death (ms) per job id
  KEYS[3] levels  zset    non-empty priority levels
  KEYS[4] events  stream  lifecycle events

  ARGV[1] prefix  the queue's key prefix (see enqueue.lua)
  ARGV[2] cap     events stream bound (0 = no events)
  ARGV[3..] ids   job ids to replay

  Reply: {replayed, not_dead_id...}: how many were replayed, then the ids
  that were not in the dead letter queue.
  Errors: none.
]]
-- @include "clock"
-- @include "keys"
-- @include "fields"
-- @include "events"
-- @include "groups"
local meta_key, dead_key, levels_key = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
local log = event_log(prefix, KEYS[4], tonumber(ARGV[2]))

local now = now_ms()
local reply = {0}
for i = 3, #ARGV do
  local id = ARGV[i]
  local job_key = key_job(prefix, id)
  local f = redis.call('HMGET', job_key, 'state', 'priority', 'dead_reason', 'name',
    'correlation_id', 'group', 'group_max')
  if f[1] == 'dead' and redis.call('ZREM', dead_key, id) == 1 then
    redis.call('HSET', job_key, 'state', 'ready', 'attempt', 0, 'outcome', '',
      'last_dead_reason', f[3] or '', 'replayed_at', now)
    redis.call('HDEL', job_key, 'dead_reason', 'died_at', 'finished_at')
    bump(job_key, 'replays', 1)
    make_ready(prefix, levels_key, id, f[2] or '0', f[6], f[7])
    emit(log, 'replayed', id, f[4], 0, f[5], nil)
    reply[1] = reply[1] + 1
  else
    reply[#reply + 1] = id
  end
end
if reply[1] > 0 then redis.call('HINCRBY', meta_key, 'replayed', reply[1]) end
return reply
