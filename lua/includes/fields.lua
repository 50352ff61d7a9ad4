--[[
  include fields: counters in job hashes that tolerate garbage.

  bump(job_key, field, by) -> the new value
    Adds `by` to a numeric field, reading a missing or non-numeric value as
    0. HINCRBY would raise on garbage ("hash value is not an integer"), and
    an error raised after a destructive step (an RPOP, a ZREM) aborts the
    script half-way, which would lose the job: scripts must not fail after
    they start moving a job.
]]
local function bump(job_key, field, by)
  local value = (tonumber(redis.call('HGET', job_key, field)) or 0) + by
  redis.call('HSET', job_key, field, value)
  return value
end
