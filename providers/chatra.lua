-- Chatra website live chat as a channel of the built-in desk (topology 2;
-- docs/providers/chatra.md).
--   in:  POST /v1/channels/{instance}/chatra/{secret}: chatStarted,
--        chatFragment and chatTranscript (Chatra signs nothing: the secret is
--        in the path). Client messages go to flow.client_message (the desk
--        gets them); agent messages typed in Chatra's own interface to
--        helpdesk.external_agent_message.
--   out: the desk's agent replies as that agent with POST {api_base}/messages/
--        through the outbox (by agentId when the channel maps the desk agent,
--        else by agentEmail + agentName: Chatra creates the agent on first reply).
-- What Chatra documents about its webhooks is thin (shared/providers
-- platforms.md section 2.3): every field name we are not sure of is a key of
-- the instance config, with the best-evidence default.
local channels = require("channels")
local flow = require("flow")
local helpdesk = require("helpdesk")
local inbound = require("inbound")
local S = require("schema")
local chatra = { kind = "live_chat" }

local DEFAULT_API_BASE = "https://app.chatra.io/api"
local MAX_TEXT = 5000             -- characters of one message Chatra takes
local MAX_ECHOES = 20             -- replies by agentId waiting to come back in a webhook
local DEFAULTS = {
  message_id_field = "id",
  message_time_field = "timestamp",
  message_text_field = { "message", "text" },
  -- the widget's setting is groupId; the REST API's client object has group
  group_field = { "client.groupId", "client.group" },
  received_from = "Switchboard",
  system_messages = "skip",
}
local DEFAULT_CLIENT_FIELDS = { email = "email", phone = "phone" }

local function setting(inst, key)
  local v = inst[key]
  if v == nil then return DEFAULTS[key] end
  return v
end

-- ---------------------------------------------------------------- reading Chatra's events

-- Chatra's objects are read field by field through the paths the config
-- names, so the body is kept as maps of unchecked values; every value used
-- is checked on its own below (S.validate), with the bounds of a schema.
local Event = S.object{
  eventName = S.string{ required = true, max = 64, nonempty = true },
  client = S.map(S.any{}, { required = true, max_keys = 200 }),
  messages = S.array(S.map(S.any{}, { max_keys = 100, lenient = true }), { max = 2000 }),
  agents = S.array(S.map(S.any{}, { max_keys = 100, lenient = true }), { max = 200 }),
}
local ClientId = S.id{ required = true, max = 256 }
local Id = S.id{ max = 256 }
-- A text of any length Chatra takes; one longer than the engine's
-- conversations.max_text_bytes is kept in several messages (pieces).
local Text = S.string{ max = 65536 }
local Name = S.string{ max = 256, empty_is_nil = true }
local Scalar = S.one_of{ S.string{ max = 1024 }, S.number{}, S.boolean{} }
local CustomKey = S.string{ max = 64, nonempty = true }

local EVENTS = { chatStarted = true, chatFragment = true, chatTranscript = true }

local walk = S.at

-- The first of the paths (a string or a list) that gives a value `schema` takes.
local function first_of(paths, obj, schema)
  if type(paths) == "string" then paths = { paths } end
  for _, p in ipairs(type(paths) == "table" and paths or {}) do
    local v = S.validate(schema, walk(obj, p))
    if v ~= nil then return v end
  end
  return nil
end

-- The profile fields a property key may name directly; any other key is a
-- custom field of the profile.
local PROFILE_KEYS = { name = true, email = true, phone = true, page_url = true, start_page = true,
                       language = true, browser = true, os = true, location = true }

local MAX_CUSTOM = 50   -- custom fields of one profile, as the webhook channel takes

-- The client's profile: name, the client fields the config maps
-- (client_fields = { email = "email", phone = "phone", info = { tienda = "store" } }:
-- Chatra's field -> our property key), the info fields not mapped under
-- their own names (keep_unmapped_info = false drops them), and the group.
local function profile_of(inst, e)
  local c = e.client
  local profile, custom, ncustom = {}, {}, 0
  local function put(key, value, label)
    if type(key) ~= "string" or value == nil then return end
    if PROFILE_KEYS[key] then
      if profile[key] == nil then profile[key] = type(value) == "string" and value or tostring(value) end
    elseif S.validate(CustomKey, key) and custom[key] == nil and ncustom < MAX_CUSTOM then
      custom[key], ncustom = { value = value, label = label }, ncustom + 1
    end
  end
  put("name", S.validate(Name, c.displayedName) or S.validate(Name, c.name))
  local fields = {}
  for k, v in pairs(DEFAULT_CLIENT_FIELDS) do fields[k] = v end
  for k, v in pairs(type(inst.client_fields) == "table" and inst.client_fields or {}) do fields[k] = v end
  local info_map = type(fields.info) == "table" and fields.info or {}
  fields.info = nil
  for chatra_field, key in pairs(fields) do
    if type(chatra_field) == "string" then put(key, S.validate(Scalar, walk(c, chatra_field)), chatra_field) end
  end
  local info = type(c.info) == "table" and c.info or {}
  local names = {}
  for k in pairs(info) do
    if type(k) == "string" then names[#names + 1] = k end
  end
  table.sort(names)   -- past MAX_CUSTOM, always the same ones are left out
  for _, k in ipairs(names) do
    local key = info_map[k]
    if key == nil and inst.keep_unmapped_info ~= false then key = k end
    put(key, S.validate(Scalar, info[k]), k)
  end
  if ncustom > 0 then profile.custom = custom end
  profile.group = first_of(setting(inst, "group_field"), e, Id)
  return profile
end

-- ---------------------------------------------------------------- each message once

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- The key of a Chatra message: its id when Chatra sends one, else a hash of
-- its type, text and time, else of its type, text and how many times the
-- same (type, text) came before in this Chatra chat (`counts`).
local function message_key(inst, m, kind, text, counts)
  local id = first_of(setting(inst, "message_id_field"), m, Id)
  if id then return "chatra:" .. id, id end
  local at = first_of(setting(inst, "message_time_field"), m, Id)
  if at then return "chatra:t:" .. crypto.sha256(kind .. "\0" .. text .. "\0" .. at) end
  local h = crypto.sha256(kind .. "\0" .. text)
  local n = math.tointeger(counts.list[h] or 0) + 1
  counts.list[h], counts.used = n, true
  return string.format("chatra:p:%d:%s:%d", counts.chat, h, n)
end

-- Occurrence counts of the messages without id and time: fragments add to
-- the chat's counts; a transcript (the whole chat) counts from nothing and
-- ends the chat; chatStarted begins a new one. A transcript sent again
-- (Chatra retrying it) is known by its fingerprint and counted as the chat
-- it ended.
local function fingerprint(inst, e)
  local parts = {}
  for _, m in ipairs(e.messages or {}) do
    parts[#parts + 1] = tostring(S.validate(Name, m.type)) .. "\0"
                        .. tostring(first_of(setting(inst, "message_text_field"), m, Text))
  end
  return crypto.sha256(table.concat(parts, "\1"))
end

local function counts_for(inst, conv, e)
  local t = (conv.data.chatra or {}).position or {}
  -- stored counts come back as JSON numbers: whole numbers again, so keys are written alike
  local chat, last = math.tointeger(t.chat) or 1, t.last
  local stored = { chat = chat, list = t.list or {}, last = last }
  if e.eventName == "chatTranscript" then
    local fp = fingerprint(inst, e)
    local again = last ~= nil and last.fp == fp
    return { chat = again and math.tointeger(last.chat) or chat, list = {}, stored = stored, fp = fp, again = again }
  end
  if e.eventName == "chatStarted" and next(stored.list) ~= nil then
    return { chat = chat + 1, list = {}, stored = stored, fresh = true }
  end
  return { chat = chat, list = stored.list, stored = stored }
end

local function save_counts(conv, event, counts)
  local data = conv.data
  data.chatra = data.chatra or {}
  local before = json.encode(data.chatra.position or json.null)
  local last = counts.stored.last
  if event ~= "chatTranscript" then
    data.chatra.position = { chat = counts.chat, list = counts.list, last = last }
  elseif not counts.again and (counts.used or next(counts.stored.list)) then
    data.chatra.position = { chat = counts.chat + 1, list = {}, last = { fp = counts.fp, chat = counts.chat } }
  end
  if json.encode(data.chatra.position or json.null) ~= before then conv:set{ data = data } end
end

-- A reply we sent by agentId comes back in Chatra's webhooks as an agent
-- message with nothing that says it is ours but its text: each such reply
-- waits in data.chatra.echoes until a webhook shows it once.
local function echo_key(conv, key) return "chatra:echo:" .. conv.id .. ":" .. key end

local function own_echo(inst, conv, m, text, key)
  if state.get(echo_key(conv, key)) then return true end
  local marker = setting(inst, "received_from")
  if marker and S.validate(Name, m.receivedFrom) == marker then return true end
  local data = conv.data
  local echoes = data.chatra and data.chatra.echoes
  local h = crypto.sha256(trim(text))
  for i, e in ipairs(echoes or {}) do
    if e == h then
      table.remove(echoes, i)
      conv:set{ data = data }
      -- a transcript shows it again: remember which message it was
      state.set(echo_key(conv, key), true, (config.conversations and config.conversations.dedupe_window) or 86400)
      return true
    end
  end
  return false
end

local function wait_for_echo(conv, text)
  local data = conv.data
  data.chatra = data.chatra or {}
  local echoes = data.chatra.echoes or {}
  echoes[#echoes + 1] = crypto.sha256(trim(text))
  while #echoes > MAX_ECHOES do table.remove(echoes, 1) end
  data.chatra.echoes = echoes
  conv:set{ data = data }
end

-- The name of the Chatra agent who wrote `m`: agentName, else the agent of
-- the event's agents list with the message's agentId, else the only agent.
local function agent_of(e, m)
  local id = S.validate(Id, m.agentId)
  local name = S.validate(Name, m.agentName)
  local agents = e.agents or {}
  for _, a in ipairs(agents) do
    if not name and id and S.validate(Id, a.id) == id then name = S.validate(Name, a.name) end
  end
  if not name and #agents == 1 then name = S.validate(Name, agents[1].name) end
  return name or "Chatra agent", id
end

-- text in pieces of at most max bytes, cut between characters.
local function pieces(text, max)
  local out = {}
  while #text > max do
    local head = channels.utf8_prefix(text, max)
    out[#out + 1], text = head, text:sub(#head + 1)
  end
  out[#out + 1] = text
  return out
end

local function add_message(ctx, conv, profile, m, counts, tally)
  local inst, e = ctx.inst, ctx.body
  local kind = S.validate(Name, m.type)
  local text = first_of(setting(inst, "message_text_field"), m, Text)
  if (kind ~= "client" and kind ~= "agent") or not text or text == "" then
    -- a file, a system line, a text we cannot store (NUL, invalid UTF-8)
    log.info("chatra message ignored", { channel = ctx.name, type = tostring(kind), has_text = text ~= nil })
    tally.ignored = tally.ignored + 1
    return
  end
  local key, id = message_key(inst, m, kind, text, counts)
  local parts = pieces(text, S.max_text())
  local added
  if kind == "client" then
    for i, part in ipairs(parts) do
      local _, msg = flow.client_message(ctx.name, conv.client_id, {
        text = part, client = profile, dedupe_key = i == 1 and key or key .. "#" .. i,
        provider_ids = id and { chatra = id } or nil,
      })
      added = added or not msg.duplicate
    end
  elseif not (conv:seen(key) or own_echo(inst, conv, m, text, key)) then
    local name, agent_id = agent_of(e, m)
    for i, part in ipairs(parts) do
      local msg = helpdesk.external_agent_message(conv, { name = name, text = part, platform_agent = agent_id,
                                                          dedupe_key = i == 1 and key or key .. "#" .. i })
      added = added or not msg.duplicate
    end
  end
  if added then tally.added = tally.added + 1 else tally.duplicates = tally.duplicates + 1 end
end

inbound.endpoint{
  method = "POST", path = "/v1/channels/{instance}/chatra/{secret}",
  registry = channels, type = "chatra",
  auth = { path = "secret", secret = "webhook_secret", what = "secret in the path" },
  schema = Event,
  handler = function(ctx)
    local e = ctx.body
    local client_id = S.check(ClientId, e.client.id, "client.id")
    if not EVENTS[e.eventName] then
      log.info("chatra event ignored", { channel = ctx.name, event = e.eventName })
      return 200, { ok = true, ignored = true }
    end
    local profile = profile_of(ctx.inst, e)
    local conv, created = conversations.find_or_create(ctx.name, client_id, profile)
    if not created then flow.merge_profile(conv, profile) end
    local counts = counts_for(ctx.inst, conv, e)
    local tally = { added = 0, duplicates = 0, ignored = 0 }
    for _, m in ipairs(e.messages or {}) do add_message(ctx, conv, profile, m, counts, tally) end
    if counts.used or counts.fresh or e.eventName == "chatTranscript" then save_counts(conv, e.eventName, counts) end
    return 200, { ok = true, conversation_id = conv.id, added = tally.added, duplicates = tally.duplicates,
                  ignored = tally.ignored }
  end,
}

-- ---------------------------------------------------------------- sending

-- What Chatra's POST /messages/ takes: an agent's text to a client, as a
-- known agent (agentId) or as one Chatra creates on first use (agentEmail).
local Send = S.object({
  clientId = S.string{ required = true, nonempty = true },
  text = S.string{ required = true, nonempty = true, max_chars = MAX_TEXT },
  agentId = S.string{ nonempty = true },
  agentEmail = S.string{ nonempty = true, max = 256 },
  agentName = S.string{ nonempty = true, max = 256 },
  receivedFrom = S.string{ nonempty = true, max = 256 },
}, { unknown = "refuse", check = function(b)
  if (b.agentId ~= nil) == (b.agentEmail ~= nil) then return "must name the agent by agentId or by agentEmail" end
  if b.agentEmail and not b.agentName then return "is required with agentEmail", "agentName" end
end })
local Push = S.object({
  clientId = S.string{ required = true, nonempty = true },
  text = S.string{ required = true, nonempty = true, max_chars = MAX_TEXT },
  groupId = S.string{ nonempty = true },
}, { unknown = "refuse" })

local function api_url(inst, path)
  return ((inst.api_base or DEFAULT_API_BASE):gsub("/+$", "")) .. path
end

local function auth_header(name, inst)
  return { Authorization = "Chatra.Simple " .. tostring(inst.public_key or "") .. ":"
                           .. channels.secret_ref("channels", name, "secret_key") }
end

local function text_of(m)
  local lines = {}
  if m.text and m.text ~= "" then lines[1] = m.text end
  for _, a in ipairs(m.attachments or {}) do lines[#lines + 1] = a.url end
  return table.concat(lines, "\n")
end

local function not_sent(name, conv, m, reason)
  log.error("chatra: agent reply not sent", { channel = name, conversation = conv.id, reason = reason })
  conv:journal("send_failed", { message = m.id, reason = reason })
end

-- How the agent of `m` signs in Chatra: agentId when the channel maps the
-- desk agent (agents = { ann = "<Chatra agent id>" }), else email and name.
local function signed_as(name, inst, conv, m)
  local mapped = type(inst.agents) == "table" and inst.agents[m.author.id]
  if mapped ~= nil then return { agentId = tostring(mapped) } end
  local desk = conv.desk or inst.desk
  local agent = desk and m.author.id and helpdesk.agent(desk, m.author.id)
  if not (agent and type(agent.email) == "string" and agent.email ~= "") then
    return nil, "the desk agent has no email and no Chatra agent id in the channel's agents"
  end
  return { agentEmail = agent.email, agentName = agent.name or m.author.name or agent.email,
           receivedFrom = setting(inst, "received_from") or nil }
end

function chatra.send(name, inst, conv, m)
  local text = text_of(m)
  if text == "" then return end
  local kind = m.author and m.author.kind
  if kind == "agent" then
    local as, why = signed_as(name, inst, conv, m)
    if not as then return not_sent(name, conv, m, why) end
    for _, part in ipairs(channels.split_text(text, MAX_TEXT)) do
      local body = { clientId = conv.client_id, text = part }
      for k, v in pairs(as) do body[k] = v end
      outbox.send{ conversation = conv, target = name, url = api_url(inst, "/messages/"),
                   headers = auth_header(name, inst), body = S.assert(Send, body, "chatra POST /messages/") }
      if as.agentId then wait_for_echo(conv, part) end
    end
  elseif setting(inst, "system_messages") == "push" then
    -- an automated message to a client the site bound with ChatraSetup.clientId
    for _, part in ipairs(channels.split_text(text, MAX_TEXT)) do
      local body = { clientId = conv.client_id, text = part, groupId = inst.push_group_id and tostring(inst.push_group_id) }
      outbox.send{ conversation = conv, target = name, url = api_url(inst, "/pushedMessages/"),
                   headers = auth_header(name, inst), body = S.assert(Push, body, "chatra POST /pushedMessages/") }
    end
  else
    -- Chatra's widget shows its own greetings; /messages/ needs an agent
    conv:journal("send_skipped", { message = m.id, reason = "chatra takes agent messages only (system_messages)" })
  end
end

channels.adapters.chatra = chatra

-- ---------------------------------------------------------------- the config, checked at every load

for name, ch in pairs(config.channels or {}) do
  if type(ch) == "table" and ch.type == "chatra" then
    local fields = { channel = name }
    if type(ch.webhook_secret) ~= "string" or ch.webhook_secret == "" then
      log.warn("chatra channel has no webhook_secret: every event from Chatra is refused", fields)
    end
    if type(ch.public_key) ~= "string" or ch.public_key == "" or type(ch.secret_key) ~= "string"
       or ch.secret_key == "" then
      log.warn("chatra channel needs public_key and secret_key: agent replies cannot reach Chatra", fields)
    end
    if ch.desk == nil then
      log.warn("chatra channel has no desk: its chats reach no agent", fields)
    end
    local sm = ch.system_messages
    if sm ~= nil and sm ~= "skip" and sm ~= "push" then
      error("channels." .. name .. ".system_messages must be \"skip\" or \"push\"")
    end
  end
end

return chatra
