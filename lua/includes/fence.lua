--[[
  include fence: ownership check shared by every outcome script.

  check_fence(base, job_key, id, token, outcomes) -> status, job, detail
    base is the queue's key base (ARGV[1]) and job_key = key_job(base, id),
    which every caller has built already.
    status 'ok'         the token holds the job's current lease: go ahead.
    status 'already'    this token's attempt already ended with one of
                        `outcomes` (a set: outcome -> true): the caller is
                        resending after a lost reply; reply success again
                        and change nothing.
    status 'not_found'  no job hash (never enqueued, removed by retention
                        or purged).
    status 'lease_lost' any other token or state; `detail` says which.
    job                 table of the fields read: state, attempt,
                        max_attempts, name, correlation_id, priority,
                        unique_key, unique_mode, outcome, worker, group.
    It writes nothing, so a batch (complete.lua) can check every job and
    answer each one without aborting the others.
  check_fence_fields(base, job_key, id, token, outcomes, count) -> status, f, detail
    The same, but `f` is the HMGET reply itself (an array; empty when the
    job has no hash), read through the F_* positions below: no table is
    built per job, which matters where a batch fences many (complete.lua).
    Only the first `count` fields of FENCE_FIELDS are read (all when nil);
    COMPLETION_FIELDS are the ones a completion uses.
  fence(base, job_key, id, token, outcomes) -> status, job
    The same for one job, raising JOB_NOT_FOUND or LEASE_LOST instead of
    returning them; nothing has been written when it raises.
  A job completed with retention keep_last = 0 has no hash, only a
  short-lived marker key_done(base, id) holding the completing token, so a
  resent complete is still answered 'already'.
]]
-- @include "keys"

-- The fields a fence reads, at the F_* positions: those a completion uses
-- first, so that it reads no more (each field read costs, per job; up to
-- 8 also saves growing the reply table once more). `outcome` matters only
-- on the rare resend path, which reads it when it is not in `f`.
local FENCE_FIELDS = {'state', 'lease_token', 'attempt', 'name', 'correlation_id', 'unique_key',
  'unique_mode', 'group', 'outcome', 'max_attempts', 'priority', 'worker'}
local F_STATE, F_TOKEN, F_ATTEMPT, F_NAME, F_CORRELATION_ID, F_UNIQUE_KEY = 1, 2, 3, 4, 5, 6
local F_UNIQUE_MODE, F_GROUP, F_OUTCOME, F_MAX_ATTEMPTS, F_PRIORITY, F_WORKER =
  7, 8, 9, 10, 11, 12
local COMPLETION_FIELDS = 8
local NO_FIELDS = {}

local function check_fence_fields(base, job_key, id, token, outcomes, count)
  local f = redis.call('HMGET', job_key, unpack(FENCE_FIELDS, 1, count or #FENCE_FIELDS))
  local state = f[F_STATE]
  if not state then
    local done_by = redis.call('GET', key_done(base, id))
    if done_by and done_by == token then
      if outcomes.completed then return 'already', NO_FIELDS end
      return 'lease_lost', NO_FIELDS, 'job ' .. id .. ' was completed by this token'
    end
    return 'not_found', NO_FIELDS, 'job ' .. id .. ' does not exist'
  end
  if f[F_TOKEN] == token then
    if state == 'active' then return 'ok', f end
    local outcome = f[F_OUTCOME]
    if count and count < F_OUTCOME then outcome = redis.call('HGET', job_key, 'outcome') end
    if outcomes[outcome] then return 'already', f end
  end
  return 'lease_lost', f, 'job ' .. id .. ' is ' .. state .. ' and not leased by this token'
end

local function check_fence(base, job_key, id, token, outcomes)
  local status, f, detail = check_fence_fields(base, job_key, id, token, outcomes)
  if not f[F_STATE] then return status, {}, detail end
  local job = {state = f[F_STATE], outcome = f[F_OUTCOME],
    attempt = tonumber(f[F_ATTEMPT]) or 0, max_attempts = tonumber(f[F_MAX_ATTEMPTS]) or 0,
    name = f[F_NAME], correlation_id = f[F_CORRELATION_ID], priority = f[F_PRIORITY] or '0',
    unique_key = f[F_UNIQUE_KEY], unique_mode = f[F_UNIQUE_MODE], worker = f[F_WORKER],
    group = f[F_GROUP]}
  return status, job, detail
end

local function fence(base, job_key, id, token, outcomes)
  local status, job, detail = check_fence(base, job_key, id, token, outcomes)
  if status == 'not_found' then error({err = 'JOB_NOT_FOUND ' .. detail}) end
  if status == 'lease_lost' then error({err = 'LEASE_LOST ' .. detail}) end
  return status, job
end
