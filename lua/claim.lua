--[[
  claim: lease up to `count` ready jobs to one worker.

  First promotes due delayed jobs (at most promote_limit) to ready, then pops
  the highest priority levels first and leases each job: state 'active',
  attempt + 1, a fresh lease token, and an entry in `active` scored by its
  lease deadline. `active` is the one source of truth for in-flight work.

  KEYS[1] meta      hash    `paused` = '1' stops leasing; flow-control
                            settings (includes/flow)
  KEYS[2] delayed   zset    due time (ms) per job id
  KEYS[3] active    zset    lease deadline (ms) per job id
  KEYS[4] levels    zset    non-empty priority levels
  KEYS[5] events    stream  lifecycle events

  ARGV[1] prefix         the queue's key prefix (see enqueue.lua)
  ARGV[2] cap            events stream bound (0 = no events)
  ARGV[3] count          most jobs to lease (>= 0)
  ARGV[4] lease_ms       lease length in ms
  ARGV[5] token_prefix   random nonce, unique per call; tokens are
                         "<token_prefix>.<i>"
  ARGV[6] worker         worker instance id
  ARGV[7] promote_limit  most due delayed jobs promoted in this call

  Reply: see includes/claim_jobs: {paused, next_due_ms, now_ms, n, limit,
  records...}.
  Errors: none.
]]
-- @include "clock"
-- @include "events"
-- @include "claim_jobs"
local k = {meta = KEYS[1], delayed = KEYS[2], active = KEYS[3], levels = KEYS[4]}
local prefix = ARGV[1]
local log = event_log(prefix, KEYS[5], tonumber(ARGV[2]))
-- The reply alone (claim_jobs also returns the ids and tokens it leased).
local reply = claim_jobs(prefix, k, now_ms(), tonumber(ARGV[3]), tonumber(ARGV[4]),
  ARGV[5], ARGV[6], tonumber(ARGV[7]), log, true)
return reply
