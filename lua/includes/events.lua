--[[
  include events: append a lifecycle event to the queue's capped stream.

  emit(events_key, cap, event, id, name, attempt, correlation_id, extra)
    cap      stream length bound (approximate trim, MAXLEN ~); 0 disables
             events entirely, so a queue that nobody watches pays nothing.
    extra    optional flat list of further field/value pairs.
  Events are best-effort transport; the job hash is the truth.
]]
local function emit(events_key, cap, event, id, name, attempt, correlation_id, extra)
  if cap <= 0 then return end
  local args = {'XADD', events_key, 'MAXLEN', '~', cap, '*',
    'event', event, 'id', id, 'name', name or '', 'attempt', attempt or 0}
  if correlation_id and correlation_id ~= '' then
    args[#args + 1] = 'correlation_id'
    args[#args + 1] = correlation_id
  end
  if extra then
    for i = 1, #extra do args[#args + 1] = extra[i] end
  end
  redis.call(unpack(args))
end
