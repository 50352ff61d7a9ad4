--[[
  include fields: counters in job hashes that tolerate garbage.

  bump(job_key, field, by) -> the new value
    Adds `by` to a numeric field, reading a missing or non-numeric value as
    0. A plain HINCRBY would raise on garbage ("hash value is not an
    integer"), and an error raised after a destructive step (an RPOP, a
    ZREM) aborts the script half-way, which would lose the job: scripts must
    not fail after they start moving a job. So HINCRBY runs under pcall (one
    command in the normal case) and garbage is overwritten.
]]
local function bump(job_key, field, by)
  local value = redis.pcall('HINCRBY', job_key, field, by)
  if type(value) == 'number' then return value end
  redis.call('HSET', job_key, field, by)
  return by
end
