--[[
  progress: store a running job's latest progress report and emit it as an
  event.

  Fenced by the lease token: only the attempt that holds the job's lease
  writes, so a stale worker cannot overwrite the progress of a newer
  attempt. Workers coalesce calls before they get here (a few per second
  per job at most), so this runs rarely however often a handler reports.

  KEYS[1] events  stream  lifecycle and progress events

  ARGV[1] prefix    the queue's key prefix (see enqueue.lua)
  ARGV[2] cap       events stream bound (0 = no events)
  ARGV[3] id        job id
  ARGV[4] token     lease token of the reporting attempt
  ARGV[5] progress  JSON object {done, total, unit, message?}, stored as is
                    in the job hash field `progress`
  ARGV[6] done      units done (the event's `done` field)
  ARGV[7] total     units in all (the event's `total` field)
  ARGV[8] unit      what is counted, e.g. "rows"
  ARGV[9] message   free text, may be empty

  Reply: the server time of the write, in ms.
  Errors: JOB_NOT_FOUND (no such job), LEASE_LOST (any token or state but
  the active lease); nothing is written then.
]]
-- @include "events"
-- @include "running"
local extra = {'done', ARGV[6], 'total', ARGV[7], 'unit', ARGV[8]}
if ARGV[9] ~= '' then
  extra[#extra + 1] = 'message'
  extra[#extra + 1] = ARGV[9]
end
local prefix = ARGV[1]
local log = event_log(prefix, KEYS[1], tonumber(ARGV[2]))
return write_running(prefix, log, ARGV[3], ARGV[4], 'progress', ARGV[5], 'progress', extra)
