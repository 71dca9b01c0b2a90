-- Benchmark config. SWITCHBOARD_BENCH_DIR (this folder), SWITCHBOARD_BENCH_DATA,
-- SWITCHBOARD_BENCH_SYNC (full | normal), SWITCHBOARD_BENCH_BOT (a bot name,
-- or "none" for ingest only) and SWITCHBOARD_BENCH_CALLBACK come from
-- tests/bench/run.py.
local here = env("SWITCHBOARD_BENCH_DIR") or "tests/bench"
return {
  listen = "127.0.0.1:0",
  data_dir = env("SWITCHBOARD_BENCH_DATA") or "/tmp/switchboard-bench",
  log = { level = "error" },   -- "no bot configured" warnings would flood the ingest-only row
  paths = {
    scripts = here .. "/../../scripts",
    providers = here .. "/../../providers",
    rules = here .. "/none",
    modules = { here .. "/modules" },
  },
  store = { sync = env("SWITCHBOARD_BENCH_SYNC") or "normal" },
  channels = {
    bench = {
      type = "webhook", secret = "bench-secret", bot = env("SWITCHBOARD_BENCH_BOT") or "echo",
      callback_url = env("SWITCHBOARD_BENCH_CALLBACK") or "http://127.0.0.1:9/none",
    },
  },
  bots = { echo = { type = "lua", module = "bots.echo" } },
  outbox = { concurrency = 256 },
  -- the memory row holds every conversation it makes
  conversations = { memory_idle = 3600 },
}
