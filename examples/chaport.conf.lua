-- Switchboard with Chaport as the website live chat and the built-in desk
-- for the agents (topology 2): every chat of your Chaport widget waits in a
-- desk group (pricing pages -> Billing, API docs -> Technical questions, else
-- Support) and agents answer through the desk's API as their Chaport
-- operators. Set-up, step by step: docs/providers/chaport.md.
--
--   export CHAPORT_TOKEN=...                              # Chaport: Settings -> API
--   export CHAPORT_WEBHOOK_SECRET=$(openssl rand -hex 32) # the secret part of the webhook URL
--   export DESK_ANN_TOKEN=$(openssl rand -hex 32) DESK_BOB_TOKEN=$(openssl rand -hex 32)
--   ./switchboard -c examples/chaport.conf.lua
--
-- Give Chaport the webhook URL https://<your host>/v1/channels/chaport/chaport/<CHAPORT_WEBHOOK_SECRET>
-- (a TLS proxy in front of the daemon, which listens on plain HTTP).
local base = "."

return {
  listen = "127.0.0.1:8080",
  data_dir = base .. "/var",
  log = { level = "info" },

  admin_token = env("SWITCHBOARD_ADMIN_TOKEN"),
  api_token = env("SWITCHBOARD_API_TOKEN"),

  paths = {
    scripts = base .. "/scripts",
    providers = base .. "/providers",
    rules = base .. "/rules",
  },

  channels = {
    chaport = {
      type = "chaport",
      token = env("CHAPORT_TOKEN"),
      webhook_secret = env("CHAPORT_WEBHOOK_SECRET"),
      -- api_base = "https://app.chaport.com/api/v1",   -- https://app.chaport.ru/api/v1 for Chaport's Russian site
      desk = "helpdesk",                  -- no bot: every chat goes straight to the desk
      -- checked in order against the page the chat started on (else the page the visitor is on); Lua patterns
      page_routes = {
        { pattern = "/pricing", group = "billing" },
        { pattern = "/docs/api", group = "tech" },
      },
      -- how each desk agent answers in Chaport: by the operator with the agent's email (the default),
      -- as a chosen operator (several agents may share one), or as an operator created on first use
      operators = {
        ann = { email = true },
        bob = { id = "59747c3ff77948220136b7b3" },
      },
      default_operator = { create = true },   -- agents not listed above
      offline_delay = 300,                    -- seconds before an agent who stopped taking chats is offline in Chaport
      -- bot_operator = "<operator id>",       -- who says the desk's own messages (lastMessage ...); unset: not sent
      -- payload = { ... },                    -- where the webhook's values are: docs/providers/chaport.md
    },
  },

  desks = {
    helpdesk = {
      type = "builtin",
      default_group = "support",
      statuses = {
        { name = "lunch", label = "At lunch", takes_chats = false },
        { name = "chats_only", label = "Chats only", takes_chats = true },
      },
      groups = {
        support = { name = "Support", inactivity_timeout = 600 },
        billing = { name = "Billing" },
        tech = { name = "Technical questions" },
      },
      agents = {
        { id = "ann", name = "Ann Lee", email = "ann@example.com", token = env("DESK_ANN_TOKEN"),
          groups = { "support", "billing" }, channels = { "chaport" }, capacity = 3 },
        { id = "bob", name = "Bob Ray", email = "bob@example.com", token = env("DESK_BOB_TOKEN"),
          groups = { "tech" }, channels = { "chaport" }, capacity = 2 },
      },
    },
  },
}
