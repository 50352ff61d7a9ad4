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
  fence(job_key, id, token, outcomes) -> status, job
    The same for one job, raising JOB_NOT_FOUND or LEASE_LOST instead of
    returning them; nothing has been written when it raises.
  A job completed with retention keep_last = 0 has no hash, only a
  short-lived marker <prefix>done:<id> holding the completing token, so a
  resent complete is still answered 'already'.
]]
local function check_fence(job_key, id, token, outcomes)
  local f = redis.call('HMGET', job_key, 'state', 'lease_token', 'outcome',
    'attempt', 'max_attempts', 'name', 'correlation_id', 'priority',
    'unique_key', 'unique_mode', 'worker', 'group')
  if not f[1] then
    local done_by = redis.call('GET', string.sub(job_key, 1, -#id - 5) .. 'done:' .. id)
    if done_by and done_by == token then
      if outcomes.completed then return 'already', {} end
      return 'lease_lost', {}, 'job ' .. id .. ' was completed by this token'
    end
    return 'not_found', {}, 'job ' .. id .. ' does not exist'
  end
  local job = {state = f[1], outcome = f[3], attempt = tonumber(f[4]) or 0,
    max_attempts = tonumber(f[5]) or 0, name = f[6], correlation_id = f[7],
    priority = f[8] or '0', unique_key = f[9], unique_mode = f[10], worker = f[11], group = f[12]}
  if f[2] == token then
    if f[1] == 'active' then return 'ok', job end
    if outcomes[f[3]] then return 'already', job end
  end
  return 'lease_lost', job, 'job ' .. id .. ' is ' .. f[1] .. ' and not leased by this token'
end

local function fence(job_key, id, token, outcomes)
  local status, job, detail = check_fence(job_key, id, token, outcomes)
  if status == 'not_found' then error({err = 'JOB_NOT_FOUND ' .. detail}) end
  if status == 'lease_lost' then error({err = 'LEASE_LOST ' .. detail}) end
  return status, job
end
