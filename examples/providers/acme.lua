-- Acme Chat channel: the adapter docs/writing-an-adapter.md builds, step by step.
--   in:  POST /v1/channels/{instance}/acme: events Acme signs with HMAC-SHA256
--   out: POST {api_base}/v1/chats/{chat_id}/messages through the outbox;
--        PUT {api_base}/v1/webhook at every load
-- Instance config: { type = "acme", api_base =, api_token =, webhook_secret =, public_url =, bot = }
local channels = require("channels")
local flow = require("flow")
local inbound = require("inbound")
local S = require("schema")
local acme = {}

-- What Acme posts: an event; a new message is the one type we handle.
local Event = S.object({
  event_id = S.id{ required = true },
  type = S.string{ required = true, max = 64 },
}, { by = "type", cases = {
  ["message.created"] = {
    message = S.object({
      id = S.id{ required = true },
      chat_id = S.id{ required = true },
      text = S.text{ required = true, nonempty = true },
      author = S.object{ name = S.string{ max = 256 } },
    }, { required = true }),
  },
} })

inbound.endpoint{
  method = "POST", path = "/v1/channels/{instance}/acme",
  registry = channels, type = "acme",
  auth = { hmac = {
    header = "X-Acme-Signature", algorithm = "sha256", encoding = "hex", prefix = "sha256=",
    secret = "webhook_secret",
    -- Acme signs the time it sent the event, a dot, and the body
    message = function(req) return (req.headers["x-acme-timestamp"] or "") .. "." .. req.body end,
  } },
  schema = Event,
  event_id = "event_id",
  handler = function(ctx)
    local e = ctx.body
    if e.type ~= "message.created" then
      return 200, { ok = true, ignored = true }
    end
    local m = e.message
    flow.client_message(ctx.name, m.chat_id, {
      text = m.text, client = { name = m.author and m.author.name }, provider_ids = { acme = m.id },
    })
    return 200, { ok = true }
  end,
}

-- What we send: Acme takes 1-2000 characters and shows no author.
local MAX_TEXT = 2000
local Send = S.object{ text = S.string{ required = true, nonempty = true, max_chars = MAX_TEXT } }

function acme.send(name, inst, conv, m)
  local text = m.text ~= "" and m.text or (m.attachments and m.attachments[1] and m.attachments[1].url)
  if not text then return end
  for _, part in ipairs(channels.split_text(channels.agent_prefix(inst, m) .. text, MAX_TEXT)) do
    outbox.send{
      conversation = conv, target = name,
      url = inst.api_base .. "/v1/chats/" .. url.encode(conv.client_id) .. "/messages",
      headers = { Authorization = "Bearer " .. channels.secret_ref("channels", name, "api_token") },
      body = S.assert(Send, { text = part }, "acme send"),
      error_text = { json = "error.message" },
    }
  end
end

channels.adapters.acme = acme

-- Tell Acme where our webhook is, at every load.
inbound.register_at_load{
  name = "acme_webhook", registry = channels, type = "acme",
  request = function(name, inst, public_url)
    return {
      method = "PUT", url = inst.api_base .. "/v1/webhook",
      headers = { Authorization = "Bearer " .. inst.api_token },
      body = { url = public_url .. "/v1/channels/" .. url.encode(name) .. "/acme", secret = inst.webhook_secret },
    }
  end,
}

return acme
