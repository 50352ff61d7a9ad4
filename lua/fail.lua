--[[
  fail: record a failed attempt and decide the job's next place.

  The attempt's error (kind, message, worker, time, attempt) is appended to
  the job's history and announced by a 'failed' event. Then:
    transient, attempts left   -> delayed, due now + retry_delay_ms (the
                                  backoff with jitter the caller computed)
    permanent                  -> dead, reason as given ('permanent' when "")
    transient, attempts spent  -> dead, reason 'attempts_exhausted'
  Ownership: only the current lease token may fail a job; resending the same
  failure after a lost reply returns the first outcome and records nothing.

  KEYS[1] meta     hash    counters `retried`, `dead`
  KEYS[2] active   zset    lease deadlines
  KEYS[3] delayed  zset    due time (ms) per job id
  KEYS[4] dead     zset    time of death (ms) per job id; never trimmed
  KEYS[5] events   stream  lifecycle events
  KEYS[6] levels   zset    non-empty priority levels (a mutex group's next
                           job may become ready: includes/groups)

  ARGV[1] prefix          the queue's key prefix (see enqueue.lua)
  ARGV[2] cap             events stream bound (0 = no events)
  ARGV[3] id              job id
  ARGV[4] token           the lease token from claim
  ARGV[5] kind            'transient' or 'permanent'
  ARGV[6] reason          for a permanent failure, a short reason code
                          (e.g. 'unknown_job', 'invalid_payload'); "" means
                          'permanent'
  ARGV[7] message         the error text (the client bounds its length)
  ARGV[8] retry_delay_ms  delay before the retry of a transient failure
  ARGV[9] default_max_attempts  the queue's attempt budget, for a job that
                          did not set its own (stored max_attempts = 0)

  Reply: {outcome, at_ms, reason}: outcome 'retrying' (at_ms = due time) or
  'dead' (at_ms = time of death, reason = why). A resend replies the same
  shape from the job's stored fields.
  Errors: JOB_NOT_FOUND, LEASE_LOST (see complete.lua).
]]
-- @include "clock"
-- @include "keys"
-- @include "events"
-- @include "ready"
-- @include "flow"
-- @include "groups"
-- @include "fence"
-- @include "finish"
local meta_key, active_key, delayed_key, dead_key, levels_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6]
local prefix = ARGV[1]
local log = event_log(prefix, KEYS[5], tonumber(ARGV[2]))
local id, token, kind, reason, message = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local retry_delay_ms = tonumber(ARGV[8])
local default_max_attempts = tonumber(ARGV[9])

local job_key = key_job(prefix, id)
local status, job = fence(prefix, job_key, id, token, {retrying = true, dead = true})
if status == 'already' then
  if job.outcome == 'dead' then
    local f = redis.call('HMGET', job_key, 'died_at', 'dead_reason')
    return {'dead', tonumber(f[1]), f[2]}
  end
  return {'retrying', tonumber(redis.call('HGET', job_key, 'due_at')), ''}
end

local now = now_ms()
redis.call('ZREM', active_key, id)
group_leave(prefix, levels_key, job.group)
unblock(prefix)
record_error(job_key, {attempt = job.attempt, kind = kind, message = message,
  worker = job.worker or '', at = now})

emit(log, 'failed', id, job.name, job.attempt, job.correlation_id,
  {'kind', kind, 'error', message})
if job.max_attempts < 1 then job.max_attempts = default_max_attempts end
if kind == 'permanent' or job.attempt >= job.max_attempts then
  if kind == 'permanent' then
    if reason == '' then reason = 'permanent' end
  else
    reason = 'attempts_exhausted'
  end
  bury(prefix, meta_key, dead_key, log, id, job, now, reason, 'dead')
  return {'dead', now, reason}
end

local due = now + retry_delay_ms
schedule(prefix, delayed_key, id, due)
redis.call('HSET', job_key, 'state', 'delayed', 'outcome', 'retrying', 'due_at', due)
redis.call('HINCRBY', meta_key, 'retried', 1)
emit(log, 'retrying', id, job.name, job.attempt, job.correlation_id,
  {'due_at', due, 'error', message})
return {'retrying', due, ''}
