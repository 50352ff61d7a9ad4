--[[
  include running: write to a running job, fenced by its lease token.
  Shared by progress.lua and checkpoint.lua.

  write_running(prefix, log, id, token, field, value, event, extra) -> now_ms
    Unless `token` holds the job's active lease, raises like fence
    (JOB_NOT_FOUND, LEASE_LOST) and writes nothing. Otherwise sets `field`
    to `value` and `<field>_at` to now (server clock), emits `event` with
    the job's name, attempt and correlation id plus `extra`, and returns
    now. `log` is the script's event log (includes/events).
]]
-- @include "clock"
-- @include "keys"
-- @include "events"
-- @include "fence"

local function write_running(prefix, log, id, token, field, value, event, extra)
  local job_key = key_job(prefix, id)
  local _, job = fence(prefix, job_key, id, token, {})
  local now = now_ms()
  redis.call('HSET', job_key, field, value, field .. '_at', now)
  emit(log, event, id, job.name, job.attempt, job.correlation_id, extra)
  return now
end
