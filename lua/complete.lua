--[[
  complete: acknowledge a job's success, optionally leasing the next jobs
  in the same call (complete-and-claim: one round trip per job for a busy
  worker).

  Ownership: only the holder of the job's current lease token may complete
  it. Resending the same completion after a lost reply succeeds again and
  records nothing twice.

  Retention: the job enters `completed` (score = finish time). Every
  TRIM_SLACK-th completion of the queue (by its `completed` counter) trims
  the set back to keep_last, the oldest first, in one batch (their hashes
  with one DEL), so trimming costs a fraction of a command per job; the set
  holds at most keep_last + TRIM_SLACK - 1 jobs. Every
  AGE_CHECK_EVERY completions (and with every batch), jobs older than
  max_age_ms are removed too; the worker's maintenance applies both
  continuously as well. keep_last = 0 deletes the job at once and leaves the
  marker <prefix>done:<id> (its lease token, for 30 s) so that a resent
  completion is still answered 'already'. Once retention has removed a job,
  a resend gets JOB_NOT_FOUND: the job is finished, nothing is left to
  record.

  KEYS[1] meta       hash    counter `completed` += 1; `paused` and the
                             flow-control settings (includes/flow)
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

  Reply: {status, paused, next_due_ms, now_ms, n, limit, records...}:
  status 'completed' or 'already' (a resend); the rest is the claim reply
  of includes/claim_jobs ({0, -1, now_ms, 0, ''} when count = 0). A resent
  complete-and-claim leases nothing new: it returns the jobs the first call
  leased that are still held under its tokens (recorded in the completed
  job's `next_claim` field), so a lost reply strands no job.
  Errors: JOB_NOT_FOUND (no such job), LEASE_LOST (the token does not hold
  the lease: expired and reaped, released, or another attempt's token).
]]
-- @include "clock"
-- @include "fields"
-- @include "events"
-- @include "ready"
-- @include "flow"
-- @include "groups"
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
-- Completions between two trims, and the most jobs removed by one call.
local TRIM_SLACK = 50
local TRIM_BATCH = 500
-- One completion in this many also removes jobs past max_age_ms.
local AGE_CHECK_EVERY = 16
-- How long a resend is recognized after keep_last = 0 deleted the job.
local DONE_MARKER_MS = 30000

local job_key = prefix .. 'job:' .. id
local status, job = fence(job_key, id, token, {completed = true})
local now = now_ms()

-- Removes completed jobs: their ids from `completed`, their hashes in one
-- DEL. Never the job completing now (completions in one millisecond tie on
-- score and sort by id).
local function remove_completed(ids)
  local keys, members = {}, {}
  for _, old in ipairs(ids) do
    if old ~= id then
      keys[#keys + 1] = prefix .. 'job:' .. old
      members[#members + 1] = old
    end
  end
  if #keys > 0 then
    redis.call('DEL', unpack(keys))
    redis.call('ZREM', completed_key, unpack(members))
  end
end

local CLAIM_RECORD = 15
local claimed = {0, -1, now, 0, ''}
if status == 'ok' then
  status = 'completed'
  -- Leave `active` and the mutex group first, so that the claim part sees
  -- this job's slot as free (global concurrency, the group's next job).
  redis.call('ZREM', k.active, id)
  group_leave(prefix, k.levels, job.group)
  -- Lease the successors before writing the completion, so that it is one
  -- HSET that also remembers what this call handed out (for a resend).
  if count > 0 then
    claimed = claim_jobs(prefix, k, now, count, tonumber(ARGV[9]), ARGV[10], ARGV[11],
      tonumber(ARGV[12]), cap, false)
  end
  local fields = {'state', 'completed', 'outcome', 'completed', 'finished_at', now}
  if result ~= '' then
    fields[#fields + 1] = 'result'
    fields[#fields + 1] = result
  end
  if claimed[4] > 0 and keep_last ~= 0 then
    local handed = {ARGV[10]}
    for i = 1, claimed[4] do handed[#handed + 1] = claimed[6 + (i - 1) * CLAIM_RECORD] end
    fields[#fields + 1] = 'next_claim'
    fields[#fields + 1] = table.concat(handed, ' ')
  end
  redis.call('HSET', job_key, unpack(fields))
  local completions = redis.call('HINCRBY', k.meta, 'completed', 1)
  release_unique(prefix, id, job)
  if claimed[4] < count or count == 0 then
    -- This job's slot is not refilled by the claim part: let a worker held
    -- back by global concurrency take it.
    unblock(prefix)
  end
  emit(k.events, cap, 'completed', id, job.name, job.attempt, job.correlation_id, nil)
  if keep_last == 0 then
    redis.call('DEL', job_key)
    redis.call('SET', prefix .. 'done:' .. id, token, 'PX', DONE_MARKER_MS)
  else
    redis.call('ZADD', completed_key, now, id)
    local trimmed = false
    if completions % TRIM_SLACK == 0 then
      local excess = redis.call('ZCARD', completed_key) - keep_last
      if excess > 0 then
        remove_completed(redis.call('ZRANGE', completed_key, 0, math.min(excess, TRIM_BATCH) - 1))
        trimmed = true
      end
    end
    if max_age_ms > 0 and (trimmed or completions % AGE_CHECK_EVERY == 0) then
      remove_completed(redis.call('ZRANGEBYSCORE', completed_key, '-inf', now - max_age_ms,
        'LIMIT', 0, TRIM_BATCH))
    end
  end
else
  status = 'already'
  if count > 0 then
    -- A resend: hand back what the first call leased, if still held by it.
    local handed = redis.call('HGET', job_key, 'next_claim')
    if handed then
      local words = {}
      for word in string.gmatch(handed, '%S+') do words[#words + 1] = word end
      local n = 0
      for i = 2, #words do
        local next_id = words[i]
        local next_key = prefix .. 'job:' .. next_id
        local next_token = words[1] .. '.' .. (i - 1)
        local f = read_record_fields(next_key)
        local held = redis.call('HMGET', next_key, 'lease_token', 'attempt')
        local deadline = redis.call('ZSCORE', k.active, next_id)
        if f[12] == 'active' and held[1] == next_token and deadline then
          append_record(claimed, f, next_id, next_token, tonumber(held[2]), tonumber(deadline))
          n = n + 1
        end
      end
      claimed[4] = n
    end
  end
end
table.insert(claimed, 1, status)
return claimed
