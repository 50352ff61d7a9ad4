--[[
  include events: append a lifecycle event to the queue's capped stream.

  emit(events_key, cap, event, id, name, attempt, correlation_id, extra)
    cap      stream length bound (approximate trim, MAXLEN ~); 0 disables
             events entirely, so a queue that nobody watches pays nothing.
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

local cap_for, cap_text = nil, nil
local function emit(events_key, cap, event, id, name, attempt, correlation_id, extra)
  if cap <= 0 then return end
  -- A script call uses one bound: format it once.
  if cap ~= cap_for then cap_for, cap_text = cap, int_text(cap) end
  if type(attempt) ~= 'string' then attempt = int_text(attempt or 0) end
  local args = {'XADD', events_key, 'MAXLEN', '~', cap_text, '*',
    'event', event, 'id', id, 'name', name or '', 'attempt', attempt}
  if correlation_id and correlation_id ~= '' then
    args[#args + 1] = 'correlation_id'
    args[#args + 1] = correlation_id
  end
  if extra then
    for i = 1, #extra do args[#args + 1] = extra[i] end
  end
  redis.call(unpack(args))
end
