--[[
  include events: append lifecycle events to the queue's capped stream.

  event_log(base, stream_key, cap) -> log
    The script's event log: the stream (the script's `events` KEYS entry),
    the meta hash that counts its entries (key_meta of the key base
    `base`, ARGV[1]) and the bound. Make one per script call: it also
    holds what this call has appended, for trimming.
    cap      bound of the events the stream holds, kept approximately (see
             below); 0 disables events entirely, so a queue that nobody
             watches pays nothing.
  Events are best-effort transport; the job hash is the truth.

  The wire format. Every entry written lists its jobs the same way, whether
  it holds one job or a batch: first `event` and the extras shared by every
  job of the entry (such as `worker`, `reason`), then `ids`, `names` and
  `attempts`, each the jobs' values joined by single spaces in the same
  order (job ids and names hold no whitespace; a batch with a name that
  does, written into a hash by hand, makes readers drop the entry's
  names), and, when any job has one, `correlation_ids` (a JSON array, ''
  for a job without). The hot path (enqueues, claims and completions,
  which come in batches) appends one entry per script call: a handful of
  values per entry instead of six per job. As separate fields, the jobs of
  an entry cost Redis about a tenth of its instructions per processed job
  (BENCHMARKS.md); the callers collect the names and attempts into plain
  arrays as they go, with no call per job. The one reader is
  crates/taskline/src/operator/events.rs, which also reads the one legacy
  layout (`id` groups, written by earlier versions) and says so there.

  emit(log, event, id, name, attempt, correlation_id, extra)
    One entry for one job. extra: nil, or a flat list of further shared
    field/value pairs.
  emit_jobs(log, event, extra, ids, names, attempts, cids)
    One event for each job of `ids` (a list; nothing for none), one entry
    per EVENT_BATCH_MAX jobs (the arguments of one call stay bounded).
    names      the jobs' names, in the order of `ids`
    attempts   their attempts as text, or nil when `extra` holds one
               `attempt` for all
    cids       nil, or correlation ids by position (nil for a job without)

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
]]
-- @include "numbers"
-- @include "keys"

-- Trimming on every XADD costs more than the append itself.
local TRIM_EVERY = 64
-- Most jobs listed in one batch entry.
local EVENT_BATCH_MAX = 100
-- The average entry size follows about this many recent entries.
local AVERAGE_WINDOW = 256

local function event_log(base, stream_key, cap)
  -- emitted: entries appended by this script call; unnoted_*: those (and
  -- their jobs) not yet added to the queue's counts.
  return {stream = stream_key, meta = key_meta(base), cap = cap, emitted = 0, unnoted_entries = 0,
    unnoted_jobs = 0}
end

-- Notes one entry of `jobs` jobs about to be appended. Returns the MAXLEN
-- to append it with (as text) when it is an entry that trims, else nil.
local function note_entry(log, jobs)
  local emitted = log.emitted
  local trim = emitted % TRIM_EVERY == 0 or jobs >= EVENT_BATCH_MAX
  log.emitted = emitted + 1
  local unnoted_entries, unnoted_jobs = log.unnoted_entries + 1, log.unnoted_jobs + jobs
  if not trim then
    log.unnoted_entries, log.unnoted_jobs = unnoted_entries, unnoted_jobs
    return nil
  end
  local meta_key = log.meta
  local total_jobs = redis.call('HINCRBY', meta_key, 'event_jobs', int_text(unnoted_jobs))
  local total_entries = redis.call('HINCRBY', meta_key, 'event_entries', int_text(unnoted_entries))
  log.unnoted_entries, log.unnoted_jobs = 0, 0
  if total_entries > 2 * AVERAGE_WINDOW then
    redis.call('HSET', meta_key, 'event_jobs', int_text(math.floor(total_jobs / 2)),
      'event_entries', int_text(math.floor(total_entries / 2)))
  end
  return int_text(math.max(1, math.floor(log.cap * total_entries / math.max(total_jobs, 1))))
end

-- The start of an XADD to the log's stream, trimmed to `keep` entries
-- when that is not nil.
local function xadd_head(log, keep)
  if keep then return {'XADD', log.stream, 'MAXLEN', '~', keep, '*'} end
  return {'XADD', log.stream, '*'}
end

local function emit(log, event, id, name, attempt, correlation_id, extra)
  if log.cap <= 0 then return end
  if type(attempt) ~= 'string' then attempt = int_text(attempt or 0) end
  name = name or ''
  local keep = note_entry(log, 1)
  local has_cid = correlation_id and correlation_id ~= ''
  if not keep and not has_cid and (not extra or #extra == 2) then
    -- The common case (most single-job events): one direct call, no
    -- argument table to build and unpack.
    if extra then
      redis.call('XADD', log.stream, '*', 'event', event, extra[1], extra[2], 'ids', id, 'names', name,
        'attempts', attempt)
    else
      redis.call('XADD', log.stream, '*', 'event', event, 'ids', id, 'names', name, 'attempts', attempt)
    end
    return
  end
  local args = xadd_head(log, keep)
  args[#args + 1] = 'event'
  args[#args + 1] = event
  if extra then
    for i = 1, #extra do args[#args + 1] = extra[i] end
  end
  local n = #args
  args[n + 1] = 'ids'
  args[n + 2] = id
  args[n + 3] = 'names'
  args[n + 4] = name
  args[n + 5] = 'attempts'
  args[n + 6] = attempt
  if has_cid then
    args[n + 7] = 'correlation_ids'
    args[n + 8] = cjson.encode({correlation_id})
  end
  redis.call(unpack(args))
end

-- Appends one entry for jobs first..last of the lists (see emit_jobs).
local function emit_job_range(log, shared, ids, names, attempts, cids, first, last)
  local args = xadd_head(log, note_entry(log, last - first + 1))
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

local function emit_jobs(log, event, extra, ids, names, attempts, cids)
  local count = #ids
  if log.cap <= 0 or count == 0 then return end
  local shared = {'event', event}
  if extra then
    for i = 1, #extra do shared[#shared + 1] = extra[i] end
  end
  for first = 1, count, EVENT_BATCH_MAX do
    emit_job_range(log, shared, ids, names, attempts, cids, first, math.min(first + EVENT_BATCH_MAX - 1, count))
  end
end
