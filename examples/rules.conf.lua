-- The example rules of docs/rules.md (examples/rules/) with what they act
-- on: a website live chat (Chatra) into the built-in desk, a Telegram chat
-- for the ops team and a Slack channel for support.
--
--   switchboard test -c examples/rules.conf.lua examples/rules/spec     # the rules' specs
--   switchboard -c examples/rules.conf.lua                               # serving
local base = "."

return {
  listen = "127.0.0.1:8080",
  data_dir = base .. "/var",
  timezone = "UTC",
  api_token = env("SWITCHBOARD_API_TOKEN"),
  admin_token = env("SWITCHBOARD_ADMIN_TOKEN"),
  paths = {
    scripts = base .. "/scripts",
    providers = base .. "/providers",
    rules = base .. "/examples/rules",
    modules = { base .. "/examples" },
  },

  rules = { max_depth = 2, budget_ms = 50, max_event_age = 300 },

  -- where the rules' notify actions post (the secrets stay here: docs/rules.md)
  notify = {
    telegram_ops = { type = "telegram", token = env("OPS_TELEGRAM_TOKEN"), chat_id = env("OPS_TELEGRAM_CHAT") },
    slack_support = { type = "slack", url = env("SUPPORT_SLACK_WEBHOOK") },
  },

  channels = {
    site = {
      type = "chatra", desk = "helpdesk",
      public_key = env("CHATRA_PUBLIC_KEY"), secret_key = env("CHATRA_SECRET_KEY"),
      webhook_secret = env("CHATRA_WEBHOOK_SECRET"),
    },
    web = {
      type = "webhook", secret = env("SWITCHBOARD_WEB_SECRET") or "change-me",
      callback_url = env("SWITCHBOARD_WEB_CALLBACK") or "http://127.0.0.1:9000/callback",
      bot = "demo", desk = "helpdesk",
    },
  },

  desks = {
    helpdesk = {
      type = "builtin",
      default_group = "support",
      groups = {
        support = { name = "Support", working_hours = "mon-fri 09:00-18:00" },
        fallback = { name = "Fallback", working_hours = "mon-sun 00:00-24:00" },
      },
      agents = {
        { id = "ann", name = "Ann Lee", email = "ann@example.com", token = env("DESK_TOKEN_ANN"),
          groups = { "support", "fallback" }, channels = { "site", "web" }, capacity = 3 },
      },
    },
  },

  bots = {
    demo = { type = "lua", module = "bots.demo" },
  },
}
