--[[
  purge: remove dead jobs for good. Purge is the only way a dead letter
  leaves the system; nothing trims the dead letter queue automatically.

  Each named id that is in the dead letter zset, and whose job hash says
  state 'dead' (or whose hash is already missing, a broken entry that only
  purge can clean up), is removed from the zset and its job hash deleted,
  with a 'purged' event. Any other id (not in the dead letter queue, or in
  the zset while its hash says another state) is reported and left alone.
  The job's unique-key lock needs no work: it was released when the job
  died ('until_finished') or expires by itself ('ttl').

  KEYS[1] meta    hash    counter `purged` += jobs purged
  KEYS[2] dead    zset    time of death (ms) per job id
  KEYS[3] events  stream  lifecycle events

  ARGV[1] prefix  the queue's key prefix (see enqueue.lua)
  ARGV[2] cap     events stream bound (0 = no events)
  ARGV[3..] ids   job ids to purge (the client sends at most 1,000 per call)

  Reply: {purged, not_dead_id...}: how many were purged, then the ids that
  were left alone.
  Errors: none.
]]
-- @include "keys"
-- @include "events"
local meta_key, dead_key = KEYS[1], KEYS[2]
local prefix = ARGV[1]
local log = event_log(prefix, KEYS[3], tonumber(ARGV[2]))

local reply = {0}
for i = 3, #ARGV do
  local id = ARGV[i]
  local job_key = key_job(prefix, id)
  local f = redis.call('HMGET', job_key, 'state', 'name', 'attempt', 'correlation_id')
  local in_dlq = redis.call('ZSCORE', dead_key, id)
  if in_dlq and (f[1] == 'dead' or not f[1]) then
    redis.call('ZREM', dead_key, id)
    redis.call('DEL', job_key)
    emit(log, 'purged', id, f[2], f[3] or 0, f[4], nil)
    reply[1] = reply[1] + 1
  else
    reply[#reply + 1] = id
  end
end
if reply[1] > 0 then redis.call('HINCRBY', meta_key, 'purged', reply[1]) end
return reply
