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
  local args
  if emitted % TRIM_EVERY == 0 then
    args = {'XADD', events_key, 'MAXLEN', '~', int_text(cap), '*'}
  else
    args = {'XADD', events_key, '*'}
  end
  emitted = emitted + 1
  local base = #args
  args[base + 1] = 'event'
  args[base + 2] = event
  args[base + 3] = 'id'
  args[base + 4] = id
  args[base + 5] = 'name'
  args[base + 6] = name or ''
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
