--[[
  include fence: ownership check shared by every outcome script.

  check_fence(job_key, id, token, outcomes) -> status, job, detail
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
  check_fence_fields(job_key, id, token, outcomes) -> status, f, detail
    The same, but `f` is the HMGET reply itself (an array; empty when the
    job has no hash), read through the F_* positions below: no table is
    built per job, which matters where a batch fences many (complete.lua).
  fence(job_key, id, token, outcomes) -> status, job
    The same for one job, raising JOB_NOT_FOUND or LEASE_LOST instead of
    returning them; nothing has been written when it raises.
  A job completed with retention keep_last = 0 has no hash, only a
  short-lived marker <prefix>done:<id> holding the completing token, so a
  resent complete is still answered 'already'.
]]
-- Positions in check_fence_fields' reply.
local F_STATE, F_TOKEN, F_OUTCOME, F_ATTEMPT, F_MAX_ATTEMPTS, F_NAME = 1, 2, 3, 4, 5, 6
local F_CORRELATION_ID, F_PRIORITY, F_UNIQUE_KEY, F_UNIQUE_MODE, F_WORKER, F_GROUP =
  7, 8, 9, 10, 11, 12
local NO_FIELDS = {}

local function check_fence_fields(job_key, id, token, outcomes)
  local f = redis.call('HMGET', job_key, 'state', 'lease_token', 'outcome',
    'attempt', 'max_attempts', 'name', 'correlation_id', 'priority',
    'unique_key', 'unique_mode', 'worker', 'group')
  local state = f[F_STATE]
  if not state then
    local done_by = redis.call('GET', string.sub(job_key, 1, -#id - 5) .. 'done:' .. id)
    if done_by and done_by == token then
      if outcomes.completed then return 'already', NO_FIELDS end
      return 'lease_lost', NO_FIELDS, 'job ' .. id .. ' was completed by this token'
    end
    return 'not_found', NO_FIELDS, 'job ' .. id .. ' does not exist'
  end
  if f[F_TOKEN] == token then
    if state == 'active' then return 'ok', f end
    if outcomes[f[F_OUTCOME]] then return 'already', f end
  end
  return 'lease_lost', f, 'job ' .. id .. ' is ' .. state .. ' and not leased by this token'
end

local function check_fence(job_key, id, token, outcomes)
  local status, f, detail = check_fence_fields(job_key, id, token, outcomes)
  if not f[F_STATE] then return status, {}, detail end
  local job = {state = f[F_STATE], outcome = f[F_OUTCOME],
    attempt = tonumber(f[F_ATTEMPT]) or 0, max_attempts = tonumber(f[F_MAX_ATTEMPTS]) or 0,
    name = f[F_NAME], correlation_id = f[F_CORRELATION_ID], priority = f[F_PRIORITY] or '0',
    unique_key = f[F_UNIQUE_KEY], unique_mode = f[F_UNIQUE_MODE], worker = f[F_WORKER],
    group = f[F_GROUP]}
  return status, job, detail
end

local function fence(job_key, id, token, outcomes)
  local status, job, detail = check_fence(job_key, id, token, outcomes)
  if status == 'not_found' then error({err = 'JOB_NOT_FOUND ' .. detail}) end
  if status == 'lease_lost' then error({err = 'LEASE_LOST ' .. detail}) end
  return status, job
end
