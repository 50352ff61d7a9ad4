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
  A job deleted within 30 s of its completion leaves the marker
  <prefix>done:<id> (holding its lease token, expiring 30 s after the
  completion), so a resent completion is still answered 'already'.

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

  Reply: {status, paused, next_due_ms, now_ms, n, records...}: status
  'completed' or 'already' (a resend); the rest is the claim reply of
  includes/claim_jobs ({0, -1, now_ms, 0} when count = 0). A resent
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
-- How long after its completion a resend is still recognized once
-- retention has deleted the job. Short, because it costs a key per job at
-- high throughput; a worker that gets JOB_NOT_FOUND on a resend after this
-- window knows the job is gone and has nothing left to record.
local DONE_MARKER_MS = 30000

local job_key = prefix .. 'job:' .. id
local status, job = fence(job_key, id, token, {completed = true})
local now = now_ms()

-- Deletes a completed job; if it completed recently, leaves a done marker.
local function forget(old_id, old_token, finished_at)
  redis.call('DEL', prefix .. 'job:' .. old_id)
  local left = DONE_MARKER_MS - (now - (tonumber(finished_at) or 0))
  if old_token and left > 0 then
    redis.call('SET', prefix .. 'done:' .. old_id, old_token, 'PX', left)
  end
end

-- Removes up to `limit` of `ids`, never the job completing now: several
-- completions in one millisecond tie on score and sort by id.
local function remove_completed(ids, limit)
  for _, old in ipairs(ids) do
    if limit <= 0 then return end
    if old ~= id then
      local f = redis.call('HMGET', prefix .. 'job:' .. old, 'lease_token', 'finished_at')
      forget(old, f[1], f[2])
      redis.call('ZREM', completed_key, old)
      limit = limit - 1
    end
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
    forget(id, token, now)
  else
    redis.call('ZADD', completed_key, now, id)
    local excess = redis.call('ZCARD', completed_key) - keep_last
    if excess > 0 then
      local batch = math.min(excess, TRIM_BATCH)
      remove_completed(redis.call('ZRANGE', completed_key, 0, batch), batch)
    end
    if max_age_ms > 0 then
      remove_completed(redis.call('ZRANGEBYSCORE', completed_key, '-inf', now - max_age_ms,
        'LIMIT', 0, TRIM_BATCH), TRIM_BATCH)
    end
  end
else
  status = 'already'
end
if status == 'ok' then status = 'completed' end

local CLAIM_RECORD = 15
local claimed = {0, -1, now, 0}
if count > 0 and status == 'completed' then
  claimed = claim_jobs(prefix, k, now, count, tonumber(ARGV[9]), ARGV[10], ARGV[11],
    tonumber(ARGV[12]), cap)
  if keep_last ~= 0 and claimed[4] > 0 then
    local handed = {ARGV[10]}
    for i = 1, claimed[4] do handed[#handed + 1] = claimed[5 + (i - 1) * CLAIM_RECORD] end
    redis.call('HSET', job_key, 'next_claim', table.concat(handed, ' '))
  end
elseif count > 0 then
  -- A resend: hand back what the first call leased, if still held by it.
  local handed = redis.call('HGET', job_key, 'next_claim')
  if handed then
    local words = {}
    for word in string.gmatch(handed, '%S+') do words[#words + 1] = word end
    local n = 0
    for i = 2, #words do
      local next_id = words[i]
      local next_key = prefix .. 'job:' .. next_id
      local token = words[1] .. '.' .. (i - 1)
      local f = redis.call('HMGET', next_key, 'state', 'lease_token', 'attempt')
      local deadline = redis.call('ZSCORE', k.active, next_id)
      if f[1] == 'active' and f[2] == token and deadline then
        append_record(claimed, next_key, next_id, token, tonumber(f[3]), tonumber(deadline))
        n = n + 1
      end
    end
    claimed[4] = n
  end
end
table.insert(claimed, 1, status)
return claimed
