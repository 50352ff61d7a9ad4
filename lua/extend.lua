--[[
  extend: renew the leases of many jobs in one call (the worker's heartbeat).

  Each (id, token) pair whose token still holds the job's lease gets the
  deadline now + lease_ms. Any other pair is reported lost and changes
  nothing: its handler must be cancelled and its outcome discarded.

  KEYS[1] active  zset  lease deadline (ms) per job id

  ARGV[1] prefix    the queue's key prefix (see enqueue.lua)
  ARGV[2] lease_ms  new lease length from now, in ms
  ARGV[3..] pairs   id, token, id, token, ...

  Reply: {deadline_ms, lost_index...}: the new deadline of the renewed
  leases, then the 1-based position (among the pairs) of each pair whose
  lease was lost. Positions, not ids: one worker may hold a stale and a live
  lease of the same job, and only the stale one must be cancelled.
  Errors: none.
]]
-- @include "clock"
-- @include "keys"
local active_key = KEYS[1]
local prefix = ARGV[1]
local lease_ms = tonumber(ARGV[2])
local deadline = now_ms() + lease_ms
local reply = {deadline}
local pair = 0
for i = 3, #ARGV, 2 do
  pair = pair + 1
  local id, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', key_job(prefix, id), 'state', 'lease_token')
  if f[1] == 'active' and f[2] == token then
    redis.call('ZADD', active_key, 'XX', deadline, id)
  else
    reply[#reply + 1] = pair
  end
end
return reply
