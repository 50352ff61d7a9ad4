--[[
  settings: write a queue's flow-control settings (read by every claim;
  see includes/flow for what each one does).

  Two sources, kept apart so an operator's change at run time is not
  undone by the next worker that starts:
    'config'   a worker applying its TOML at start: fields rate_max,
               rate_period_ms, concurrency, share_every. The last worker
               to start wins; all replicas normally share one config.
    'runtime'  an operator (client, CLI): fields rt_rate_max,
               rt_rate_period_ms, rt_concurrency, which win over the
               config values while present. Deleting them returns the
               queue to its config values.
  Afterwards a wake token lets an idle worker re-check at once (a raised
  limit may let waiting jobs start), and the rate log is dropped when no
  rate limit is left.

  KEYS[1] meta  hash  the settings

  ARGV[1] prefix  the queue's key prefix (see enqueue.lua)
  ARGV[2] source  'config' or 'runtime'
  then pairs: field, value ("" deletes the field)

  Reply: the effective settings afterwards: {rate_max, rate_period_ms,
  concurrency, share_every} (0 = no limit / strict priority).
  Errors: BAD_SETTING when a field does not belong to the source (nothing
  is written).
]]
-- @include "keys"
-- @include "ready"
-- @include "flow"
local meta_key = KEYS[1]
local prefix, source = ARGV[1], ARGV[2]
local FIELDS = {
  config = {rate_max = true, rate_period_ms = true, concurrency = true, share_every = true},
  runtime = {rt_rate_max = true, rt_rate_period_ms = true, rt_concurrency = true},
}
local allowed = FIELDS[source]
if not allowed then
  return redis.error_reply('BAD_SETTING unknown source ' .. tostring(source))
end
for i = 3, #ARGV, 2 do
  if not allowed[ARGV[i]] then
    return redis.error_reply('BAD_SETTING ' .. tostring(ARGV[i]) .. ' is not a ' .. source .. ' setting')
  end
end
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', meta_key, ARGV[i])
  else
    redis.call('HSET', meta_key, ARGV[i], ARGV[i + 1])
  end
end
local flow = read_flow(meta_key)
if flow.rate_max <= 0 then redis.call('DEL', key_rate(prefix)) end
signal_ready(prefix)
return {flow.rate_max, flow.rate_period_ms, flow.concurrency, flow.share_every}
