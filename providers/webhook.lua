-- Generic HTTP channel (docs/providers/webhook.md).
--   in:  POST /v1/channels/{instance}/messages  (Authorization: Bearer <secret>)
--        {"client_id","text","client":{profile},"message_id":"idempotency key","attachments":[...]}
--   out: POST <callback_url> through the outbox
--        {"conversation_id","client_id","message":{"id","author":{"kind","name"},"text","buttons"?,"attachments"?}}
local channels = require("channels")
local flow = require("flow")
local inbound = require("inbound")
local S = require("schema")
local webhook = {}

-- A custom profile field: { value =, label = }, or the value alone.
local Custom = S.object({
  value = S.one_of{ S.string{ max = 1024 }, S.number{}, S.boolean{}, required = true },
  label = S.string{ max = 256 },
}, { before = function(cv) return type(cv) == "table" and cv or { value = cv } end })

local profile = { custom = S.map(Custom, { max_keys = 50, key = S.string{ max = 64 } }) }
for field in pairs(flow.profile_fields) do
  profile[field] = profile[field] or S.string{ max = 1024 }
end

local Message = S.object({
  client_id = S.string{ required = true, max = 256, nonempty = true },
  text = S.text{ required = true, errors = { too_long = { 413, "text_too_long" } } },
  message_id = S.string{ max = 128, nonempty = true },
  client = S.object(profile, { unknown = "refuse" }),
  attachments = S.array(S.object{ url = S.url{ required = true }, name = S.string{ max = 256 },
                                  type = S.string{ max = 64 } }, { max = 20 }),
}, {
  errors = { utf8 = { 400, "invalid_utf8" } },   -- what this channel's clients were promised
  check = function(m) if m.text == "" and not m.attachments then return "must not be empty", "text" end end,
})

inbound.endpoint{
  method = "POST", path = "/v1/channels/{instance}/messages",
  registry = channels, type = "webhook", auth = { bearer = "secret", what = "channel secret" },
  schema = Message,
  handler = function(ctx)
    local b = ctx.body
    local conv, m = flow.client_message(ctx.name, b.client_id, {
      text = b.text, attachments = b.attachments, client = b.client,
      -- the channel's keys share the conversation store's dedupe space with
      -- the desks' event ids (desks.lua): the prefix keeps a client from
      -- claiming an agent's message in advance
      dedupe_key = b.message_id and ("client:" .. b.message_id) or nil,
    })
    return 202, { conversation_id = conv.id, message_id = m.id, duplicate = m.duplicate }
  end,
}

-- The author goes along as an object: the client's side shows the name itself.
function webhook.send(name, inst, conv, m)
  if not inst.callback_url then
    log.error("webhook channel has no callback_url", { channel = name })
    return
  end
  local message = { id = m.id, author = { kind = m.author.kind, name = m.author.name }, text = m.text }
  if m.buttons and #m.buttons > 0 then message.buttons = m.buttons end
  if m.attachments and #m.attachments > 0 then message.attachments = m.attachments end
  local headers = {}
  if inst.callback_secret then headers.Authorization = "Bearer " .. channels.secret_ref("channels", name, "callback_secret") end
  outbox.send{
    conversation = conv, target = name, url = inst.callback_url, headers = headers,
    body = { conversation_id = conv.id, client_id = conv.client_id, message = message },
  }
end

channels.adapters.webhook = webhook

return webhook
