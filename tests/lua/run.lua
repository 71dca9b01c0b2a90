-- A tiny runner for the engine's pure Lua modules. From the repository root:
--
--     lua5.4 tests/lua/run.lua
--
-- Loads scripts/routing.lua with a stub `log` global (which records what is
-- logged), then runs every tests/lua/test_*.lua in name order (a test file
-- may load another module itself, after stubbing the engine's globals it
-- uses, as test_schema.lua does). A test file
-- registers tests with `test(name, fn)`; helpers: `eq(got, want, what)`,
-- `logged(level)` (records since the test started), `reset_log()`.
-- Prints each test and finally "N passed, N failed"; exits 1 on any failure.

local DIR = "tests/lua"

-- ---- the stub log ---------------------------------------------------------
local records = {}
log = {}
for _, level in ipairs({ "debug", "info", "warn", "error" }) do
  log[level] = function(msg, fields)
    records[#records + 1] = { level = level, msg = msg, fields = fields or {} }
  end
end

function reset_log() records = {} end

function logged(level)
  local out = {}
  for _, r in ipairs(records) do
    if level == nil or r.level == level then out[#out + 1] = r end
  end
  return out
end

-- ---- assertions -----------------------------------------------------------
local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function eq(got, want, what)
  if got ~= want or math.type(got) ~= math.type(want) then
    error(string.format("%s: got %s (%s), want %s (%s)", what or "value", show(got),
                        math.type(got) or type(got), show(want), math.type(want) or type(want)), 2)
  end
end

-- ---- registry -------------------------------------------------------------
local tests = {}
local current_file
function test(name, fn)
  tests[#tests + 1] = { file = current_file, name = name, fn = fn }
end

-- ---- the modules under test -------------------------------------------------
-- scripts/routing.lua is a module (it returns its table); the specs use it as `routing`
local ok, err = pcall(dofile, "scripts/routing.lua")
if ok then routing = err end
if not ok then
  io.stderr:write("cannot load scripts/routing.lua (run from the repository root): " .. tostring(err) .. "\n")
  print("0 passed, 1 failed")
  os.exit(1)
end

-- ---- the test files -------------------------------------------------------
local files = {}
local p = io.popen('ls -1 "' .. DIR .. '" 2>/dev/null')
for f in p:lines() do
  if f:match("^test_.*%.lua$") then files[#files + 1] = f end
end
p:close()
table.sort(files)

local passed, failed = 0, 0
for _, f in ipairs(files) do
  current_file = f
  local chunk, lerr = loadfile(DIR .. "/" .. f)
  if not chunk then
    print("FAIL " .. f .. ": " .. tostring(lerr))
    failed = failed + 1
  else
    local fok, ferr = pcall(chunk)
    if not fok then
      print("FAIL " .. f .. " (loading): " .. tostring(ferr))
      failed = failed + 1
    end
  end
end

for _, t in ipairs(tests) do
  reset_log()
  local tok, terr = xpcall(t.fn, function(e) return tostring(e) end)
  if tok then
    passed = passed + 1
    print("ok   " .. t.file .. ": " .. t.name)
  else
    failed = failed + 1
    print("FAIL " .. t.file .. ": " .. t.name .. ": " .. terr)
  end
end

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed > 0 and 1 or 0)
