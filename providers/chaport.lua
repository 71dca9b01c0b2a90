-- Chaport website live chat (docs/providers/chaport.md): the client's side
-- of topology 2, a channel of kind live_chat whose chats go to the built-in
-- desk (scripts/helpdesk.lua).
--   in:  POST /v1/channels/{instance}/chaport/{secret}: Chaport's webhooks (chat
--        started, messages, chat finished), read at the paths of the instance's `payload`
--   out: POST {api_base}/messages as the agent's Chaport operator (looked up by
--        email, chosen, or created on first use); PUT {api_base}/visitors/{id}/chats
--        {"stage": "closed"} when the desk ends a chat; POST {api_base}/operators/{id}/status
--        when a desk agent's status changes (offline only after offline_delay)
local channels = require("channels")
local flow = require("flow")
local helpdesk = require("helpdesk")
local inbound = require("inbound")
local livechat = require("livechat")
local S = require("schema")
local chaport = { kind = "live_chat" }

local DEFAULT_API_BASE = "https://app.chaport.com/api/v1"
local DEFAULT_OFFLINE_DELAY = 300
local ECHO_TTL = 3600        -- how long our own reply may come back as an operator-message webhook
local MAX_MESSAGES = 100     -- per webhook

-- Where each value is in Chaport's webhook: Chaport does not document its
-- payloads (shared/providers/platforms.md §3.3), so every path, event name and
-- author type is a setting with the best-evidence default (docs/providers/chaport.md).
local DEFAULT_PAYLOAD = {
  event = "event", event_id = "id",
  chat_started = "chat.started", message_event = "chat.message", chat_finished = "chat.finished",
  visitor_id = "visitor.id", visitor_name = "visitor.name", visitor_email = "visitor.email",
  chat_id = "chat.id", page_url = "visitor.pageUrl", start_page = "chat.startPage",
  message = "message", messages = "messages",
  -- within a message object
  message_id = "id", message_text = "text", author_type = "type", author_name = "author.name",
  visitor_type = "visitor-message", operator_type = "operator-message", bot_type = "bot-message",
}
-- Creating an operator is not documented either (platforms.md §3.2).
local DEFAULT_CREATE = { method = "POST", path = "/operators", id = "result.id",
                         body = { email = "{email}", name = "{name}", role = "operator" } }
-- The status call's field names are unverified (platforms.md §3.2).
local DEFAULT_STATUS = { method = "POST", path = "/operators/{id}/status", body = { status = "{status}" },
                         online = "online", offline = "offline" }

local function with_defaults(given, defaults)
  local out = {}
  for k, v in pairs(defaults) do out[k] = v end
  if type(given) == "table" then
    for k, v in pairs(given) do out[k] = v end
  end
  return out
end

local function api_base(inst) return ((inst.api_base or DEFAULT_API_BASE):gsub("/+$", "")) end
local function key(name, ...) return "chaport:" .. name .. ":" .. table.concat({ ... }, ":") end

local at = S.at

-- Text with "{name}" replaced from values; a table, each of its strings.
local function fill(template, values)
  if type(template) == "table" then
    local out = {}
    for k, v in pairs(template) do out[k] = fill(v, values) end
    return out
  end
  if type(template) ~= "string" then return template end
  local whole = template:match("^{(%w+)}$")
  if whole and values[whole] ~= nil then return values[whole] end
  return (template:gsub("{(%w+)}", function(k) return values[k] ~= nil and tostring(values[k]) or nil end))
end

local function one_of(value, names)
  if type(names) == "string" then return value == names end
  for _, n in ipairs(type(names) == "table" and names or {}) do
    if value == n then return true end
  end
  return false
end

-- ---------------------------------------------------------------- Chaport's webhooks

local Id = S.id{ required = true }
local OptionalId = S.id{}
local EventName = S.string{ required = true, max = 128 }
local Name = S.string{ max = 256, empty_is_nil = true }
local AuthorType = S.string{ required = true, max = 128 }
-- a widget may report any page: only an http(s) URL is kept
local Page = S.url{ lenient = true }
local Text = S.text{}

-- The value at `path`, checked; a failure is a 422 naming the payload's path.
local function field(schema, obj, path, label)
  local v, why = S.validate(schema, at(obj, path), label or path)
  if why then http_error(422, "invalid_field", why) end
  return v
end

local function author_of(p, value)
  if one_of(value, p.visitor_type) then return "visitor" end
  if one_of(value, p.bot_type) then return "bot" end
  if one_of(value, p.operator_type) then return "operator" end
end

-- The messages of an event: a list at p.messages, or one object at p.message.
local function read_messages(p, body, event_id)
  local list, where = at(body, p.messages), p.messages
  if list == nil then
    local one = at(body, p.message)
    if one == nil then return {} end
    list, where = { one }, nil
  elseif not S.is_array(list) then
    http_error(422, "invalid_field", p.messages .. " must be an array")
  elseif #list > MAX_MESSAGES then
    http_error(422, "invalid_field", p.messages .. " has more than " .. MAX_MESSAGES .. " items")
  end
  local out = {}
  for i, m in ipairs(list) do
    local label = where and (where .. "[" .. i .. "]") or p.message
    if not S.is_object(m) then http_error(422, "invalid_field", label .. " must be an object") end
    local function sub(schema, path) return field(schema, m, path, label .. "." .. path) end
    local type_value = sub(AuthorType, p.author_type)
    local msg = { author = author_of(p, type_value), type = type_value, id = sub(OptionalId, p.message_id),
                  text = sub(Text, p.message_text), name = sub(Name, p.author_name) }
    -- a repeat of the webhook stores nothing twice: the message's id, else the event's and the position
    if msg.id then msg.key = "chaport:" .. msg.id
    elseif event_id then msg.key = "chaport:event:" .. event_id .. ":" .. i end
    out[#out + 1] = msg
  end
  return out
end

-- The event, every value checked before anything is written.
local function read_event(inst, body)
  local p = with_defaults(inst.payload, DEFAULT_PAYLOAD)
  local name = field(EventName, body, p.event)
  local kind = (one_of(name, p.chat_started) and "started") or (one_of(name, p.message_event) and "message")
               or (one_of(name, p.chat_finished) and "finished")
  if not kind then return { ignored = name } end
  local event_id = field(OptionalId, body, p.event_id)
  local e = { kind = kind, visitor = field(Id, body, p.visitor_id), chat = field(OptionalId, body, p.chat_id) }
  e.profile = { name = field(Name, body, p.visitor_name), email = field(Name, body, p.visitor_email),
                page_url = field(Page, body, p.page_url), start_page = field(Page, body, p.start_page) }
  e.messages = read_messages(p, body, event_id)
  return e
end

-- The visitor's conversation, created with the profile; a known one gets what changed.
local function conversation_of(name, e)
  local conv, created = conversations.find_or_create(name, e.visitor, e.profile)
  if not created then
    local profile, changed = conv.client, false
    for k, v in pairs(e.profile) do
      if profile[k] ~= v then profile[k], changed = v, true end
    end
    if changed then conv:set{ client = profile } end
  end
  return conv
end

local function echo_key(name, visitor, text) return key(name, "sent", visitor, crypto.sha256(text)) end

-- An operator typed in Chaport's own interface: the desk keeps it as the
-- agent's; our own replies come back this way too and are not kept twice.
local function operator_message(name, conv, m)
  local echo = echo_key(name, conv.client_id, m.text)
  if state.get(echo) then
    state.delete(echo)
    return
  end
  helpdesk.external_agent_message(conv, { name = m.name, text = m.text, dedupe_key = m.key,
                                            platform_agent = m.name })
end

local function remember_chat(conv, chat)
  local data = conv.data
  local c = data.chaport or {}
  if chat and c.chat_id ~= chat then
    c.chat_id = chat
    data.chaport = c
    conv:set{ data = data }
  end
end

-- Chaport finished the chat: the desk's live chat ends too, and the
-- desk's closing call is not sent back to Chaport (chaport.closed).
local function finished(name, e)
  local conv = conversations.find(name, e.visitor)
  if not conv or (conv.state ~= "queued" and conv.state ~= "agent") then return end
  local data = conv.data
  data.chaport = data.chaport or {}
  data.chaport.finishing = true
  conv:set{ data = data }
  livechat.finish(conv, "client")
  data = conv.data
  data.chaport.finishing = nil
  conv:set{ data = data }
end

local function on_event(ctx)
  local name, e = ctx.name, read_event(ctx.inst, ctx.body)
  if e.ignored then
    log.info("chaport event ignored", { channel = name, event = e.ignored })
    return 200, { ok = true, ignored = true }
  end
  local conv
  for _, m in ipairs(e.messages) do
    if not m.text or m.text == "" then
      -- files, ratings ...: their fields are not documented
      log.info("chaport message without text ignored", { channel = name, type = m.type })
    elseif m.author == "visitor" then
      conv = flow.client_message(name, e.visitor, { text = m.text, client = e.profile, dedupe_key = m.key,
                                                    provider_ids = m.id and { chaport = m.id } or nil })
    elseif m.author == "bot" then
      -- Chaport's own bot answered: kept in the history, sent nowhere
      conv = conv or conversation_of(name, e)
      conv:append{ author = { kind = "bot", name = m.name or "Chaport bot" }, text = m.text, dedupe_key = m.key }
    elseif m.author == "operator" then
      conv = conv or conversation_of(name, e)
      operator_message(name, conv, m)
    else
      log.info("chaport message of an unknown author type ignored", { channel = name, type = m.type })
    end
  end
  if e.kind == "started" and not conv then conv = conversation_of(name, e) end
  if conv then remember_chat(conv, e.chat) end
  if e.kind == "finished" then finished(name, e) end
  return 200, { ok = true }
end

inbound.endpoint{
  method = "POST", path = "/v1/channels/{instance}/chaport/{secret}",
  registry = channels, type = "chaport",
  -- Chaport signs nothing (platforms.md §3.3): the secret is in the URL we give it
  auth = { path = "secret", secret = "webhook_secret", what = "secret in the path" },
  -- a JSON object: its fields are read at the configured paths (read_event)
  schema = S.map(S.any{}, { max_keys = 256 }),
  event_id = function(body, req)
    local inst = channels.instance(req.params.instance)
    local id = at(body, with_defaults(inst and inst.payload, DEFAULT_PAYLOAD).event_id)
    if math.type(id) == "integer" or (type(id) == "string" and id ~= "" and #id <= 256) then return id end
  end,
  handler = on_event,
}

-- ---------------------------------------------------------------- Chaport's operators

-- A call made from an outbox job (never stored, so the token goes in as
-- it is). Returns Chaport's answer decoded, or nil and why.
local function call(inst, method, path, body)
  local headers = { Authorization = "Bearer " .. tostring(inst.token or ""), Accept = "application/json" }
  if body ~= nil then headers["Content-Type"] = "application/json" end
  local status, rheaders, raw = http.request{
    method = method, url = api_base(inst) .. path, headers = headers,
    body = body ~= nil and json.encode(body) or nil, timeout = tonumber(inst.request_timeout) or 10,
  }
  if not status then return nil, method .. " " .. path .. ": no answer: " .. tostring(rheaders) end
  local ok, doc = pcall(json.decode, raw)
  if status < 200 or status >= 300 or not ok or type(doc) ~= "table" then
    return nil, method .. " " .. path .. ": HTTP " .. status .. ": " .. tostring(raw):sub(1, 200)
  end
  return doc
end

local Operator = S.object({ id = S.id{ required = true }, email = S.string{ max = 256 } }, { lenient = true })
local Operators = S.object{ result = S.array(Operator, { max = 10000 }) }

-- Chaport's operators by lower-case email, kept in state for operators_ttl
-- seconds (asking at every reply would cost a call each); an email not in
-- a list older than a minute reads the list again.
local function operator_by_email(name, inst, email)
  local k = key(name, "operators")
  local cached = state.get(k)
  local wanted = email:lower()
  if cached and (cached.ids[wanted] or now() - cached.at < 60) then return cached.ids[wanted] end
  local doc, why = call(inst, "GET", "/operators")
  if not doc then return nil, why end
  local list = S.validate(Operators, doc) or {}
  local ids = {}
  for _, o in ipairs(list.result or {}) do
    if o.email then ids[o.email:lower()] = o.id end
  end
  state.set(k, { at = now(), ids = ids }, tonumber(inst.operators_ttl) or 300)
  return ids[wanted]
end

local function create_operator(name, inst, agent, email)
  local c = with_defaults(inst.create_operator, DEFAULT_CREATE)
  local answer, why = call(inst, c.method, c.path, fill(c.body, { email = email, name = agent.name or email }))
  if not answer then return nil, "creating the operator: " .. why end
  local id = S.validate(Id, at(answer, c.id))
  if not id then return nil, "creating the operator: no id at " .. c.id .. " in Chaport's answer" end
  state.delete(key(name, "operators"))
  log.info("chaport operator created", { channel = name, agent = agent.id, operator = id })
  return id
end

-- How a desk agent is mapped: operators[agent], else default_operator,
-- else by email. { id = } | { email = true | "<email>" } | { create = true }.
local function mapping(inst, agent_id)
  local ops = type(inst.operators) == "table" and inst.operators or {}
  local spec = ops[agent_id]
  if spec == nil then spec = inst.default_operator end
  if type(spec) ~= "table" then spec = { email = true } end
  return spec
end

-- The Chaport operator id of a desk agent, or nil and why. `create`: an
-- operator that does not exist yet may be made (a reply, an online status;
-- never for going offline). Yields for Chaport's answers.
local function operator_for(name, inst, desk, agent_id, create)
  local spec = mapping(inst, agent_id)
  if spec.id ~= nil then return tostring(spec.id) end
  local made = key(name, "operator", agent_id)
  if spec.create then
    local known = state.get(made)
    if known then return known end
  end
  local agent = helpdesk.agent(desk, agent_id) or { id = agent_id }
  local email = type(spec.email) == "string" and spec.email or agent.email
  if type(email) ~= "string" or email == "" then
    return nil, "desk agent " .. tostring(agent_id) .. " has no email to find a Chaport operator by"
  end
  local id, why = operator_by_email(name, inst, email)
  if why then return nil, why end
  if not id and spec.create and create then
    id, why = create_operator(name, inst, agent, email)
    if not id then return nil, why end
  end
  if not id then return nil, "no Chaport operator has the email " .. email end
  if spec.create then state.set(made, id) end
  return id
end

-- ---------------------------------------------------------------- calls to Chaport

local function lane(name, conversation) return conversation .. "|" .. name end

local function send_call(d, inst, method, path, body)
  outbox.send{
    conversation = d.conversation, target = d.channel, lane = d.lane, method = method,
    url = api_base(inst) .. path, body = body,
    headers = { Authorization = "Bearer " .. channels.secret_ref("channels", d.channel, "token") },
  }
end

local function failed(d, why)
  log.error("chaport call failed", { channel = d.channel, call = d.op, conversation = d.conversation,
                                     agent = d.agent, error = why })
  error("chaport " .. d.op .. ": " .. why, 0)
end

-- Every call of a conversation goes through this job, in the
-- conversation's lane: the operator is resolved (which may ask Chaport),
-- then the call is queued behind it in the same lane, so replies and the
-- closing call leave in the order they were made.
function chaport.relay(d)
  local inst = channels.instance(d.channel)
  if type(inst) ~= "table" or inst.type ~= "chaport" then
    log.warn("chaport call dropped: the channel is no longer configured", { channel = d.channel, call = d.op })
    return
  end
  if d.op == "close" then
    return send_call(d, inst, "PUT", "/visitors/" .. url.encode(d.visitor) .. "/chats", { stage = "closed" })
  end
  local operator, why
  if d.agent then
    operator, why = operator_for(d.channel, inst, d.desk, d.agent, true)
  else
    operator = inst.bot_operator
  end
  if not operator then failed(d, why) end
  state.set(echo_key(d.channel, d.visitor, d.text), true, ECHO_TTL)
  send_call(d, inst, "POST", "/messages", { visitorId = d.visitor, chatEvent = {
    type = "operator-message", params = { text = d.text, operatorId = tostring(operator) } } })
end

local function queue(name, conv, d)
  d.channel, d.conversation, d.visitor, d.lane = name, conv.id, conv.client_id, lane(name, conv.id)
  outbox.call{ conversation = conv, target = "chaport.relay", lane = d.lane, data = d }
end

-- A stored agent (or bot, or system) message to the visitor. Attachments
-- go as their URLs on lines of their own: sending files is not documented.
function chaport.send(name, inst, conv, m)
  local lines = {}
  if m.text and m.text ~= "" then lines[1] = m.text end
  for _, a in ipairs(m.attachments or {}) do lines[#lines + 1] = a.url end
  local text = table.concat(lines, "\n")
  if text == "" then return end
  local author = m.author or {}
  local agent = author.kind == "agent" and author.id or nil
  if not agent and inst.bot_operator == nil then
    -- a message of no agent needs an operator to speak as
    log.info("chaport: message not sent: no bot_operator for messages of no agent",
             { channel = name, conversation = conv.id, author = author.kind })
    conv:journal("send_skipped", { message = m.id, reason = "no bot_operator" })
    return
  end
  queue(name, conv, { op = "reply", agent = agent, desk = conv.desk or inst.desk, text = text, message = m.id })
end

-- The desk ended the chat: close it in Chaport, unless Chaport finished it.
function chaport.closed(name, _, conv)
  local c = conv.data.chaport
  if c and c.finishing then return end
  queue(name, conv, { op = "close" })
end

channels.adapters.chaport = chaport

-- ---------------------------------------------------------------- status sync

local function offline_delay(inst)
  local n = tonumber(inst.offline_delay)
  if n == nil then return DEFAULT_OFFLINE_DELAY end
  return math.max(0, n)
end

local function status_lane(name, agent) return "chaport-status|" .. name .. "|" .. agent end

function chaport.set_status(d)
  local inst = channels.instance(d.channel)
  if type(inst) ~= "table" or inst.type ~= "chaport" then return end
  local operator, why = operator_for(d.channel, inst, d.desk, d.agent, d.status == "online")
  if not operator then
    if d.status == "offline" then
      log.info("chaport: no operator to set offline", { channel = d.channel, agent = d.agent, reason = why })
      return
    end
    failed(d, why)
  end
  local c = with_defaults(inst.status_call, DEFAULT_STATUS)
  send_call(d, inst, c.method, fill(c.path, { id = url.encode(operator) }), fill(c.body, { status = c[d.status] }))
end

local function queue_status(name, desk, agent, status)
  local d = { op = "status", channel = name, desk = desk, agent = agent, status = status,
              lane = status_lane(name, agent) }
  outbox.call{ target = "chaport.set_status", lane = d.lane, data = d }
end

local function takes_chats(desk, agent)
  return helpdesk.takes_chats(desk, helpdesk.status_of(desk, agent))
end

-- An operator that several agents share (the same id) stays online while
-- one of them takes chats.
local function shared_and_busy(inst, desk, agent)
  local mine = mapping(inst, agent).id
  if mine == nil then return false end
  local d = config.desks and config.desks[desk]
  for _, a in ipairs(d and d.agents or {}) do
    if a.id ~= agent and tostring(mapping(inst, a.id).id) == tostring(mine) and takes_chats(desk, a.id) then
      return true
    end
  end
  return false
end

local function go_offline(name, inst, desk, agent)
  if takes_chats(desk, agent) or shared_and_busy(inst, desk, agent) then return end
  queue_status(name, desk, agent, "offline")
end

-- The offline timer of an agent, kept in state by id: a status that takes
-- chats cancels it, and a timer that is not the one kept does nothing.
function chaport.offline_due(data, id)
  local k = key(data.channel, "offline_timer", data.agent)
  if state.get(k) ~= id then return end
  state.delete(k)
  local inst = channels.instance(data.channel)
  if type(inst) ~= "table" or inst.type ~= "chaport" or inst.desk ~= data.desk then return end
  go_offline(data.channel, inst, data.desk, data.agent)
end

local function sync(name, inst, desk, agent, status)
  local k = key(name, "offline_timer", agent)
  local pending = state.get(k)
  if helpdesk.takes_chats(desk, status) then
    if pending then
      timer.cancel(pending)
      state.delete(k)
    end
    queue_status(name, desk, agent, "online")
  elseif not pending then
    local delay = offline_delay(inst)
    if delay == 0 then return go_offline(name, inst, desk, agent) end
    state.set(k, timer.after(delay, "chaport.offline_due", { channel = name, desk = desk, agent = agent }))
  end
end

function chaport.on_agent_status(ev)
  local d = ev.data or {}
  for name, inst in pairs(config.channels or {}) do
    if type(inst) == "table" and inst.type == "chaport" and inst.desk == d.desk and inst.status_sync ~= false
       and type(d.agent) == "string" and type(d.status) == "string" then
      sync(name, inst, d.desk, d.agent, d.status)
    end
  end
end

-- Only a load with a Chaport channel that syncs statuses subscribes: a
-- subscriber makes the bus read the whole journal as it grows (every
-- message's event), which a deployment without Chaport should not pay for.
for _, inst in pairs(config.channels or {}) do
  if type(inst) == "table" and inst.type == "chaport" and inst.status_sync ~= false then
    events.on("agent.status_changed", "chaport.on_agent_status", { id = "chaport:agent.status_changed" })
    break
  end
end

-- ---------------------------------------------------------------- the config, checked at every load

for name, ch in pairs(config.channels or {}) do
  if type(ch) == "table" and ch.type == "chaport" then
    local fields = { channel = name }
    if type(ch.webhook_secret) ~= "string" or ch.webhook_secret == "" then
      log.warn("chaport channel has no webhook_secret: every webhook from Chaport is refused", fields)
    end
    if type(ch.token) ~= "string" or ch.token == "" then
      log.warn("chaport channel has no token: nothing can be sent to Chaport", fields)
    end
    local d = ch.desk and config.desks and config.desks[ch.desk]
    if not (type(d) == "table" and d.type == "builtin") then
      log.warn("chaport channel's desk is not a built-in desk: agents cannot answer its chats", fields)
    end
  end
end

return chaport
