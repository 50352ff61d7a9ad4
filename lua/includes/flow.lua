--[[
  include flow: queue-wide flow control, applied by every claim.

  The settings live in the queue's meta hash, so every worker process obeys
  the same numbers and a change applies at the next claim (see
  settings.lua, which writes them):
    rate_max, rate_period_ms   at most rate_max jobs start per
                               rate_period_ms (0 = no limit). Written by
                               workers at start, from their TOML.
    concurrency                at most this many jobs of the queue active
                               at once across all workers (0 = no limit).
                               From TOML, like the rate.
    rt_rate_max, rt_rate_period_ms, rt_concurrency
                               the same, set at run time by an operator;
                               when present they win over the TOML values.
    share_every                priority minimum share: in every run of
                               share_every jobs leased, each lower priority
                               level gets one (0 = strict priority).
    hold_until                 no claims before this time (ms), set when a
                               handler reports that the queue's upstream is
                               rate limiting (release.lua).
    paused                     '1' = no claims at all.
  Starts are logged in the queue's `rate` key (includes/keys), a zset of
  lease tokens scored by start time on the server clock. The window
  slides: no rate_period_ms-long window ever holds more than rate_max
  starts, not only aligned ones. The log holds at most rate_max entries.
  A claim cut short by global concurrency while ready jobs wait leaves the
  marker `blocked` (mark_blocked); the next attempt that ends (unblock)
  deletes it and wakes one idle worker, so waiting workers neither poll
  nor sleep through a freed slot.

  read_flow(meta_key) -> flow: {paused, rate_max, rate_period_ms,
    concurrency, share_every, hold_until} (numbers; 0 = unset). One HMGET.
  admit(prefix, k, flow, now, count) -> allowed, limit
    How many of `count` jobs may start now, and the limit that bound
    ('' when none did).
  note_starts(prefix, flow, now, tokens) -> wait_until_ms or nil
    Logs the starts of a rate-limited queue; when the log is full, returns
    when the next start will be allowed.
  rate_wait(prefix, flow) -> the time the next start is allowed (the oldest
    logged start + period)
  unblock(prefix)
    Called when an attempt ends (a slot of the queue is free): wakes one
    idle worker if a claim was held back by global concurrency.
  mark_blocked(prefix)
    Leaves the marker that a claim was held back by global concurrency
    while jobs wait (for BLOCKED_MARKER_MS, a backstop: unblock deletes it).
]]
-- @include "keys"
-- @include "ready"
-- @include "active"

local BLOCKED_MARKER_MS = 600000

local function read_flow(meta_key)
  local m = redis.call('HMGET', meta_key, 'paused', 'rate_max', 'rate_period_ms', 'concurrency',
    'rt_rate_max', 'rt_rate_period_ms', 'rt_concurrency', 'share_every', 'hold_until')
  local flow = {paused = m[1] == '1', rate_max = tonumber(m[2]) or 0,
    rate_period_ms = tonumber(m[3]) or 0, concurrency = tonumber(m[4]) or 0,
    share_every = tonumber(m[8]) or 0, hold_until = tonumber(m[9]) or 0}
  if m[5] then
    flow.rate_max = tonumber(m[5]) or 0
    flow.rate_period_ms = tonumber(m[6]) or 0
  end
  if m[7] then flow.concurrency = tonumber(m[7]) or 0 end
  if flow.rate_period_ms <= 0 then flow.rate_max = 0 end
  return flow
end

local function admit(prefix, k, flow, now, count)
  if count <= 0 then return 0, '' end
  if flow.hold_until > now then return 0, 'hold' end
  local allowed, limit = count, ''
  if flow.concurrency > 0 then
    local free = flow.concurrency - active_count(k.active)
    if free < allowed then
      allowed, limit = math.max(free, 0), 'concurrency'
    end
  end
  if flow.rate_max > 0 and allowed > 0 then
    local log = key_rate(prefix)
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - flow.rate_period_ms)
    local free = flow.rate_max - redis.call('ZCARD', log)
    if free < allowed then
      allowed, limit = math.max(free, 0), 'rate'
    end
  end
  return allowed, limit
end

local function rate_wait(prefix, flow)
  local oldest = redis.call('ZRANGE', key_rate(prefix), 0, 0, 'WITHSCORES')
  if oldest[2] then return tonumber(oldest[2]) + flow.rate_period_ms end
  return nil
end

local function note_starts(prefix, flow, now, tokens)
  if flow.rate_max <= 0 or #tokens == 0 then return nil end
  local log = key_rate(prefix)
  zadd_all(log, now, tokens)
  if redis.call('ZCARD', log) >= flow.rate_max then return rate_wait(prefix, flow) end
  return nil
end

local function unblock(prefix)
  if redis.call('DEL', key_blocked(prefix)) == 1 then
    signal_ready(prefix)
  end
end

local function mark_blocked(prefix)
  redis.call('SET', key_blocked(prefix), '1', 'PX', BLOCKED_MARKER_MS)
end
