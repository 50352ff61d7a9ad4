--[[
  include events: append a lifecycle event to the queue's capped stream.

  emit(events_key, cap, event, id, name, attempt, correlation_id, extra)
    cap      bound of the events the stream holds, kept approximately (see
             below); 0 disables events entirely, so a queue that nobody
             watches pays nothing.
    extra    optional flat list of further field/value pairs.
  Events are best-effort transport; the job hash is the truth.

  emit appends one entry for one job: `event`, `id`, `name`, `attempt`,
  an optional `correlation_id`, then the extras. The hot path (enqueues,
  claims and completions, which come in batches) appends one entry per
  script call instead, with emit_jobs: `event` and the extras (such as
  `worker`), shared by every job of the entry, then `ids`, `names` and
  `attempts`, each the jobs' values joined by single spaces in the same
  order (job ids and names hold no whitespace; a name that does, written
  into a hash by hand, makes readers drop the entry's names), and, when
  any job has one, `correlation_ids` (a JSON array, '' for a job
  without). A handful of values per entry instead of six per job: as
  separate fields, the jobs of an entry cost Redis about a tenth of its
  instructions per processed job (BENCHMARKS.md); the callers collect the
  names and attempts into plain arrays as they go, with no call per job.
  (Entries of earlier versions list jobs as `id` groups instead: the
  fields before the first `id` are shared, each `id` starts the next
  job's own fields. Readers decode both.)

  Trimming: the stream holds entries of different sizes, so the bound in
  events becomes a bound in entries through the queue's average entry
  size: the meta hash counts `event_entries` and `event_jobs` (both halved
  once the entries pass 2 * AVERAGE_WINDOW, so the average follows the
  recent mix), and a trim keeps cap * entries / jobs entries (MAXLEN ~,
  whole radix-tree nodes). The first entry of a script call, every
  TRIM_EVERY-th after it and every full batch (EVENT_BATCH_MAX jobs, as a
  bulk enqueue writes) trim and add the call's entries so far to the
  counts; the others only append, so the stream may run a few entries
  over, and a call's entries after its last trim are not counted.

  emit_jobs(events_key, cap, event, extra, ids, names, attempts, cids)
    One event for each job of `ids` (a list; nothing for none), one entry
    per EVENT_BATCH_MAX jobs (the arguments of one call stay bounded).
    names      the jobs' names, in the order of `ids`
    attempts   their attempts as text, or nil when `extra` holds one
               `attempt` for all
    cids       nil, or correlation ids by position (nil for a job without)

  int_text(n) -> the integer n as text. redis.call formats a Lua number
  argument as a double ("%.17g"), which costs more than the command it is
  passed to, and Lua's own `..` formats one with "%.14g"; scripts on the
  hot path pass integers through this instead (once per value, not once
  per use). 1 to 32 come from a table.
]]
-- The small integers a batch uses most (attempts, positions in a claim),
-- written out: a table lookup instead of a call to format them.
local SMALL_INT_TEXT = {'1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12', '13', '14', '15',
  '16', '17', '18', '19', '20', '21', '22', '23', '24', '25', '26', '27', '28', '29', '30', '31', '32'}

local function int_text(n)
  return SMALL_INT_TEXT[n] or string.format('%d', n)
end

-- Trimming on every XADD costs more than the append itself.
local TRIM_EVERY = 64
-- Most jobs listed in one batch entry.
local EVENT_BATCH_MAX = 100
-- The average entry size follows about this many recent entries.
local AVERAGE_WINDOW = 256
-- Entries appended by this script call; those (and their jobs) not yet
-- added to the queue's counts.
local emitted = 0
local unnoted_entries, unnoted_jobs = 0, 0

-- Notes one entry of `jobs` jobs about to be appended. Returns the MAXLEN
-- to append it with (as text) when it is an entry that trims, else nil.
local function note_entry(events_key, cap, jobs)
  local trim = emitted % TRIM_EVERY == 0 or jobs >= EVENT_BATCH_MAX
  emitted = emitted + 1
  unnoted_entries = unnoted_entries + 1
  unnoted_jobs = unnoted_jobs + jobs
  if not trim then return nil end
  -- '<prefix>events' -> '<prefix>meta'
  local meta_key = string.sub(events_key, 1, -7) .. 'meta'
  local total_jobs = redis.call('HINCRBY', meta_key, 'event_jobs', int_text(unnoted_jobs))
  local total_entries = redis.call('HINCRBY', meta_key, 'event_entries', int_text(unnoted_entries))
  unnoted_entries, unnoted_jobs = 0, 0
  if total_entries > 2 * AVERAGE_WINDOW then
    redis.call('HSET', meta_key, 'event_jobs', int_text(math.floor(total_jobs / 2)),
      'event_entries', int_text(math.floor(total_entries / 2)))
  end
  return int_text(math.max(1, math.floor(cap * total_entries / math.max(total_jobs, 1))))
end

local function emit(events_key, cap, event, id, name, attempt, correlation_id, extra)
  if cap <= 0 then return end
  if type(attempt) ~= 'string' then attempt = int_text(attempt or 0) end
  name = name or ''
  local keep = note_entry(events_key, cap, 1)
  if not keep and (not correlation_id or correlation_id == '') and (not extra or #extra == 2) then
    -- The hot path (most events of a busy queue): one direct call, no
    -- argument table to build and unpack.
    if extra then
      redis.call('XADD', events_key, '*', 'event', event, 'id', id, 'name', name,
        'attempt', attempt, extra[1], extra[2])
    else
      redis.call('XADD', events_key, '*', 'event', event, 'id', id, 'name', name,
        'attempt', attempt)
    end
    return
  end
  local args
  if keep then
    args = {'XADD', events_key, 'MAXLEN', '~', keep, '*'}
  else
    args = {'XADD', events_key, '*'}
  end
  local base = #args
  args[base + 1] = 'event'
  args[base + 2] = event
  args[base + 3] = 'id'
  args[base + 4] = id
  args[base + 5] = 'name'
  args[base + 6] = name
  args[base + 7] = 'attempt'
  args[base + 8] = attempt
  if correlation_id and correlation_id ~= '' then
    args[#args + 1] = 'correlation_id'
    args[#args + 1] = correlation_id
  end
  if extra then
    for i = 1, #extra do args[#args + 1] = extra[i] end
  end
  redis.call(unpack(args))
end

-- Appends one entry for jobs first..last of the lists (see emit_jobs).
local function emit_job_range(events_key, cap, shared, ids, names, attempts, cids, first, last)
  local keep = note_entry(events_key, cap, last - first + 1)
  local args
  if keep then
    args = {'XADD', events_key, 'MAXLEN', '~', keep, '*'}
  else
    args = {'XADD', events_key, '*'}
  end
  local n = #args
  for _, v in ipairs(shared) do
    n = n + 1
    args[n] = v
  end
  args[n + 1] = 'ids'
  args[n + 2] = table.concat(ids, ' ', first, last)
  args[n + 3] = 'names'
  args[n + 4] = table.concat(names, ' ', first, last)
  n = n + 4
  if attempts then
    args[n + 1] = 'attempts'
    args[n + 2] = table.concat(attempts, ' ', first, last)
    n = n + 2
  end
  if cids then
    local listed, any = {}, false
    for i = first, last do
      listed[#listed + 1] = cids[i] or ''
      any = any or cids[i] ~= nil
    end
    if any then
      args[n + 1] = 'correlation_ids'
      args[n + 2] = cjson.encode(listed)
    end
  end
  redis.call(unpack(args))
end

local function emit_jobs(events_key, cap, event, extra, ids, names, attempts, cids)
  local count = #ids
  if cap <= 0 or count == 0 then return end
  local shared = {'event', event}
  if extra then
    for i = 1, #extra do shared[#shared + 1] = extra[i] end
  end
  for first = 1, count, EVENT_BATCH_MAX do
    emit_job_range(events_key, cap, shared, ids, names, attempts, cids,
      first, math.min(first + EVENT_BATCH_MAX - 1, count))
  end
end
