--[[
  release: give a leased job back without spending an attempt.

  Used by graceful shutdown (the job goes to the front of its priority level,
  so it runs next) and by a worker that cannot run the job yet, e.g. a payload
  version newer than its handler (it goes back delayed by delay_ms, and the
  `releases` counter lets the worker bound such returns).
  Ownership: only the current lease token may release; a resend after a lost
  reply succeeds again and changes nothing.

  KEYS[1] meta     hash    counter `released`
  KEYS[2] active   zset    lease deadlines
  KEYS[3] delayed  zset    due time (ms) per job id
  KEYS[4] levels   zset    non-empty priority levels
  KEYS[5] events   stream  lifecycle events

  ARGV[1] prefix    the queue's key prefix (see enqueue.lua)
  ARGV[2] cap       events stream bound (0 = no events)
  ARGV[3] id        job id
  ARGV[4] token     the lease token from claim
  ARGV[5] delay_ms  0 = front of the ready line now; > 0 = delayed by it

  Reply: {status, releases}: status 'released' or 'already' (a resend);
  releases = how many times this job has been released in all.
  Errors: JOB_NOT_FOUND, LEASE_LOST (see complete.lua).
]]
-- @include "clock"
-- @include "fields"
-- @include "events"
-- @include "ready"
-- @include "fence"
local meta_key, active_key, delayed_key, levels_key, events_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]
local cap = tonumber(ARGV[2])
local id, token, delay_ms = ARGV[3], ARGV[4], tonumber(ARGV[5])

local job_key = prefix .. 'job:' .. id
local status, job = fence(job_key, id, token, {released = true})
if status == 'already' then
  return {'already', tonumber(redis.call('HGET', job_key, 'releases')) or 0}
end

local now = now_ms()
redis.call('ZREM', active_key, id)
bump(job_key, 'attempt', -1)
local releases = bump(job_key, 'releases', 1)
redis.call('HSET', job_key, 'outcome', 'released')
if delay_ms > 0 then
  local due = now + delay_ms
  schedule(prefix, delayed_key, id, due)
  redis.call('HSET', job_key, 'state', 'delayed', 'due_at', due)
else
  redis.call('HSET', job_key, 'state', 'ready')
  push_ready(prefix, levels_key, id, job.priority, true)
end
redis.call('HINCRBY', meta_key, 'released', 1)
emit(events_key, cap, 'released', id, job.name, job.attempt - 1, job.correlation_id,
  {'delay_ms', delay_ms})
return {'released', releases}
