-- Topology 2, a website live chat into the built-in desk: visitors write in
-- the Chatra widget of your site, your agents answer in Switchboard's own
-- desk (docs/desk.md), and their replies reach the visitor in Chatra as
-- those agents. Set-up, step by step: docs/providers/chatra.md.
--
--   export CHATRA_PUBLIC_KEY=... CHATRA_SECRET_KEY=...   # Chatra: Settings -> API keys
--   export CHATRA_WEBHOOK_SECRET=$(openssl rand -hex 32)  # the secret part of the webhook URL
--   export DESK_TOKEN_ANN=$(openssl rand -hex 24) DESK_TOKEN_BOB=$(openssl rand -hex 24)
--   ./switchboard -c examples/chatra.conf.lua
--
-- In Chatra's settings (Integrations -> Webhooks) paste
-- https://<your host>/v1/channels/chatra/chatra/<CHATRA_WEBHOOK_SECRET>
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
    chatra = {
      type = "chatra",                    -- no bot: every chat goes straight to the desk
      desk = "helpdesk",
      public_key = env("CHATRA_PUBLIC_KEY"),
      secret_key = env("CHATRA_SECRET_KEY"),
      webhook_secret = env("CHATRA_WEBHOOK_SECRET"),
      -- Chatra group id -> desk group; a chat from any other group goes to the desk's default_group
      group_map = { ["<chatra billing group id>"] = "billing" },
      -- desk agents who are Chatra agents already reply under their Chatra id;
      -- the others by email (Chatra creates the agent on the first reply)
      agents = { ann = "<ann's chatra agent id>" },
      -- where the visitor's data goes: Chatra's field -> our property key
      client_fields = { email = "email", phone = "phone", info = { tienda = "store" } },
      -- api_base = "https://app.chatra.io/api",
      -- received_from = "Switchboard",   -- marks our replies in Chatra's webhooks
      -- system_messages = "skip",        -- "push": system messages with POST /pushedMessages/
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
        support = { name = "Support", inactivity_timeout = 600, members = { "ann" } },
        billing = { name = "Billing" },
      },
      agents = {
        { id = "ann", name = "Ann Lee", email = "ann@example.com", token = env("DESK_TOKEN_ANN"),
          groups = { "support", "billing" }, channels = { "chatra" }, capacity = 3 },
        { id = "bob", name = "Bob Ray", email = "bob@example.com", token = env("DESK_TOKEN_BOB"),
          groups = { "billing" }, channels = { "chatra" }, capacity = 2 },
      },
    },
  },
}
