-- JivoChat through its Bot API (docs/providers/jivo.md): Jivo is both the
-- client's side and the agents' desk (topology 3). Jivo posts CLIENT_MESSAGE,
-- AGENT_JOINED, AGENT_UNAVAILABLE and CHAT_CLOSED to
-- POST /v1/providers/{instance}/jivo/{secret}; we answer with BOT_MESSAGE and
-- hand a chat to Jivo's agents with INVITE_AGENT, both posted to
-- {api_base}/webhooks/{provider_id}/{bot_token} through the outbox.
-- One file, two roles: the channel instance (config.channels) holds every
-- Bot API setting; its desk (config.desks, type "jivo") is Jivo's own agents.
local channels = require("channels")
local desks = require("desks")
local flow = require("flow")
local inbound = require("inbound")
local S = require("schema")
local jivo = {}

local DEFAULT_API_BASE = "https://bot.jivosite.com"

-- Jivo answers 400 to a request it cannot read, and so do we: every kind of
-- schema failure (a missing field, a wrong type, bad UTF-8, a text too long).
local BAD_REQUEST = { 400, "invalid_field" }
local ALL_BAD_REQUEST = {}
for _, kind in ipairs({ "type", "required", "utf8", "nul", "too_long", "empty", "enum", "range", "count",
                        "unknown", "check" }) do
  ALL_BAD_REQUEST[kind] = BAD_REQUEST
end

-- ---------------------------------------------------------------- calls to Jivo

-- The token stays a reference in the stored URL, filled in at each attempt.
local function webhook_url(name, inst)
  return ((inst.api_base or DEFAULT_API_BASE):gsub("/+$", "")) .. "/webhooks/"
         .. url.encode(tostring(inst.provider_id or "")) .. "/" .. channels.secret_ref("channels", name, "bot_token")
end

-- An event id in the shape of Jivo's examples (a UUID); it is stored with
-- the call, so every attempt of one event carries the same id.
local function new_event_id()
  local h = crypto.random_bytes(16, "hex")
  local variant = string.format("%x", 8 + tonumber(h:sub(17, 17), 16) % 4)
  return h:sub(1, 8) .. "-" .. h:sub(9, 12) .. "-4" .. h:sub(14, 16) .. "-" .. variant .. h:sub(18, 20) .. "-"
         .. h:sub(21, 32)
end

-- One lane per conversation for everything we post to Jivo, so that
-- INVITE_AGENT leaves after the bot's messages that announce it.
local function post(name, inst, conv, body)
  outbox.send{ conversation = conv, target = name, lane = conv.id .. "|" .. name, url = webhook_url(name, inst),
               body = body }
end

-- The Jivo chat of a conversation: the chat_id of the last CLIENT_MESSAGE.
local function chat_of(conv)
  local j = conv.data.jivo
  return j and j.chat_id
end

local function missing_chat(name, conv, what)
  log.error("jivo: no chat_id for this conversation (no CLIENT_MESSAGE came through Jivo)",
            { channel = name, conversation = conv.id, call = what })
  conv:journal("send_failed", { reason = "no jivo chat_id", call = what })
end

-- Button labels as Jivo's own BUTTONS examples show them in `text`.
local function button_labels(buttons)
  local labels = {}
  for i, b in ipairs(buttons) do labels[i] = b.text end
  return table.concat(labels, " / ")
end

-- A stored bot, agent or system message to the client: BOT_MESSAGE, TEXT or
-- BUTTONS. Attachments go as their URLs on lines of their own (the Bot API's
-- other message types are not documented).
function jivo.send(name, inst, conv, m)
  local lines = {}
  if m.text and m.text ~= "" then lines[1] = channels.agent_prefix(inst, m) .. m.text end
  for _, a in ipairs(m.attachments or {}) do lines[#lines + 1] = a.url end
  local text = table.concat(lines, "\n")
  local buttons = m.buttons or {}
  if text == "" and #buttons == 0 then return end
  local chat = chat_of(conv)
  if not chat then return missing_chat(name, conv, "BOT_MESSAGE") end
  local message
  if #buttons > 0 then
    local list = {}
    for i, b in ipairs(buttons) do list[i] = { text = b.text, id = b.payload or tostring(i) } end
    local labels = button_labels(buttons)
    message = { type = "BUTTONS", title = text, text = text ~= "" and text .. " " .. labels or labels,
                buttons = list }
  else
    message = { type = "TEXT", text = text }
  end
  message.timestamp = math.floor(m.created or now())
  post(name, inst, conv, { event = "BOT_MESSAGE", id = new_event_id(), client_id = conv.client_id, chat_id = chat,
                           message = message })
end

channels.adapters.jivo = jivo

-- ---------------------------------------------------------------- the desk: Jivo's agents

-- Jivo routes an invited chat to its own departments and tells us nothing
-- of them, so every group is known; "online" is the agents_online flag of
-- the last CLIENT_MESSAGE on a channel handing off to this desk.
local function online_key(channel) return "jivo:agents_online:" .. channel end

function jivo.destinations(name)
  local online = false
  for channel, ch in pairs(config.channels or {}) do
    if type(ch) == "table" and ch.type == "jivo" and ch.desk == name and state.get(online_key(channel)) == true then
      online = true
    end
  end
  return setmetatable({}, { __index = function(_, group) return { name = tostring(group), online = online } end })
end

-- Destination rule 3 when neither the switch nor the desk names a group.
jivo.default_recipient = "agents"

-- The channel a conversation came through holds the Bot API settings.
local function channel_of(desk, conv)
  local ch = channels.instance(conv.channel)
  if type(ch) ~= "table" or ch.type ~= "jivo" then
    log.error("jivo desk: the conversation's channel is not a jivo channel", { desk = desk, channel = conv.channel,
                                                                            conversation = conv.id })
    conv:journal("send_failed", { reason = "jivo desk on a channel of another type", desk = desk })
    return nil
  end
  return ch
end

-- The text of INVITE_AGENT's message field: the history asked for, then the
-- first message when the switch set one. Jivo's agents see the chat
-- already, so the engine's default first message (the client's last
-- words) is not repeated.
local function invite_text(desk_inst, opts)
  local lines, labels = {}, desk_inst.history_labels or {}
  for _, h in ipairs(opts.history or {}) do
    local label = h.author == "bot" and (labels.bot or "Bot") or (labels.client or "Client")
    lines[#lines + 1] = label .. ": " .. h.text
  end
  if opts.first_message_explicit and opts.first_message and opts.first_message ~= "" then
    lines[#lines + 1] = opts.first_message
  end
  return #lines > 0 and table.concat(lines, "\n") or nil
end

function jivo.open(desk, desk_inst, conv, group, opts)
  local ch = channel_of(desk, conv)
  if not ch then return end
  local chat = chat_of(conv)
  if not chat then return missing_chat(conv.channel, conv, "INVITE_AGENT") end
  local body = { event = "INVITE_AGENT", id = new_event_id(), client_id = conv.client_id, chat_id = chat }
  local field = ch.invite_message_field
  if field == nil then field = "message" end
  local text = field and invite_text(desk_inst, opts)
  if text then body[field] = { type = "TEXT", text = text } end
  post(conv.channel, ch, conv, body)
end

-- Jivo shows the client's messages to its agents itself.
function jivo.send_client_message() end

-- The Bot API has no call that ends an agent's chat: a close phrase,
-- inactivity, the API or a rule end it on our side only.
function jivo.close(desk, _, conv, text)
  log.info("jivo: the chat ended here; Jivo's Bot API cannot end it for the agent",
           { desk = desk, conversation = conv.id, reason = text })
end

-- A one-time message would need a note for agents without a transfer, which
-- the Bot API does not have: INVITE_AGENT hands the chat over for good.
function jivo.one_time(desk, _, conv)
  log.warn("jivo: one-time messages are not supported by Jivo's Bot API; nothing sent", { desk = desk,
                                                                                          conversation = conv.id })
  conv:journal("one_time_unsupported", { desk = desk })
end

desks.adapters.jivo = jivo

-- ---------------------------------------------------------------- Jivo's events

local Agent = S.object({ id = S.id{}, name = S.string{ max = 256, empty_is_nil = true } }, { lenient = true })
local Message = S.object({ type = S.string{ required = true, max = 64, nonempty = true }, text = S.text{} }, {
  required = true,
  check = function(m) if m.type == "TEXT" and (m.text == nil or m.text == "") then return "is required", "text" end end,
})
local Event = S.object({
  event = S.string{ required = true, max = 64, nonempty = true },
  id = S.id{ required = true, max = 256 },
  client_id = S.id{ required = true },
  chat_id = S.id{},
  agent = Agent,
}, { errors = ALL_BAD_REQUEST, by = "event", cases = {
  CLIENT_MESSAGE = {
    chat_id = S.id{ required = true },
    agents_online = S.boolean{},
    -- the page may be anything the widget reports: only an http(s) URL is kept
    sender = S.object({ name = S.string{ max = 256, empty_is_nil = true }, url = S.url{} }, { lenient = true }),
    message = Message,
  },
} })

local function client_message(ctx)
  local e, name = ctx.body, ctx.name
  if not e.message.text or e.message.text == "" then
    -- a type whose fields are not documented (files, contacts ...)
    log.info("jivo: client message without text ignored", { channel = name, type = e.message.type })
    return 200, { ok = true, ignored = true }
  end
  local sender = e.sender or {}
  local conv, m = flow.client_message(name, e.client_id, {
    text = e.message.text, client = { name = sender.name, page_url = sender.url }, dedupe_key = "jivo:" .. e.id,
  })
  if chat_of(conv) ~= e.chat_id then
    local data = conv.data
    data.jivo = data.jivo or {}
    data.jivo.chat_id = e.chat_id
    conv:set{ data = data }
  end
  if e.agents_online ~= nil and state.get(online_key(name)) ~= e.agents_online then
    state.set(online_key(name), e.agents_online)
  end
  return 200, { ok = true, duplicate = m.duplicate }
end

-- What each of Jivo's desk events does to a live chat with the channel's desk.
local DESK_EVENTS = {
  agent_joined = function(desk, conv, e)
    local agent = e.agent and (e.agent.id or e.agent.name) and { id = e.agent.id, name = e.agent.name } or nil
    return desks.agent_joined(desk, conv.id, { agent = agent, event_id = e.id })
  end,
  agent_unavailable = function(desk, conv, e)
    return desks.agent_unavailable(desk, conv.id, { event_id = e.id })
  end,
  -- the chat is over in Jivo until the client writes again: the bot gets
  -- livechatFinished with that message
  chat_closed = function(desk, conv, e)
    return desks.agent_closed(desk, conv.id, { event_id = e.id, defer_event = true })
  end,
}

local function desk_action(inst, event)
  if event == (inst.agent_joined_event or "AGENT_JOINED") then return DESK_EVENTS.agent_joined end
  if event == "AGENT_UNAVAILABLE" then return DESK_EVENTS.agent_unavailable end
  if event == "CHAT_CLOSED" then return DESK_EVENTS.chat_closed end
end

inbound.endpoint{
  method = "POST", path = "/v1/providers/{instance}/jivo/{secret}",
  registry = channels, type = "jivo", auth = { path = "secret", secret = "secret", what = "secret in the path" },
  schema = Event,
  handler = function(ctx)
    local e, name, inst = ctx.body, ctx.name, ctx.inst
    if e.event == "CLIENT_MESSAGE" then return client_message(ctx) end
    local action = desk_action(inst, e.event)
    if not action then
      log.info("jivo event ignored", { channel = name, event = e.event })
      return 200, { ok = true, ignored = true }
    end
    -- Jivo retries what it does not get a 200 for, then gives the chat to
    -- an agent on its own: an event for no live chat of ours (the bot has
    -- the conversation, an older chat, an unknown client) is acknowledged,
    -- and nothing is written.
    local desk = inst.desk
    local conv = desk and conversations.find(name, e.client_id)
    if not conv or not desks.live_chat(desk, conv.id) or (e.chat_id and e.chat_id ~= chat_of(conv)) then
      log.info("jivo event for no live chat ignored", { channel = name, event = e.event })
      return 200, { ok = true, ignored = true }
    end
    local result = action(desk, conv, e)
    return 200, { ok = true, duplicate = result.duplicate }
  end,
}

-- ---------------------------------------------------------------- the config, checked at every load

for name, ch in pairs(config.channels or {}) do
  if type(ch) == "table" and ch.type == "jivo" then
    local fields = { channel = name }
    if type(ch.secret) ~= "string" or ch.secret == "" then
      log.warn("jivo channel has no secret: every event from Jivo is refused", fields)
    end
    if ch.provider_id == nil or type(ch.bot_token) ~= "string" or ch.bot_token == "" then
      log.warn("jivo channel needs provider_id and bot_token: nothing can be sent to Jivo", fields)
    end
    local d = ch.desk and config.desks and config.desks[ch.desk]
    if ch.desk ~= nil and not (type(d) == "table" and d.type == "jivo") then
      log.warn("jivo channel's desk is not a desk of type jivo: a switch cannot invite Jivo's agents", fields)
    end
  end
end

return jivo
