--[[
  include clock: the one clock every script uses.

  now_ms() -> integer milliseconds since the Unix epoch on the Redis
  server's clock (TIME). Workers never pass their own wall clock: containers
  may disagree by seconds, the server is the single reference.
]]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
