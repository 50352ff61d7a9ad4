--[[
  reap: recover jobs whose lease expired (their worker died or stalled).

  Each job in `active` whose deadline is before the cutoff goes through the
  failure path as a transient failure with message
  'lease expired': the attempt counts, the error is recorded with the worker
  that lost it, and the job is retried (ready at the front after
  retry_delay_ms = 0, else delayed) or, with its attempts spent, dead with
  reason 'attempts_exhausted'. The lost worker's later outcome calls then
  fail with LEASE_LOST, so it cannot corrupt the new attempt.

  The cutoff is the server time of the caller's previous successful reap
  (or now, for its first). After Redis was frozen or down for longer than a
  lease, every lease in flight is past its deadline; reaping against now
  would take the leases of live workers whose heartbeats are queued right
  behind this call. Against the previous pass's time it takes only leases
  that had already expired before the stall; the heartbeats renew the rest,
  and the next pass reaps only the leases of workers that are really gone.

  KEYS[1] meta     hash    counters `reaped`, `retried`, `dead`
  KEYS[2] active   zset    lease deadline (ms) per job id
  KEYS[3] delayed  zset    due time (ms) per job id
  KEYS[4] dead     zset    time of death (ms) per job id
  KEYS[5] levels   zset    non-empty priority levels
  KEYS[6] events   stream  lifecycle events

  ARGV[1] prefix          the queue's key prefix (see enqueue.lua)
  ARGV[2] cap             events stream bound (0 = no events)
  ARGV[3] limit           most expired leases handled in this call
  ARGV[4] retry_delay_ms  delay before a reaped job runs again (0 = now)
  ARGV[5] default_max_attempts  the queue's attempt budget, for a job that
                          did not set its own (stored max_attempts = 0)
  ARGV[6] cutoff_ms       reap leases whose deadline is before this server
                          time (ms); 0 = now. Later than now counts as now.

  Reply: {retried, dead, now_ms, id...}: counts, the server time of this
  call (the caller's next cutoff), then the ids reaped.
  Errors: none.
]]
-- @include "clock"
-- @include "keys"
-- @include "events"
-- @include "ready"
-- @include "flow"
-- @include "groups"
-- @include "finish"
local meta_key, active_key, delayed_key, dead_key, levels_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]
local log = event_log(prefix, KEYS[6], tonumber(ARGV[2]))
local limit = tonumber(ARGV[3])
local retry_delay_ms = tonumber(ARGV[4])
local default_max_attempts = tonumber(ARGV[5])
local cutoff_ms = tonumber(ARGV[6]) or 0

local now = now_ms()
local cutoff = now
if cutoff_ms > 0 and cutoff_ms < now then cutoff = cutoff_ms end
local expired = redis.call('ZRANGEBYSCORE', active_key, '-inf', '(' .. cutoff, 'LIMIT', 0, limit)
local reply = {0, 0, now}
for _, id in ipairs(expired) do
  local job_key = key_job(prefix, id)
  redis.call('ZREM', active_key, id)
  local f = redis.call('HMGET', job_key, 'state', 'attempt', 'max_attempts', 'name',
    'correlation_id', 'priority', 'unique_key', 'unique_mode', 'worker', 'group')
  if f[1] == 'active' then
    local job = {attempt = tonumber(f[2]) or 0, max_attempts = tonumber(f[3]) or 0,
      name = f[4], correlation_id = f[5], priority = f[6] or '0', unique_key = f[7],
      unique_mode = f[8], worker = f[9], group = f[10]}
    record_error(job_key, {attempt = job.attempt, kind = 'transient',
      message = 'lease expired', worker = job.worker or '', at = now})
    if job.max_attempts < 1 then job.max_attempts = default_max_attempts end
    if job.attempt >= job.max_attempts or retry_delay_ms > 0 then
      -- Leaving ready-or-active: the mutex group slot goes to the next job.
      group_leave(prefix, levels_key, job.group)
    end
    if job.attempt >= job.max_attempts then
      bury(prefix, meta_key, dead_key, log, id, job, now, 'attempts_exhausted', 'expired')
      reply[2] = reply[2] + 1
    else
      redis.call('HSET', job_key, 'outcome', 'expired')
      if retry_delay_ms > 0 then
        schedule(prefix, delayed_key, id, now + retry_delay_ms)
        redis.call('HSET', job_key, 'state', 'delayed', 'due_at', now + retry_delay_ms)
      else
        -- Straight back to the front, keeping its mutex group slot.
        redis.call('HSET', job_key, 'state', 'ready')
        push_ready(prefix, levels_key, id, job.priority, true)
      end
      redis.call('HINCRBY', meta_key, 'retried', 1)
      emit(log, 'lease_expired', id, job.name, job.attempt, job.correlation_id,
        {'worker', job.worker or ''})
      reply[1] = reply[1] + 1
    end
    reply[#reply + 1] = id
  else
    -- An id in `active` whose hash is missing or not active: a structure
    -- pointing at nothing runnable. Dropping the entry loses no job.
    emit(log, 'orphan', id, f[4] or '', 0, '', {'from', 'active'})
  end
end
if #expired > 0 then
  redis.call('HINCRBY', meta_key, 'reaped', #expired)
  unblock(prefix)
end
return reply
