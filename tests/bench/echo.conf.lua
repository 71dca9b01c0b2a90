-- Benchmark config for the Lua route row: scripts/echo.lua only, no channels.
local here = env("SWITCHBOARD_BENCH_DIR") or "tests/bench"
return {
  listen = "127.0.0.1:0",
  data_dir = env("SWITCHBOARD_BENCH_DATA") or "/tmp/switchboard-bench",
  log = { level = "warn" },
  paths = { scripts = here .. "/scripts", providers = here .. "/none", rules = here .. "/none" },
  store = { sync = "off" },
}
