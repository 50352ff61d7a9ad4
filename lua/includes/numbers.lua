--[[
  include numbers: integers as text for redis.call.

  int_text(n) -> the integer n as text. redis.call formats a Lua number
  argument as a double ("%.17g"), which costs more than the command it is
  passed to, and Lua's own `..` formats one with "%.14g"; scripts on the
  hot path pass integers through this instead (once per value, not once
  per use). 1 to 32 come from a table.
]]
-- The small integers a batch uses most (attempts, positions in a claim),
-- written out: a table lookup instead of a call to format them.
local SMALL_INT_TEXT = {'1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12', '13', '14', '15',
  '16', '17', '18', '19', '20', '21', '22', '23', '24', '25', '26', '27', '28', '29', '30', '31', '32'}

local function int_text(n)
  return SMALL_INT_TEXT[n] or string.format('%d', n)
end
