--[[
  checkpoint: store a running job's checkpoint, the state its next attempt
  resumes from.

  Fenced by the lease token: only the attempt that holds the job's lease
  writes. A stale attempt (its lease expired and the job was reaped, or it
  was released) is refused, so it can never overwrite the checkpoint of a
  newer attempt. The next claim of the job hands the checkpoint to the
  handler (see includes/claim_jobs).

  KEYS[1] events  stream  lifecycle and progress events

  ARGV[1] prefix      the queue's key prefix (see enqueue.lua)
  ARGV[2] cap         events stream bound (0 = no events)
  ARGV[3] id          job id
  ARGV[4] token       lease token of the writing attempt
  ARGV[5] checkpoint  JSON text (size-checked by the client), stored in the
                      job hash field `checkpoint`

  Reply: the server time of the write, in ms.
  Errors: JOB_NOT_FOUND (no such job), LEASE_LOST (any token or state but
  the active lease); nothing is written then.
]]
-- @include "events"
-- @include "running"
local prefix, checkpoint = ARGV[1], ARGV[5]
local log = event_log(prefix, KEYS[1], tonumber(ARGV[2]))
return write_running(prefix, log, ARGV[3], ARGV[4], 'checkpoint', checkpoint, 'checkpoint',
  {'bytes', string.len(checkpoint)})
