-- Switchboard example configuration: works out of the box on loopback.
-- Relative paths are relative to the directory the daemon is started from
-- (`make install` rewrites `base` to the installed share folder and `data`
-- to $(LOCALSTATEDIR)/lib/switchboard).
local base = "."
local data = base .. "/var"

return {
  listen = "127.0.0.1:8080",
  data_dir = data,

  log = { level = "info" },                       -- debug | info | warn | error

  -- Bearer tokens. With no admin token, admin endpoints answer 403.
  admin_token = env("SWITCHBOARD_ADMIN_TOKEN"),
  api_token = env("SWITCHBOARD_API_TOKEN"),      -- the /v1 API, every scope
  -- Narrower API tokens (docs/security.md):
  -- api_tokens = {
  --   { name = "dashboard", token = env("SWITCHBOARD_DASHBOARD_TOKEN"), scopes = { "read" } },
  --   { name = "demo-bot", token = env("SWITCHBOARD_DEMO_BOT_TOKEN"), scopes = { "write" }, bot = "demo" },
  -- },

  -- Every *.lua directly inside these folders is loaded, in name order.
  paths = {
    scripts = base .. "/scripts",
    providers = base .. "/providers",
    rules = base .. "/rules",
    modules = { base .. "/examples" },   -- found by require only (the demo bot: bots.demo)
  },

  http = {
    max_body_bytes = 1048576,    -- larger bodies get 413
    max_header_bytes = 16384,
    idle_timeout = 60,           -- seconds a connection may sit idle or trickle
    max_connections = 4096,      -- client connections; lowered to fit the open files limit
  },

  http_client = {
    max_response_bytes = 16 * 1048576,
    max_connections = 64,        -- idle connections kept for reuse
  },

  lua = {
    memory_limit_mb = 64,        -- per runtime
    cpu_ms_per_resume = 200,     -- one uninterrupted run of a handler
    cpu_ms_per_job = 2000,       -- all runs of one handler together
    job_timeout = 30,            -- seconds from start to end, waiting included
  },

  shutdown_grace = 10,           -- seconds SIGTERM waits for in-flight jobs

  store = { sync = "full" },     -- full | normal | off (docs/conversations.md)

  conversations = {
    max_text_bytes = 4096,
    recent_messages = 20,        -- kept in memory per conversation in memory
    memory_idle = 300,           -- seconds before an unused conversation leaves memory
    dedupe_window = 86400,       -- seconds a conversation remembers a message_id
  },

  timezone = "UTC",              -- of calendar timers: timer.every("mon-fri 09:00", ...)

  retention = {
    delivered_outbox = 0,        -- seconds; 0: a delivered call is deleted
    dead_letters = 30 * 86400,
    closed_conversations = 0,    -- seconds after their last change; 0: kept for ever
  },

  outbox = {
    max_attempts = 10,
    max_age = 86400,
    backoff_base = 1,
    backoff_max = 300,
    concurrency = 64,
    timeout = 30,
  },

  -- Engine events: script subscribers (events.on) and GET /v1/events/stream
  -- (docs/events.md).
  events = {
    concurrency = 16,            -- handler jobs at once, all subscribers together
    max_attempts = 5,            -- attempts of a failing handler, then the event is dead
    retry_max = 60,              -- seconds between two attempts, at most (1, 2, 4 ... s)
    keep_cursors = 7 * 86400,    -- seconds a subscriber no load declares keeps its cursor
    stream_max = 64,             -- open event streams (503 beyond)
    stream_buffer_bytes = 1048576, -- unsent output of one stream before it is closed
    stream_heartbeat = 15,       -- seconds between two comment lines on a quiet stream
  },

  -- Counters of scripts (metrics.count), shown on /metrics.
  metrics = {
    max_series = 1000,           -- series in all; a new one beyond is not counted (a warning names it)
  },

  -- A generic webhook channel answered by the demo bot. Its replies go to
  -- callback_url (nothing listens there out of the box: they wait in the
  -- outbox, retried, and end as dead letters you can list and retry).
  -- Without SWITCHBOARD_WEB_SECRET its secret is "change-me", which is
  -- public: the daemon warns about it at every load.
  channels = {
    web = {
      type = "webhook",
      secret = env("SWITCHBOARD_WEB_SECRET") or "change-me",
      callback_url = env("SWITCHBOARD_WEB_CALLBACK") or "http://127.0.0.1:9000/callback",
      bot = "demo",
      -- desk = "support",          -- hand off to the desk below (docs/handoff.md)
    },
    -- A Telegram bot (docs/providers/telegram.md). Telegram posts updates
    -- only to https:// on port 443, 80, 88 or 8443: put a TLS proxy there.
    -- tg = {
    --   type = "telegram",
    --   token = env("TELEGRAM_BOT_TOKEN"),
    --   secret_token = env("TELEGRAM_SECRET"),      -- A-Z a-z 0-9 _ -, 1-256 characters
    --   public_url = "https://chat.example.com",    -- setWebhook at every load
    --   bot = "demo",
    --   -- agent_prefix = "{name}: ",              -- how agents' messages name the agent
    -- },
  },

  -- A live-chat desk speaking JAICP's Operator API. Uncomment, point api_url
  -- at your server, and set the channel's desk.
  -- desks = {
  --   support = {
  --     type = "operator_api",
  --     api_url = "http://127.0.0.1:9200/operatorapi",
  --     api_key = env("SWITCHBOARD_OPERATOR_API_KEY"),
  --     public_url = "http://127.0.0.1:8080",
  --     default_group = "1",
  --     inactivity_timeout = 600,
  --   },
  -- },

  bots = {
    demo = { type = "lua", module = "bots.demo" },
  },
}
