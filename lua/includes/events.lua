--[[
  include events: append a lifecycle event to the queue's capped stream.

  emit(events_key, cap, event, id, name, attempt, correlation_id, extra)
    cap      stream length bound (approximate trim, MAXLEN ~); 0 disables
             events entirely, so a queue that nobody watches pays nothing.
             Only every TRIM_EVERY-th event of a script call (the first
             included) trims the stream; the others only append, so the
             stream may hold fewer than TRIM_EVERY events beyond the bound
             (plus the node the approximate trim keeps).
    extra    optional flat list of further field/value pairs.
  Events are best-effort transport; the job hash is the truth.

  One entry may list several jobs (a batch): the fields before the first
  `id` are shared by every job of the entry (`event`, and extras such as
  `worker`); each `id` starts the next job's own fields (`name`,
  `attempt`, an optional `correlation_id`, its own extras). An entry of one
  job is the same layout with one group. The hot path (enqueues, claims
  and completions, which come in batches) appends one entry per script
  call instead of one per job, which costs a fraction of the commands.
  The bound stays one of events, approximately: every batch entry trims,
  an entry of n jobs to cap / n entries.

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
local emitted = 0
local function emit(events_key, cap, event, id, name, attempt, correlation_id, extra)
  if cap <= 0 then return end
  if type(attempt) ~= 'string' then attempt = int_text(attempt or 0) end
  name = name or ''
  local trim = emitted % TRIM_EVERY == 0
  emitted = emitted + 1
  if not trim and (not correlation_id or correlation_id == '') and (not extra or #extra == 2) then
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
  if trim then
    args = {'XADD', events_key, 'MAXLEN', '~', int_text(cap), '*'}
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

-- Most jobs listed in one batch entry.
local EVENT_BATCH_MAX = 100

local function event_batch(events_key, cap, event, extra)
  if cap <= 0 then return nil end
  local fields = {'event', event}
  if extra then
    for i = 1, #extra do fields[#fields + 1] = extra[i] end
  end
  return {key = events_key, cap = cap, fields = fields, shared = #fields, jobs = 0}
end

local function batch_emit(batch)
  if not batch or batch.jobs == 0 then return end
  -- A batch is a few entries per call, so each can afford to trim.
  local entries = math.max(1, math.floor(batch.cap / batch.jobs))
  redis.call('XADD', batch.key, 'MAXLEN', '~', int_text(entries), '*', unpack(batch.fields))
  -- Keep the shared fields for the jobs that follow.
  for i = #batch.fields, batch.shared + 1, -1 do batch.fields[i] = nil end
  batch.jobs = 0
end

local function batch_add(batch, id, name, attempt, correlation_id)
  if not batch then return end
  local fields = batch.fields
  local n = #fields
  fields[n + 1] = 'id'
  fields[n + 2] = id
  fields[n + 3] = 'name'
  fields[n + 4] = name or ''
  fields[n + 5] = 'attempt'
  fields[n + 6] = attempt
  if correlation_id and correlation_id ~= '' then
    fields[n + 7] = 'correlation_id'
    fields[n + 8] = correlation_id
  end
  batch.jobs = batch.jobs + 1
  if batch.jobs >= EVENT_BATCH_MAX then batch_emit(batch) end
end
