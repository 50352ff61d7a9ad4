--[[
  include claim_jobs: promote due delayed jobs, then lease ready ones.
  Shared by claim.lua and by complete.lua (complete-and-claim), so a busy
  worker needs about one round trip per job.

  claim_jobs(prefix, k, now, count, lease_ms, token_prefix, worker,
             promote_limit, cap) -> reply table
  append_record(reply, job_key, id, token, attempt, deadline) -> fields
    appends one leased job's record; complete.lua uses it to answer a
    resent complete-and-claim with the jobs the first call leased.
    k              {meta=, delayed=, active=, levels=, events=} key names
    count          most jobs to lease (0 leases none but still reports)
    lease_ms       lease length; deadline = now + lease_ms (server clock)
    token_prefix   caller-chosen random nonce; the i-th job leased in this
                   call gets lease token "<token_prefix>.<i>"
    worker         worker instance id recorded on the job
    promote_limit  most due delayed jobs moved to ready in this call
  Reply: {paused (0|1), next_due_ms (-1 when no delayed job), now_ms (the
          server clock, so a worker can sleep until next_due without
          trusting its own clock), n, then n records of 15 values each}:
          id, lease_token, attempt, lease_deadline_ms, name, payload,
          version, max_attempts, timeout_ms, backoff, correlation_id,
          checkpoint, created_at, priority, releases
  A claim that filled `count` and left ready jobs behind adds a wake token
  (see includes/ready), so idle workers cascade awake under a burst.
  A paused queue leases nothing (promotion still runs, so delayed jobs
  reach ready on time). An id whose job hash is missing is dropped with an
  'orphan' event: it has no job to run.
]]
local function promote_due(prefix, k, now, limit, cap)
  local due = redis.call('ZRANGEBYSCORE', k.delayed, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local job_key = prefix .. 'job:' .. id
    local level = redis.call('HGET', job_key, 'priority')
    redis.call('ZREM', k.delayed, id)
    if level then
      redis.call('HSET', job_key, 'state', 'ready')
      push_ready(prefix, k.levels, id, level, false)
    else
      emit(k.events, cap, 'orphan', id, '', 0, '', {'from', 'delayed'})
    end
  end
  return #due
end

local function next_due_ms(delayed_key)
  local first = redis.call('ZRANGE', delayed_key, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return -1
end

-- Appends one leased job's record (the 15 values above) to `reply`;
-- returns the fields read, so callers can name the job in events.
local function append_record(reply, job_key, id, token, attempt, deadline)
  local f = redis.call('HMGET', job_key, 'name', 'payload', 'version',
    'max_attempts', 'timeout_ms', 'backoff', 'correlation_id', 'checkpoint',
    'created_at', 'priority', 'releases')
  local base = #reply
  reply[base + 1] = id
  reply[base + 2] = token
  reply[base + 3] = attempt
  reply[base + 4] = deadline
  for i = 1, 11 do reply[base + 4 + i] = f[i] or '' end
  return f
end

local function claim_jobs(prefix, k, now, count, lease_ms, token_prefix, worker, promote_limit, cap)
  promote_due(prefix, k, now, promote_limit, cap)
  if redis.call('HGET', k.meta, 'paused') == '1' then
    return {1, next_due_ms(k.delayed), now, 0}
  end
  local reply = {0, 0, now, 0}
  local deadline = now + lease_ms
  local n = 0
  -- Orphans (ids without a job hash) do not use up the count: pop again
  -- for the shortfall, a bounded number of times.
  for _ = 1, 4 do
    local ids = pop_ready(prefix, k.levels, count - n)
    for _, id in ipairs(ids) do
      local job_key = prefix .. 'job:' .. id
      if redis.call('EXISTS', job_key) == 1 then
        n = n + 1
        local token = token_prefix .. '.' .. n
        local attempt = bump(job_key, 'attempt', 1)
        redis.call('HSET', job_key, 'state', 'active', 'lease_token', token,
          'worker', worker, 'started_at', now, 'outcome', '')
        redis.call('ZADD', k.active, deadline, id)
        local f = append_record(reply, job_key, id, token, attempt, deadline)
        emit(k.events, cap, 'claimed', id, f[1], attempt, f[7], {'worker', worker})
      else
        emit(k.events, cap, 'orphan', id, '', 0, '', {'from', 'ready'})
      end
    end
    if n >= count or #ids == 0 then break end
  end
  if count > 0 and n == count and redis.call('ZCARD', k.levels) > 0 then
    -- Work is left behind: wake another idle worker to take it.
    signal_ready(prefix)
  end
  reply[2] = next_due_ms(k.delayed)
  reply[4] = n
  return reply
end
