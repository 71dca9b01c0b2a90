-- Topology 1, bot first and agents in Chat2Desk (docs/providers/chat2desk.md):
-- clients write to the webhook channel `web`, the demo bot answers, and its
-- switch hands the client to an operator group in Chat2Desk. Operators'
-- messages come back by Chat2Desk's webhook and go to the client.
--
--   CHAT2DESK_TOKEN=... C2D_CHANNEL_ID=17 C2D_WEBHOOK_SECRET=$(openssl rand -hex 24) \
--   SWITCHBOARD_WEB_SECRET=... ./switchboard -c examples/chat2desk.conf.lua
--
-- Register https://<your host>/v1/providers/c2d/chat2desk/<C2D_WEBHOOK_SECRET>
-- with Chat2Desk for the events outbox, close_request, close_dialog,
-- dialog_transferred and operator_status_changed (the page says how).
local base = "."

return {
  listen = "127.0.0.1:8080",
  data_dir = base .. "/var",
  api_token = env("SWITCHBOARD_API_TOKEN"),
  admin_token = env("SWITCHBOARD_ADMIN_TOKEN"),
  paths = {
    scripts = base .. "/scripts",
    providers = base .. "/providers",
    rules = base .. "/rules",
    modules = { base .. "/examples" },
  },

  channels = {
    web = {
      type = "webhook",
      secret = env("SWITCHBOARD_WEB_SECRET") or "change-me",
      callback_url = env("SWITCHBOARD_WEB_CALLBACK") or "http://127.0.0.1:9000/callback",
      bot = "demo",
      desk = "c2d",
    },
  },

  desks = {
    c2d = {
      type = "chat2desk",
      api_token = env("CHAT2DESK_TOKEN"),            -- Settings -> API
      channel_id = tonumber(env("C2D_CHANNEL_ID") or "0"),  -- the external channel clients appear on
      webhook_secret = env("C2D_WEBHOOK_SECRET"),    -- the last segment of the webhook URL
      default_group = env("C2D_DEFAULT_GROUP"),      -- a group's name or id; unset: the administrator
      -- signature = { header = "X-Signature", timestamp_header = "X-Timestamp" },
      -- forward = { autoreply = true, system = false },
      inactivity_timeout = 600,
    },
  },

  bots = {
    demo = { type = "lua", module = "bots.demo" },
  },
}
