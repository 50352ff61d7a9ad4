--[[
  complete: acknowledge a job's success, optionally leasing the next jobs
  in the same call (complete-and-claim: one round trip per job for a busy
  worker).

  Ownership: only the holder of the job's current lease token may complete
  it. Resending the same completion after a lost reply succeeds again and
  records nothing twice.

  Retention: the job enters `completed` (score = finish time) and the set is
  trimmed to keep_last entries and max_age_ms, at most 100 removals per
  call; removed jobs lose their hash. keep_last = 0 deletes the job at once.

  KEYS[1] meta       hash    counter `completed` += 1; `paused`
  KEYS[2] delayed    zset    (for the claim part)
  KEYS[3] active     zset    lease deadlines
  KEYS[4] levels     zset    non-empty priority levels (claim part)
  KEYS[5] events     stream  lifecycle events
  KEYS[6] completed  zset    finish time (ms) per job id

  ARGV[1]  prefix         the queue's key prefix (see enqueue.lua)
  ARGV[2]  cap            events stream bound (0 = no events)
  ARGV[3]  id             job id
  ARGV[4]  token          the lease token from claim
  ARGV[5]  result         JSON result text, or "" for none
  ARGV[6]  keep_last      completed jobs kept (>= 0)
  ARGV[7]  max_age_ms     completed jobs older than this are removed (0 = no
                          age limit)
  ARGV[8]  count          jobs to claim afterwards (0 = plain complete)
  ARGV[9]  lease_ms       } claim arguments, as in claim.lua; ignored when
  ARGV[10] token_prefix   } count = 0
  ARGV[11] worker         }
  ARGV[12] promote_limit  }

  Reply: {status, paused, next_due_ms, n, records...}: status 'completed' or
  'already' (a resend); the rest is the claim reply of includes/claim_jobs
  ({0, -1, 0} when count = 0).
  Errors: JOB_NOT_FOUND (no such job), LEASE_LOST (the token does not hold
  the lease: expired and reaped, released, or another attempt's token).
]]
-- @include "clock"
-- @include "events"
-- @include "ready"
-- @include "fence"
-- @include "finish"
-- @include "claim_jobs"
local k = {meta = KEYS[1], delayed = KEYS[2], active = KEYS[3], levels = KEYS[4],
  events = KEYS[5]}
local completed_key = KEYS[6]
local prefix = ARGV[1]
local cap = tonumber(ARGV[2])
local id, token, result = ARGV[3], ARGV[4], ARGV[5]
local keep_last, max_age_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
local count = tonumber(ARGV[8])
local TRIM_BATCH = 100

local job_key = prefix .. 'job:' .. id
local status, job = fence(job_key, id, token, {completed = true})
local now = now_ms()

local function remove_completed(ids)
  for _, old in ipairs(ids) do
    redis.call('DEL', prefix .. 'job:' .. old)
    redis.call('ZREM', completed_key, old)
  end
end

if status == 'ok' then
  redis.call('ZREM', k.active, id)
  redis.call('HSET', job_key, 'state', 'completed', 'outcome', 'completed',
    'finished_at', now)
  if result ~= '' then redis.call('HSET', job_key, 'result', result) end
  redis.call('HINCRBY', k.meta, 'completed', 1)
  release_unique(prefix, id, job)
  emit(k.events, cap, 'completed', id, job.name, job.attempt, job.correlation_id, nil)
  if keep_last == 0 then
    redis.call('DEL', job_key)
  else
    redis.call('ZADD', completed_key, now, id)
    local excess = redis.call('ZCARD', completed_key) - keep_last
    if excess > 0 then
      remove_completed(redis.call('ZRANGE', completed_key, 0, math.min(excess, TRIM_BATCH) - 1))
    end
    if max_age_ms > 0 then
      remove_completed(redis.call('ZRANGEBYSCORE', completed_key, '-inf', now - max_age_ms,
        'LIMIT', 0, TRIM_BATCH))
    end
  end
else
  status = 'already'
end
if status == 'ok' then status = 'completed' end

local claimed = {0, -1, 0}
if count > 0 then
  claimed = claim_jobs(prefix, k, now, count, tonumber(ARGV[9]), ARGV[10], ARGV[11],
    tonumber(ARGV[12]), cap)
end
table.insert(claimed, 1, status)
return claimed
