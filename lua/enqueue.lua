--[[
  enqueue: add one or more jobs to a queue, atomically.

  Each job is created ready (at the back of its priority level) or, when it
  is due later, delayed. A job whose id already exists, or whose unique key
  is held by another job, is not written: its slot in the reply names the
  existing job instead, so a duplicate is visible to the caller.

  KEYS[1] meta      hash    queue metadata; counter `enqueued` += created
  KEYS[2] delayed   zset    scheduled jobs, score = due time (ms)
  KEYS[3] levels    zset    non-empty priority levels (see includes/ready)
  KEYS[4] events    stream  lifecycle events

  ARGV[1] prefix    the queue's key prefix "<prefix>:{<queue>}:"; job,
                    ready-list and unique-lock keys are derived from it and
                    so share the queue's hash slot
  ARGV[2] cap       events stream bound (0 = no events)
  ARGV[3] n         number of jobs that follow
  then n groups, one per job: 7 values, then 2 per option:
    id              job id (string, caller-chosen or UUIDv7)
    fresh           '1' when the client generated the id (a UUIDv7: it
                    cannot name an existing job, so the existence check is
                    skipped), '0' for a caller-chosen id
    name            job name, routes to a handler
    payload         JSON text
    version         payload version (integer)
    priority        level 0..9, higher served first
    k               options that follow, as k name, value pairs; an option
                    left out has its default, and only the options set
                    travel (most jobs set none):
      delay_ms        run after now + delay_ms (default 0 = now); ignored
                      if run_at_ms is set
      run_at_ms       absolute due time, Unix ms on the server's clock
      max_attempts    attempts before the job is dead (>= 1); default: the
                      queue's, applied when failures are recorded
      timeout_ms      per-attempt timeout the worker applies
      backoff         JSON backoff override (default: the queue's)
      unique_key      a deduplication key
      unique_ttl_ms   lock lifetime (a backstop in 'until_finished' mode)
      unique_mode     'until_finished' (released when the job completes or
                      dies) or 'ttl' (held until it expires)
      correlation_id  the caller's correlation id
      group           a mutex group key (see includes/groups)
      group_max       most jobs of the group active at once (>= 1)
  The job hash stores the options set, except delay_ms, run_at_ms and
  unique_ttl_ms (they only decide the due time and the lock); readers take
  a missing field as its default.

  Ready jobs without a group are pushed to their level's list once per
  call (one LPUSH per level, in order); a grouped job flushes what is
  pending first, so the lists keep the order of the arguments.

  Reply: flat list of n pairs {status, id}: status 'created' (id = the new
  job), 'duplicate_id' (a job with this id exists) or 'duplicate_unique'
  (id = the job holding the unique key).
  Errors: none; arguments are validated by the client.
]]
-- @include "clock"
-- @include "numbers"
-- @include "keys"
-- @include "events"
-- @include "ready"
-- @include "groups"
local meta_key = KEYS[1]
local delayed_key = KEYS[2]
local levels_key = KEYS[3]
local prefix = ARGV[1]
local log = event_log(prefix, KEYS[4], tonumber(ARGV[2]))
local n = tonumber(ARGV[3])
local FIXED = 7
-- Shared by the jobs that set no option (most): read, never written.
local NO_OPTIONS = {}
-- One `enqueued` entry per state for the jobs of this call
-- (includes/events): their ids and names, and their correlation ids once
-- one has any.
local enqueued = {ready = {ids = {}, names = {}, cids = nil}, delayed = {ids = {}, names = {}, cids = nil}}
-- Options stored in the job hash as they came.
local STORED = {'max_attempts', 'timeout_ms', 'backoff', 'unique_key', 'unique_mode',
  'correlation_id', 'group', 'group_max'}

local now = now_ms()
local now_text = int_text(now)
local reply = {}
local created = 0

-- Ready ungrouped jobs not pushed yet, per level, in argument order.
local pending, pending_levels = {}, {}
local function flush_pending()
  for _, level in ipairs(pending_levels) do
    push_ready_many(prefix, levels_key, pending[level], level)
  end
  pending, pending_levels = {}, {}
end

-- The job hash's fields, in HSET argument order; the values left '' are set
-- per job.
local fields = {'id', '', 'name', '', 'payload', '', 'version', '', 'priority', '',
  'state', '', 'attempt', '0', 'created_at', now_text, 'due_at', ''}
local HASH_FIXED = #fields
local a = 3
for _ = 1, n do
  local id, fresh, name, payload = ARGV[a + 1], ARGV[a + 2] == '1', ARGV[a + 3], ARGV[a + 4]
  local version, priority = ARGV[a + 5], ARGV[a + 6]
  local k = tonumber(ARGV[a + 7])
  local o = NO_OPTIONS
  if k > 0 then
    o = {}
    for i = a + 8, a + 7 + 2 * k, 2 do o[ARGV[i]] = ARGV[i + 1] end
  end
  a = a + FIXED + 2 * k
  local unique_key, group = o.unique_key or '', o.group or ''
  local job_key = key_job(prefix, id)

  local holder = nil
  if unique_key ~= '' then
    holder = redis.call('GET', key_unique(prefix, unique_key))
  end
  if not fresh and redis.call('EXISTS', job_key) == 1 then
    reply[#reply + 1] = 'duplicate_id'
    reply[#reply + 1] = id
  elseif holder then
    reply[#reply + 1] = 'duplicate_unique'
    reply[#reply + 1] = holder
  else
    if unique_key ~= '' then
      redis.call('SET', key_unique(prefix, unique_key), id, 'PX', o.unique_ttl_ms or '1')
    end
    local due = now + (tonumber(o.delay_ms) or 0)
    local run_at_ms = tonumber(o.run_at_ms) or 0
    if run_at_ms > 0 then due = run_at_ms end
    local state, due_text = 'ready', now_text
    if due > now then state = 'delayed' end
    if due ~= now then due_text = int_text(due) end
    -- One argument table for every job of the call: the names stay, the
    -- values are overwritten, and `len` says how much of it this job uses.
    fields[2], fields[4], fields[6], fields[8], fields[10] = id, name, payload, version, priority
    fields[12], fields[18] = state, due_text
    local len = HASH_FIXED
    if o ~= NO_OPTIONS then
      for _, field in ipairs(STORED) do
        if o[field] then
          fields[len + 1] = field
          fields[len + 2] = o[field]
          len = len + 2
        end
      end
    end
    redis.call('HSET', job_key, unpack(fields, 1, len))
    if state == 'delayed' then
      schedule(prefix, delayed_key, id, due_text)
    elseif group == '' then
      if not pending[priority] then
        pending[priority] = {}
        pending_levels[#pending_levels + 1] = priority
      end
      local ids = pending[priority]
      ids[#ids + 1] = id
    else
      flush_pending()
      make_ready(prefix, levels_key, id, priority, group, o.group_max)
    end
    created = created + 1
    local listed = enqueued[state]
    local at = #listed.ids + 1
    listed.ids[at] = id
    listed.names[at] = name
    if o.correlation_id and o.correlation_id ~= '' then
      listed.cids = listed.cids or {}
      listed.cids[at] = o.correlation_id
    end
    reply[#reply + 1] = 'created'
    reply[#reply + 1] = id
  end
end

flush_pending()
for _, state in ipairs({'ready', 'delayed'}) do
  local listed = enqueued[state]
  emit_jobs(log, 'enqueued', {'state', state, 'attempt', '0'}, listed.ids, listed.names, nil,
    listed.cids)
end
if created > 0 then
  redis.call('HINCRBY', meta_key, 'enqueued', created)
end
return reply
