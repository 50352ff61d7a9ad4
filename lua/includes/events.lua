--[[
  include events: append a lifecycle event to the queue's capped stream.

  emit(events_key, cap, event, id, name, attempt, correlation_id, extra)
    cap      bound of the events the stream holds, kept approximately (see
             below); 0 disables events entirely, so a queue that nobody
             watches pays nothing.
    extra    optional flat list of further field/value pairs.
  Events are best-effort transport; the job hash is the truth.

  One entry may list several jobs (a batch): the fields before the first
  `id` are shared by every job of the entry (`event`, and extras such as
  `worker`); each `id` starts the next job's own fields (`name`,
  `attempt`, an optional `correlation_id`, its own extras). An entry of one
  job is the same layout with one group. The hot path (enqueues, claims
  and completions, which come in batches) appends one entry per script
  call instead of one per job, which costs a fraction of the commands.
  A batch lists its jobs without a correlation id in three shared fields
  instead, before any `id`: `ids`, `names` and `attempts`, each the jobs'
  values joined by single spaces, in the same order (job ids and names
  hold no whitespace; a name that does, written into a hash by hand, makes
  readers drop the entry's names). Three values per entry instead of six
  per job: as separate fields the listed jobs cost Redis about a tenth of
  the instructions per processed job (BENCHMARKS.md). Readers give the
  listed jobs' events first, then those of the `id` groups.

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

  event_batch(events_key, cap, event, extra) -> batch (nil when cap is 0)
  batch_add(batch, id, name, attempt, correlation_id)
    Lists one more job; every EVENT_BATCH_MAX jobs are appended as an
    entry of their own (the arguments of one call stay bounded).
  batch_emit(batch)
    Appends what is listed and not yet appended (nothing for none).

  int_text(n) -> the integer n as text. redis.call formats a Lua number
  argument as a double ("%.17g"), which costs more than the command it is
  passed to; scripts on the hot path pass integers through this instead
  (once per value, not once per use).
]]
local function int_text(n)
  return string.format('%d', n)
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
  local total_jobs = redis.call('HINCRBY', meta_key, 'event_jobs', unnoted_jobs)
  local total_entries = redis.call('HINCRBY', meta_key, 'event_entries', unnoted_entries)
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

-- A table whose array part holds 16 values from the start: filling a
-- table from empty makes Lua regrow it at 1, 2, 4, 8 and 16 values.
local function sized_list()
  return {'', '', '', '', '', '', '', '', '', '', '', '', '', '', '', ''}
end

local function event_batch(events_key, cap, event, extra)
  if cap <= 0 then return nil end
  local shared = {'event', event}
  if extra then
    for i = 1, #extra do shared[#shared + 1] = extra[i] end
  end
  -- listed: the jobs in ids/names/attempts; own: the `id` groups.
  return {key = events_key, cap = cap, shared = shared, jobs = 0, listed = 0,
    ids = sized_list(), names = sized_list(), attempts = sized_list(), own = {}}
end

local function batch_emit(batch)
  if not batch or batch.jobs == 0 then return end
  local keep = note_entry(batch.key, batch.cap, batch.jobs)
  local args
  if keep then
    args = {'XADD', batch.key, 'MAXLEN', '~', keep, '*'}
  else
    args = {'XADD', batch.key, '*'}
  end
  local n = #args
  for _, v in ipairs(batch.shared) do
    n = n + 1
    args[n] = v
  end
  if batch.listed > 0 then
    args[n + 1] = 'ids'
    args[n + 2] = table.concat(batch.ids, ' ', 1, batch.listed)
    args[n + 3] = 'names'
    args[n + 4] = table.concat(batch.names, ' ', 1, batch.listed)
    args[n + 5] = 'attempts'
    args[n + 6] = table.concat(batch.attempts, ' ', 1, batch.listed)
    n = n + 6
  end
  for _, v in ipairs(batch.own) do
    n = n + 1
    args[n] = v
  end
  redis.call(unpack(args))
  -- The lists are overwritten from the start (only the first `listed`
  -- values are read); `own` is rebuilt.
  batch.own = {}
  batch.jobs, batch.listed = 0, 0
end

local function batch_add(batch, id, name, attempt, correlation_id)
  if not batch then return end
  if correlation_id and correlation_id ~= '' then
    local own = batch.own
    local n = #own
    own[n + 1] = 'id'
    own[n + 2] = id
    own[n + 3] = 'name'
    own[n + 4] = name or ''
    own[n + 5] = 'attempt'
    own[n + 6] = attempt or '0'
    own[n + 7] = 'correlation_id'
    own[n + 8] = correlation_id
  else
    local n = batch.listed + 1
    batch.ids[n] = id
    batch.names[n] = name or ''
    batch.attempts[n] = attempt or '0'
    batch.listed = n
  end
  batch.jobs = batch.jobs + 1
  if batch.jobs >= EVENT_BATCH_MAX then batch_emit(batch) end
end
