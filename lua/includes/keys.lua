--[[
  include keys: the name of every key a script derives at run time.

  Each helper takes the queue's key base, "<prefix>:{<queue>}:", which
  every script receives as ARGV[1] (QueueKeys::prefix in
  crates/taskline/src/keys.rs builds it; that file names every key of a
  queue and says what each holds). A derived key is the base followed by a
  suffix, so it carries the queue's hash tag and lives in the slot of the
  keys the script was given: scripts run unchanged on Redis Cluster, in
  strict mode. Keys a script is given in KEYS are used from there; these
  are the ones it cannot be given in advance (a job hash for a popped id,
  a group's waiting list) or that a shared helper needs without a KEYS
  slot of its own. The names here and in keys.rs must agree (a test in
  scripts.rs runs both).

  key_job(base, id)         hash    one job
  key_done(base, id)        string  a job completed and deleted at once
                                    (keep_last = 0): its lease token
  key_unique(base, key)     string  a unique key's lock: the holder's id
  key_ready(base, level)    list    ready ids of one priority level
  key_wake(base)            list    wake-up tokens of idle workers
  key_meta(base)            hash    settings and counters
  key_rate(base)            zset    the rate limit's log of starts
  key_blocked(base)         string  a claim was held back by concurrency
  key_groups(base)          hash    mutex group -> slots held
  key_gwait(base, group)    list    ready jobs of a group waiting for a slot
]]
local function key_job(base, id) return base .. 'job:' .. id end
local function key_done(base, id) return base .. 'done:' .. id end
local function key_unique(base, key) return base .. 'unique:' .. key end
local function key_ready(base, level) return base .. 'ready:' .. level end
local function key_wake(base) return base .. 'wake' end
local function key_meta(base) return base .. 'meta' end
local function key_rate(base) return base .. 'rate' end
local function key_blocked(base) return base .. 'blocked' end
local function key_groups(base) return base .. 'groups' end
local function key_gwait(base, group) return base .. 'gwait:' .. group end
