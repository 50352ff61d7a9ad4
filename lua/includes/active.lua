--[[
  include active: the `active` zset (lease deadline in ms per job id) and
  the anchor that keeps it in Redis's skiplist encoding.

  Redis stores a sorted set of at most 128 members of at most 64 bytes as
  a listpack, a flat array in which every ZADD and ZREM scans the members
  one by one (a claim's new deadlines are the latest, so each insert walks
  the whole array). A busy worker keeps 50 to 150 jobs leased, and those
  scans cost about 6% of Redis's instructions per processed job
  (BENCHMARKS.md). A member longer than 64 bytes makes Redis switch the set
  to its skiplist encoding, which finds members through a hash table and
  never switches back while the key exists. So every claim also writes
  ACTIVE_ANCHOR, a member that can never be a job id (job ids hold no
  spaces), with score +inf, and the key lives on while no job is leased.

  This relies on the server's zset-max-listpack-value being below the
  anchor's length (the default is 64); with a larger setting the set
  stays a listpack, which is slower and no less correct.

  The anchor is never a lease: the reaper reads only scores below now, and
  every reader of `active` counts and lists only finite scores
  (active_count here; repair and the doctor read `ZRANGEBYSCORE -inf
  (+inf`; the job listing pages by rank and drops the +inf score).

  lease_all(active_key, deadline_text, ids)
    Adds every id of `ids` with one deadline, and the anchor, in one ZADD
    (a no-op for no ids).
  active_count(active_key) -> jobs leased (the anchor not counted)
]]
local ACTIVE_ANCHOR = 'taskline: keeps this zset a skiplist, not a lease (lua/includes/active.lua)'

local function lease_all(active_key, deadline_text, ids)
  local n = #ids
  if n == 0 then return end
  local args = {'inf', ACTIVE_ANCHOR}
  for i = 1, n do
    args[2 * i + 1] = deadline_text
    args[2 * i + 2] = ids[i]
  end
  redis.call('ZADD', active_key, unpack(args))
end

local function active_count(active_key)
  return redis.call('ZCOUNT', active_key, '-inf', '(inf')
end
