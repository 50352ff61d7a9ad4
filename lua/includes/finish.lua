--[[
  include finish: bookkeeping shared by the scripts that end an attempt.

  release_unique(prefix, id, unique_key, unique_mode)
    Deletes the job's unique-key lock when the lock mode is
    'until_finished' and the lock still names this job (only its owner may
    release it). 'ttl' locks simply expire.
  record_error(job_key, entry)
    Appends one attempt's error to the job's history: field `errors` counts
    the entries, field `error:<n>` holds entry n as JSON. The history is
    never rewritten, so a dead job keeps every attempt's story.
  bury(prefix, meta_key, dead_key, log, id, job, now, reason, outcome)
    Moves a job (already removed from its previous structure) to the dead
    letter zset, score = time of death, with its reason. `outcome` records
    how the attempt ended: 'dead' when its owner failed it (a resend of that
    fail is then recognized), 'expired' when the reaper took it (the lost
    owner's later calls are then LEASE_LOST). Dead letters are never trimmed
    automatically. `log` is the script's event log (includes/events).
]]
-- @include "keys"
-- @include "fields"
-- @include "events"

local function release_unique(prefix, id, unique_key, unique_mode)
  if unique_key and unique_key ~= '' and unique_mode == 'until_finished' then
    local lock_key = key_unique(prefix, unique_key)
    if redis.call('GET', lock_key) == id then
      redis.call('DEL', lock_key)
    end
  end
end

local function record_error(job_key, entry)
  local n = bump(job_key, 'errors', 1)
  redis.call('HSET', job_key, 'error:' .. n, cjson.encode(entry))
end

local function bury(prefix, meta_key, dead_key, log, id, job, now, reason, outcome)
  local job_key = key_job(prefix, id)
  redis.call('ZADD', dead_key, now, id)
  redis.call('HSET', job_key, 'state', 'dead', 'outcome', outcome, 'dead_reason', reason,
    'died_at', now, 'finished_at', now)
  redis.call('HINCRBY', meta_key, 'dead', 1)
  release_unique(prefix, id, job.unique_key, job.unique_mode)
  emit(log, 'dead', id, job.name, job.attempt, job.correlation_id,
    {'reason', reason})
end
