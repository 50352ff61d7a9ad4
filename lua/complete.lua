--[[
  complete: acknowledge the success of one or more jobs of a queue,
  optionally leasing their successors in the same call (complete-and-claim:
  a busy worker needs no round trip of its own to find more work).

  Batches: the client merges completions of one queue that are ready at
  the same time into one call (crates/taskline/src/coalesce.rs), so a busy
  worker pays the fixed cost of a script call (the call itself, the clock,
  the flow settings, the ready levels, the counters) once per batch rather
  than once per job. Each job is still fenced on its own: one job's lost
  lease is answered for that job and the others go ahead.

  Ownership: only the holder of a job's current lease token may complete
  it. Resending the same completion after a lost reply succeeds again and
  records nothing twice, whatever batch the resend travels in.

  Retention: a job enters `completed` (score = finish time). Whenever the
  queue's `completed` counter passes a multiple of TRIM_SLACK, the set is
  trimmed back to keep_last, the oldest first, in one batch (their hashes
  with one DEL), so trimming costs a fraction of a command per job; the set
  holds at most keep_last + TRIM_SLACK - 1 jobs plus one batch. Whenever the
  counter passes a multiple of AGE_CHECK_EVERY (and with every trim), jobs
  older than max_age_ms are removed too; the worker's maintenance applies
  both continuously as well. keep_last = 0 deletes a job at once and leaves
  the marker <prefix>done:<id> (its lease token, for 30 s) so that a resent
  completion is still answered 'already'. Once retention has removed a job,
  a resend gets 'not_found': the job is finished, nothing is left to record.

  KEYS[1] meta       hash    counter `completed` += jobs completed; `paused`
                             and the flow-control settings (includes/flow)
  KEYS[2] delayed    zset    (for the claim part)
  KEYS[3] active     zset    lease deadlines
  KEYS[4] levels     zset    non-empty priority levels (claim part)
  KEYS[5] events     stream  lifecycle events
  KEYS[6] completed  zset    finish time (ms) per job id

  ARGV[1] prefix         the queue's key prefix (see enqueue.lua)
  ARGV[2] cap            events stream bound (0 = no events)
  ARGV[3] keep_last      completed jobs kept (>= 0)
  ARGV[4] max_age_ms     completed jobs older than this are removed (0 = no
                         age limit)
  ARGV[5] lease_ms       } claim arguments, as in claim.lua; the i-th job
  ARGV[6] token_prefix   } leased by this call gets the lease token
  ARGV[7] worker         } "<token_prefix>.<i>"
  ARGV[8] promote_limit  }
  ARGV[9] n              completions that follow
  then n groups of 4 values, one per completion:
    id       job id
    token    the lease token from claim
    result   JSON result text, or "" for none
    want     successors to lease for this completion (0 = plain complete)

  Reply: {paused, next_due_ms, now_ms, f, limit, f records, b, b records,
  then n pairs: status, k}:
    paused .. limit, and the f records: the claim part's reply
            (includes/claim_jobs; {0, -1, now, 0, ''} when nothing was
            wanted): the successors leased now
    b records  successors handed back to resends (see below)
    status  one per completion, in order: 'completed', 'already' (a
            resend: changed nothing), 'lease_lost' (the token does not hold
            the lease: expired and reaped, released, or another attempt's
            token) or 'not_found' (no such job)
    k       how many successors are this completion's (at most `want`): a
            'completed' one takes the next k of the f records, an 'already'
            one the next k of the b records
  A resent complete-and-claim leases nothing new: it hands back the jobs
  the first call leased for that completion and that are still held under
  their tokens (recorded in the completed job's `next_claim` field as
  "token id" pairs), so a lost reply strands no job.
  Errors: none for a job's state; each completion has its own status.
]]
-- @include "clock"
-- @include "numbers"
-- @include "keys"
-- @include "events"
-- @include "ready"
-- @include "flow"
-- @include "groups"
-- @include "fence"
-- @include "finish"
-- @include "claim_jobs"
local k = {meta = KEYS[1], delayed = KEYS[2], active = KEYS[3], levels = KEYS[4]}
local completed_key = KEYS[6]
local prefix = ARGV[1]
local log = event_log(prefix, KEYS[5], tonumber(ARGV[2]))
local keep_last, max_age_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local lease_ms, token_prefix, worker = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local promote_limit = tonumber(ARGV[8])
local n = tonumber(ARGV[9])
local STRIDE = 4
-- Completions between two trims, and the most jobs removed by one call.
local TRIM_SLACK = 50
local TRIM_BATCH = 500
-- One completion in this many also removes jobs past max_age_ms.
local AGE_CHECK_EVERY = 16
-- How long a resend is recognized after keep_last = 0 deleted the job.
local DONE_MARKER_MS = 30000
local COMPLETED = {completed = true}

local now = now_ms()
local now_text = int_text(now)

-- Fence every job first: nothing is written for a job that fails its
-- fence, and the claim part below sees the freed slots.
local entries = {}
-- The jobs that pass their fence, and by the same index what the
-- `completed` entry lists of each (includes/events).
local done, done_ids, done_names, done_attempts, done_cids = 0, {}, {}, {}, nil
local seen = {}
local wanted = 0
for j = 0, n - 1 do
  local a = 9 + j * STRIDE
  local id = ARGV[a + 1]
  -- Every field named here, so the table is sized once, not grown.
  local e = {id = id, token = ARGV[a + 2], result = ARGV[a + 3],
    want = tonumber(ARGV[a + 4]) or 0, job_key = key_job(prefix, id), status = false,
    f = NO_FIELDS, duplicate = false}
  if seen[e.id] then
    -- The same job twice in one batch: the first entry decides.
    e.status = 'already'
    e.f = NO_FIELDS
    e.duplicate = true
  else
    seen[e.id] = true
    -- e.f: the fence's HMGET reply, read through F_* (includes/fence).
    e.status, e.f = check_fence_fields(prefix, e.job_key, e.id, e.token, COMPLETED, COMPLETION_FIELDS)
  end
  if e.status == 'ok' then
    done = done + 1
    done_ids[done] = e.id
    done_names[done] = e.f[F_NAME] or ''
    done_attempts[done] = e.f[F_ATTEMPT] or '0'
    local cid = e.f[F_CORRELATION_ID]
    if cid and cid ~= '' then
      done_cids = done_cids or {}
      done_cids[done] = cid
    end
    wanted = wanted + e.want
  end
  entries[#entries + 1] = e
end

-- Leave `active` and the mutex groups first, so that the claim part sees
-- these slots as free (global concurrency, a group's next job).
if done > 0 then
  redis.call('ZREM', k.active, unpack(done_ids))
  for _, e in ipairs(entries) do
    local group = e.f[F_GROUP]
    if e.status == 'ok' and group then group_leave(prefix, k.levels, group) end
  end
end

-- Lease the successors before writing the completions, so that each is
-- one HSET that also remembers what this call handed out (for a resend).
local claimed, leased, tokens = {0, -1, now, 0, ''}, {}, {}
if wanted > 0 then
  claimed, leased, tokens = claim_jobs(prefix, k, now, wanted, lease_ms, token_prefix, worker,
    promote_limit, log, false)
end
local handed_out = 0
-- Records handed back to resends, and one status, k pair per completion.
local back, back_count = {}, 0
local statuses = {}

-- A resend: hands back what the first call leased for this completion,
-- where still held by it, to `back`. Returns how many records it added.
local function hand_back(e)
  local handed = redis.call('HGET', e.job_key, 'next_claim')
  if not handed then return 0 end
  local words = {}
  for word in string.gmatch(handed, '%S+') do words[#words + 1] = word end
  local count = 0
  for w = 1, #words - 1, 2 do
    local next_token, next_id = words[w], words[w + 1]
    local next_key = key_job(prefix, next_id)
    local f = read_record_fields(next_key)
    local held_by = redis.call('HGET', next_key, 'lease_token')
    local deadline = redis.call('ZSCORE', k.active, next_id)
    if f[R_STATE] == 'active' and held_by == next_token and deadline then
      append_record(back, f, next_id, next_token, tonumber(f[R_ATTEMPT]), tonumber(deadline))
      count = count + 1
    end
  end
  return count
end

-- The arguments of each completion's HSET: one table for the whole batch;
-- only the optional pairs after the first six change.
local hset_args = {'state', 'completed', 'outcome', 'completed', 'finished_at', now_text}
local completed_now = 0
for _, e in ipairs(entries) do
  if e.status == 'ok' then
    completed_now = completed_now + 1
    local give = claimed[4] - handed_out
    if e.want < give then give = e.want end
    local len = 6
    if e.result ~= '' then
      hset_args[len + 1] = 'result'
      hset_args[len + 2] = e.result
      len = len + 2
    end
    if give > 0 and keep_last ~= 0 then
      local first = handed_out + 1
      local handed = tokens[first] .. ' ' .. leased[first]
      for i = first + 1, handed_out + give do
        handed = handed .. ' ' .. tokens[i] .. ' ' .. leased[i]
      end
      hset_args[len + 1] = 'next_claim'
      hset_args[len + 2] = handed
      len = len + 2
    end
    redis.call('HSET', e.job_key, unpack(hset_args, 1, len))
    local f = e.f
    if f[F_UNIQUE_KEY] then release_unique(prefix, e.id, f[F_UNIQUE_KEY], f[F_UNIQUE_MODE]) end
    statuses[#statuses + 1] = 'completed'
    statuses[#statuses + 1] = give
    handed_out = handed_out + give
  elseif e.status == 'already' then
    local count = 0
    if e.want > 0 and not e.duplicate then count = hand_back(e) end
    back_count = back_count + count
    statuses[#statuses + 1] = 'already'
    statuses[#statuses + 1] = count
  else
    statuses[#statuses + 1] = e.status
    statuses[#statuses + 1] = 0
  end
end

-- One `completed` entry for the jobs of this call.
emit_jobs(log, 'completed', nil, done_ids, done_names, done_attempts, done_cids)

if completed_now > 0 then
  local completions = redis.call('HINCRBY', k.meta, 'completed', int_text(completed_now))
  local before = completions - completed_now
  if claimed[4] < completed_now then
    -- Some slots are not refilled by the claim part: let a worker held
    -- back by global concurrency take them.
    unblock(prefix)
  end
  if keep_last == 0 then
    for _, e in ipairs(entries) do
      if e.status == 'ok' then
        redis.call('DEL', e.job_key)
        redis.call('SET', key_done(prefix, e.id), e.token, 'PX', DONE_MARKER_MS)
      end
    end
  else
    zadd_all(completed_key, now_text, done_ids)
    -- Never remove a job completed by this call (completions in one
    -- millisecond tie on score and sort by id).
    local function remove_completed(ids)
      local keys, old_ids = {}, {}
      for _, old in ipairs(ids) do
        if not seen[old] then
          keys[#keys + 1] = key_job(prefix, old)
          old_ids[#old_ids + 1] = old
        end
      end
      if #keys > 0 then
        redis.call('DEL', unpack(keys))
        redis.call('ZREM', completed_key, unpack(old_ids))
      end
    end
    local trimmed = false
    if math.floor(completions / TRIM_SLACK) > math.floor(before / TRIM_SLACK) then
      local excess = redis.call('ZCARD', completed_key) - keep_last
      if excess > 0 then
        remove_completed(redis.call('ZRANGE', completed_key, '0', int_text(math.min(excess, TRIM_BATCH) - 1)))
        trimmed = true
      end
    end
    if max_age_ms > 0 and (trimmed or
        math.floor(completions / AGE_CHECK_EVERY) > math.floor(before / AGE_CHECK_EVERY)) then
      remove_completed(redis.call('ZRANGEBYSCORE', completed_key, '-inf', now - max_age_ms,
        'LIMIT', 0, TRIM_BATCH))
    end
  end
end

-- The claim part's reply (header and fresh records) heads the reply as it
-- is: the common case copies no record.
local reply = claimed
local len = #reply + 1
reply[len] = back_count
for _, v in ipairs(back) do
  len = len + 1
  reply[len] = v
end
for _, v in ipairs(statuses) do
  len = len + 1
  reply[len] = v
end
return reply
