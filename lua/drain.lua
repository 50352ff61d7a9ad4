--[[
  drain: remove ready jobs of a queue for good, one bounded batch per call.

  Takes up to `batch` ids from the ready lists (highest level first, oldest
  first within a level, as claims would) and deletes each job whose hash
  says state 'ready', releasing its 'until_finished' unique-key lock and
  emitting a 'drained' event. Delayed, active, completed and dead jobs are
  untouched. An id whose hash is missing (an orphan entry) or says another
  state (a stray duplicate entry; the job lives where its state says) is
  only dropped from the ready list, and counted as skipped. The client calls
  this script until it reports nothing more, so no single call holds Redis
  for long. A drained job of a mutex group hands its slot to the group's
  next waiting job (includes/groups), which a later batch drains in turn.

  KEYS[1] meta    hash    counter `drained` += jobs deleted
  KEYS[2] levels  zset    non-empty priority levels (see includes/ready)
  KEYS[3] events  stream  lifecycle events

  ARGV[1] prefix  the queue's key prefix (see enqueue.lua)
  ARGV[2] cap     events stream bound (0 = no events)
  ARGV[3] batch   most ready ids taken in this call (>= 1)

  Reply: {drained, skipped, more}: jobs deleted, ids dropped without a
  ready job behind them, and 1 when ready lists may still hold ids (call
  again), else 0.
  Errors: none.
]]
-- @include "keys"
-- @include "events"
-- @include "ready"
-- @include "groups"
-- @include "finish"
local meta_key, levels_key = KEYS[1], KEYS[2]
local prefix = ARGV[1]
local log = event_log(prefix, KEYS[3], tonumber(ARGV[2]))
local batch = tonumber(ARGV[3])

local drained, skipped = 0, 0
for _, id in ipairs(pop_ready(prefix, levels_key, batch)) do
  local job_key = key_job(prefix, id)
  local f = redis.call('HMGET', job_key, 'state', 'name', 'attempt', 'correlation_id',
    'unique_key', 'unique_mode', 'group')
  if f[1] == 'ready' then
    -- Its mutex group slot passes to the group's next job, which a later
    -- batch drains in turn.
    group_leave(prefix, levels_key, f[7])
    release_unique(prefix, id, f[5], f[6])
    redis.call('DEL', job_key)
    emit(log, 'drained', id, f[2], f[3] or 0, f[4], nil)
    drained = drained + 1
  else
    skipped = skipped + 1
  end
end
if drained > 0 then redis.call('HINCRBY', meta_key, 'drained', drained) end
local more = 0
if redis.call('ZCARD', levels_key) > 0 then more = 1 end
return {drained, skipped, more}
