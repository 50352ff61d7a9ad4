--[[
  include claim_jobs: promote due delayed jobs, then lease ready ones.
  Shared by claim.lua and by complete.lua (complete-and-claim), so a busy
  worker needs about one round trip per job.

  claim_jobs(prefix, k, now, count, lease_ms, token_prefix, worker,
             promote_limit, log, cascade) -> reply table, leased, tokens
    leased, tokens   the ids leased, in reply order, and their lease tokens
  read_record_fields(job_key) / append_record(reply, f, id, token,
    attempt, deadline) read and append one leased job's record; complete.lua
    uses them to answer a resent complete-and-claim with the jobs the first
    call leased. The fields read are at the R_* positions of `f`.
    k              {meta=, delayed=, active=, levels=} key names
    log            the script's event log (includes/events)
    count          most jobs to lease (0 leases none but still reports)
    lease_ms       lease length; deadline = now + lease_ms (server clock)
    token_prefix   caller-chosen random nonce; the i-th job leased in this
                   call gets lease token "<token_prefix>.<i>"
    worker         worker instance id recorded on the job
    promote_limit  most due delayed jobs moved to ready in this call
    cascade        true: a claim that fills `count` and leaves work behind
                   adds a wake token (see below)
  Reply: {paused (0|1), next_due_ms (-1 when no delayed job), now_ms (the
          server clock, so a worker can sleep until next_due without
          trusting its own clock), n, limit, then n records}:
          id, lease_token, attempt, lease_deadline_ms, name, payload,
          version, created_at, priority, k, then k pairs of an optional
          field's name and value: those of max_attempts, timeout_ms,
          backoff, correlation_id, checkpoint and releases that the job
          has (most jobs have none: each value in a reply costs Redis
          about as much as reading a field, so absent ones are not sent)
  A claim that filled `count` and left ready jobs behind adds a wake token
  (see includes/ready), so idle workers cascade awake under a burst.
  A paused queue leases nothing (promotion still runs, so delayed jobs
  reach ready on time). An id whose job hash is missing is dropped with an
  'orphan' event: it has no job to run.
  Flow control (includes/flow) may lease fewer than `count`: `limit` names
  the limit that bound ('rate', 'concurrency', 'hold'; '' when none did).
  When the rate log is full or the queue is held, next_due_ms is moved up
  to the time the next start is allowed, so the worker sleeps until then
  instead of polling.
]]
-- @include "numbers"
-- @include "keys"
-- @include "events"
-- @include "ready"
-- @include "active"
-- @include "flow"
-- @include "groups"

-- Promotes due delayed jobs. Returns the earliest due time when nothing
-- was due (so the caller needs no second look), or nil after promoting.
local function promote_due(prefix, k, now, limit, log)
  local head = redis.call('ZRANGE', k.delayed, '0', '0', 'WITHSCORES')
  if not head[2] then return -1 end
  if tonumber(head[2]) > now then return tonumber(head[2]) end
  local due = redis.call('ZRANGEBYSCORE', k.delayed, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local job_key = key_job(prefix, id)
    local f = redis.call('HMGET', job_key, 'priority', 'group', 'group_max')
    local priority, group, group_max = f[1], f[2], f[3]
    redis.call('ZREM', k.delayed, id)
    if priority then
      redis.call('HSET', job_key, 'state', 'ready')
      make_ready(prefix, k.levels, id, priority, group, group_max)
    else
      emit(log, 'orphan', id, '', 0, '', {'from', 'delayed'})
    end
  end
  return nil
end

local function next_due_ms(delayed_key)
  local first = redis.call('ZRANGE', delayed_key, '0', '0', 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return -1
end

-- The job fields a claim hands to the worker, then `state` (which tells a
-- real job from an orphan id, no hash, in the same read) and `attempt`,
-- at the R_* positions of the reply. The names are written out in the
-- HMGET (not unpacked from a table): it runs once per job leased.
local R_NAME, R_PAYLOAD, R_VERSION, R_MAX_ATTEMPTS, R_TIMEOUT_MS, R_BACKOFF = 1, 2, 3, 4, 5, 6
local R_CORRELATION_ID, R_CHECKPOINT, R_CREATED_AT, R_PRIORITY, R_RELEASES = 7, 8, 9, 10, 11
local R_STATE, R_ATTEMPT = 12, 13
local function read_record_fields(job_key)
  return redis.call('HMGET', job_key, 'name', 'payload', 'version',
    'max_attempts', 'timeout_ms', 'backoff', 'correlation_id', 'checkpoint',
    'created_at', 'priority', 'releases', 'state', 'attempt')
end

-- The optional fields of a record: their position in read_record_fields
-- and the name the reply gives them.
local OPTIONAL_FIELDS = {{R_MAX_ATTEMPTS, 'max_attempts'}, {R_TIMEOUT_MS, 'timeout_ms'},
  {R_BACKOFF, 'backoff'}, {R_CORRELATION_ID, 'correlation_id'}, {R_CHECKPOINT, 'checkpoint'},
  {R_RELEASES, 'releases'}}

-- Appends one leased job's record (see the header) to `reply`, from fields
-- read by read_record_fields.
local function append_record(reply, f, id, token, attempt, deadline)
  local base = #reply
  reply[base + 1] = id
  reply[base + 2] = token
  reply[base + 3] = attempt
  reply[base + 4] = deadline
  reply[base + 5] = f[R_NAME] or ''
  reply[base + 6] = f[R_PAYLOAD] or ''
  reply[base + 7] = f[R_VERSION] or ''
  reply[base + 8] = f[R_CREATED_AT] or ''
  reply[base + 9] = f[R_PRIORITY] or ''
  local k = 0
  if f[R_MAX_ATTEMPTS] or f[R_TIMEOUT_MS] or f[R_BACKOFF] or f[R_CORRELATION_ID] or f[R_CHECKPOINT]
      or f[R_RELEASES] then
    for _, field in ipairs(OPTIONAL_FIELDS) do
      local value = f[field[1]]
      if value then
        reply[base + 11 + 2 * k] = field[2]
        reply[base + 12 + 2 * k] = value
        k = k + 1
      end
    end
  end
  reply[base + 10] = k
end

local function claim_jobs(prefix, k, now, count, lease_ms, token_prefix, worker, promote_limit, log, cascade)
  local next_due = promote_due(prefix, k, now, promote_limit, log) or next_due_ms(k.delayed)
  local flow = read_flow(k.meta)
  if flow.paused then
    return {1, next_due, now, 0, 'paused'}, {}, {}
  end
  local reply = {0, 0, now, 0, ''}
  local wanted = count
  local allowed, limit = admit(prefix, k, flow, now, count)
  count = allowed
  local deadline = now + lease_ms
  local now_text, deadline_text = int_text(now), int_text(deadline)
  local n = 0
  local tokens = {}
  -- Every job leased, for one ZADD to `active` (they share a deadline),
  -- and, by the same index, what the `claimed` entry lists of each
  -- (includes/events; cids only once a job has a correlation id).
  local leased, names, attempts, cids = {}, {}, {}, nil
  -- Orphans (ids without a job hash) do not use up the count: pop again
  -- for the shortfall, a bounded number of times.
  for _ = 1, 4 do
    local ids = pop_ready(prefix, k.levels, count - n, flow.share_every, k.meta)
    for _, id in ipairs(ids) do
      local job_key = key_job(prefix, id)
      local f = read_record_fields(job_key)
      if f[R_STATE] then
        n = n + 1
        local token = token_prefix .. '.' .. int_text(n)
        tokens[n] = token
        -- Garbage in `attempt` reads as 0: a claim must not fail half-way.
        local attempt = (tonumber(f[R_ATTEMPT]) or 0) + 1
        local attempt_text = int_text(attempt)
        redis.call('HSET', job_key, 'state', 'active', 'attempt', attempt_text, 'lease_token', token,
          'worker', worker, 'started_at', now_text, 'outcome', '')
        leased[n] = id
        names[n] = f[R_NAME] or ''
        attempts[n] = attempt_text
        local cid = f[R_CORRELATION_ID]
        if cid and cid ~= '' then
          cids = cids or {}
          cids[n] = cid
        end
        append_record(reply, f, id, token, attempt, deadline)
      else
        emit(log, 'orphan', id, '', 0, '', {'from', 'ready'})
      end
    end
    if n >= count or #ids == 0 then break end
  end
  lease_all(k.active, deadline_text, leased)
  emit_jobs(log, 'claimed', {'worker', worker}, leased, names, attempts, cids)
  local wait_until = note_starts(prefix, flow, now, tokens)
  if limit == 'hold' then
    wait_until = flow.hold_until
  elseif limit == 'rate' and n == 0 then
    wait_until = rate_wait(prefix, flow)
  elseif limit == 'concurrency' and n == count and redis.call('ZCARD', k.levels) > 0 then
    -- Held back with work waiting: the next attempt to end wakes a worker.
    mark_blocked(prefix)
  end
  if wait_until and (next_due < 0 or wait_until < next_due) then next_due = wait_until end
  if cascade and count > 0 and count == wanted and n == count and redis.call('ZCARD', k.levels) > 0 then
    -- Work is left behind: wake another idle worker to take it. Only plain
    -- claims cascade; a worker completing-and-claiming is busy already.
    signal_ready(prefix)
  end
  reply[2] = next_due
  reply[4] = n
  reply[5] = limit
  return reply, leased, tokens
end
