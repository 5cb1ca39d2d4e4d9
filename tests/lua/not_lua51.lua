-- Valid Lua 5.4 that Redis's Lua 5.1 refuses: check_syntax.sh must name this
-- file (the test lua.syntax_rejects_lua54).
local half = tonumber(ARGV[1]) // 2
return half
