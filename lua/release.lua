--[[
  release: give a leased job back without spending an attempt.

  Used by graceful shutdown (the job goes to the front of its priority level,
  so it runs next, keeping its mutex group slot), by a worker that cannot
  run the job yet, e.g. a payload version newer than its handler (it goes
  back delayed by delay_ms, and the `releases` counter lets the worker
  bound such returns), and by a handler that was rate limited by its
  upstream (reason 'rate_limited': delayed by the wait it was told, counted
  in `rate_limited` instead of `releases`, and with hold_ms > 0 the whole
  queue leases nothing until then: meta `hold_until`, see includes/flow).
  Ownership: only the current lease token may release; a resend after a lost
  reply succeeds again and changes nothing.

  KEYS[1] meta     hash    counter `released`; `hold_until`
  KEYS[2] active   zset    lease deadlines
  KEYS[3] delayed  zset    due time (ms) per job id
  KEYS[4] levels   zset    non-empty priority levels
  KEYS[5] events   stream  lifecycle events

  ARGV[1] prefix    the queue's key prefix (see enqueue.lua)
  ARGV[2] cap       events stream bound (0 = no events)
  ARGV[3] id        job id
  ARGV[4] token     the lease token from claim
  ARGV[5] delay_ms  0 = front of the ready line now; > 0 = delayed by it
  ARGV[6] reason    'release' or 'rate_limited' (recorded on the job as
                    `released_reason` and in the event)
  ARGV[7] hold_ms   > 0: no job of the queue is leased for this long

  Reply: {status, releases}: status 'released' or 'already' (a resend);
  releases = how many times this job has been released, rate-limited
  returns not counted.
  Errors: JOB_NOT_FOUND, LEASE_LOST (see complete.lua).
]]
-- @include "clock"
-- @include "keys"
-- @include "fields"
-- @include "events"
-- @include "ready"
-- @include "flow"
-- @include "groups"
-- @include "fence"
local meta_key, active_key, delayed_key, levels_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix = ARGV[1]
local log = event_log(prefix, KEYS[5], tonumber(ARGV[2]))
local id, token, delay_ms = ARGV[3], ARGV[4], tonumber(ARGV[5])
local reason, hold_ms = ARGV[6], tonumber(ARGV[7])

local job_key = key_job(prefix, id)
local status, job = fence(prefix, job_key, id, token, {released = true})
if status == 'already' then
  return {'already', tonumber(redis.call('HGET', job_key, 'releases')) or 0}
end

local now = now_ms()
redis.call('ZREM', active_key, id)
bump(job_key, 'attempt', -1)
local releases
if reason == 'rate_limited' then
  bump(job_key, 'rate_limited', 1)
  releases = tonumber(redis.call('HGET', job_key, 'releases')) or 0
else
  releases = bump(job_key, 'releases', 1)
end
redis.call('HSET', job_key, 'outcome', 'released', 'released_reason', reason)
if hold_ms > 0 then
  local until_ms = now + hold_ms
  local held = tonumber(redis.call('HGET', meta_key, 'hold_until')) or 0
  if until_ms > held then redis.call('HSET', meta_key, 'hold_until', until_ms) end
end
if delay_ms > 0 then
  group_leave(prefix, levels_key, job.group)
  local due = now + delay_ms
  schedule(prefix, delayed_key, id, due)
  redis.call('HSET', job_key, 'state', 'delayed', 'due_at', due)
else
  redis.call('HSET', job_key, 'state', 'ready')
  push_ready(prefix, levels_key, id, job.priority, true)
end
redis.call('HINCRBY', meta_key, 'released', 1)
unblock(prefix)
emit(log, 'released', id, job.name, job.attempt - 1, job.correlation_id,
  {'delay_ms', delay_ms, 'reason', reason})
return {'released', releases}
