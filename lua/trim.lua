--[[
  trim: apply a queue's completed-job retention exactly (maintenance).

  complete.lua trims in batches as jobs finish, which lets the completed set
  overshoot keep_last by up to its slack and checks max_age only now and
  then. The worker's maintenance runs this script to bring the set back to
  exactly keep_last jobs and to remove jobs older than max_age_ms, even when
  no job is finishing. Removed jobs lose their hash. Dead jobs are never
  touched.

  KEYS[1] completed  zset  finish time (ms) per job id

  ARGV[1] prefix      the queue's key prefix (see enqueue.lua)
  ARGV[2] keep_last   completed jobs to keep (>= 0)
  ARGV[3] max_age_ms  completed jobs older than this are removed (0 = no age
                      limit)
  ARGV[4] limit       most jobs removed by this call

  Reply: the number of jobs removed (call again while it equals limit).
  Errors: none.
]]
-- @include "clock"
-- @include "keys"
local completed_key = KEYS[1]
local prefix = ARGV[1]
local keep_last, max_age_ms, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local function remove(ids)
  if #ids == 0 then return 0 end
  local keys = {}
  for i, id in ipairs(ids) do keys[i] = key_job(prefix, id) end
  redis.call('DEL', unpack(keys))
  redis.call('ZREM', completed_key, unpack(ids))
  return #ids
end

local removed = 0
local excess = redis.call('ZCARD', completed_key) - keep_last
if excess > 0 then
  removed = remove(redis.call('ZRANGE', completed_key, 0, math.min(excess, limit) - 1))
end
if max_age_ms > 0 and removed < limit then
  removed = removed + remove(redis.call('ZRANGEBYSCORE', completed_key, '-inf',
    now_ms() - max_age_ms, 'LIMIT', 0, limit - removed))
end
return removed
