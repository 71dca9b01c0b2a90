-- Switchboard with JivoChat as a business channel (topology 3): Jivo is the
-- client's side and the agents' desk at once. The demo bot answers the
-- clients of your Jivo widget; "talk to a human" invites Jivo's agents.
-- Set-up, step by step: docs/providers/jivo.md.
--
--   export JIVO_PROVIDER_ID=...    # issued by Jivo for your bot provider
--   export JIVO_BOT_TOKEN=...      # the token agreed with Jivo
--   export JIVO_SECRET=$(openssl rand -hex 32)   # the secret part of the URL you give Jivo
--   ./switchboard -c examples/jivo.conf.lua
--
-- Give Jivo the bot's URL https://<your host>/v1/providers/jivo/jivo/<JIVO_SECRET>
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
    modules = { base .. "/examples" },   -- the demo bot: bots.demo
  },

  channels = {
    jivo = {
      type = "jivo",
      provider_id = env("JIVO_PROVIDER_ID"),
      bot_token = env("JIVO_BOT_TOKEN"),
      secret = env("JIVO_SECRET"),
      -- api_base = "https://bot.jivosite.com",
      bot = "demo",
      desk = "jivo_agents",               -- Jivo's own agents take the chats the bot hands over
      -- invite_message_field = "message",  -- false: INVITE_AGENT never carries a text
      -- agent_joined_event = "AGENT_JOINED",
    },
  },

  desks = {
    jivo_agents = {
      type = "jivo",
      -- seconds without a client message or an event from Jivo before the chat
      -- ends on our side (Jivo's agents' messages do not reach us: keep it long)
      inactivity_timeout = 3600,
      -- history_labels = { client = "Client", bot = "Bot" },
    },
  },

  bots = {
    demo = { type = "lua", module = "bots.demo" },
  },
}
