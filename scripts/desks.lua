-- Desk instances (config.desks) and their adapters. A desk adapter
-- (providers/<type>.lua) registers with `desks.adapters[type] = adapter` and
-- implements:
--   adapter.destinations(name, inst)            -> { [group] = { name =, online = bool } } | nil, err   (may yield)
--   adapter.open(name, inst, conv, group, opts)  -- opts: first_message, first_message_explicit
--                                                --       (the switch set it, not the default),
--                                                --       history, attributes,
--                                                --       hidden_attributes, custom_data, theme
--   adapter.send_client_message(name, inst, conv, message)
--   adapter.close(name, inst, conv, text, reason) -- the engine or the client ended the chat
--   adapter.inactivity_timeout(name, inst, group) -- optional: seconds, or nil for the instance's keys
--   adapter.one_time(name, inst, conv, group, opts)   -- optional; default: open, then close
--   adapter.default_recipient                    -- optional: destination rule 3 when the
--                                                -- instance has no admin_recipient
-- destinations may list a group under its name too, with { id = <its id> }:
-- a switch naming it gets the id.
-- and reports what the desk's webhooks say with desks.agent_message,
-- desks.agent_closed and desks.group_changed. Those take the desk instance
-- name and act only on a conversation in a live chat with that instance
-- (docs/handoff.md, "What a desk may touch").
local channels = require("channels")
local livechat = require("livechat")
local desks = channels.registry("desks")

local S = require("schema")

-- default_desk must name a desk: a typo would otherwise show up only when
-- a bot asks for availability.
if config.default_desk ~= nil then
  if type(config.default_desk) ~= "string" or not (config.desks and config.desks[config.default_desk]) then
    error("default_desk: no desk named " .. tostring(config.default_desk) .. " in desks")
  end
end

-- The desk used when none is named: default_desk, else the only desk
-- configured. Returns nil and why when that does not tell.
function desks.default()
  if config.default_desk then return config.default_desk end
  local only, n = nil, 0
  for name in pairs(config.desks or {}) do
    only, n = name, n + 1
  end
  if n == 1 then return only end
  if n == 0 then return nil, "no desk is configured" end
  return nil, "several desks are configured and default_desk is not set: name the desk"
end

-- The desk a channel hands conversations to: name, config, adapter.
function desks.for_channel(channel)
  local ch = channels.instance(channel)
  local name = ch and ch.desk
  if not name then return nil end
  local adapter, inst = desks.resolve(name)
  return name, inst, adapter
end

-- Known destinations of a desk (groups), or nil when the desk cannot tell.
function desks.destinations(name)
  local adapter, inst = desks.resolve(name)
  if not adapter or not adapter.destinations then return nil, "no such desk" end
  return adapter.destinations(name, inst)
end

-- Would a switch to `group` on desk `name` find an agent now?
function desks.has_online(name, group)
  local known = desks.destinations(name)
  local d = known and group and known[tostring(group)]
  return d ~= nil and d.online == true
end

-- JAICP's hasOperatorsOnline(); the desk defaults to desks.default(). A
-- config that does not say which desk is an error, not "nobody online".
function hasOperatorsOnline(group, desk)
  if desk == nil then
    local why
    desk, why = desks.default()
    if not desk then error("hasOperatorsOnline: " .. why, 2) end
  end
  return desks.has_online(desk, group)
end

local function call(name, fn, ...)
  local adapter, inst = desks.resolve(name)
  if not adapter or not adapter[fn] then
    log.error("desk cannot do this", { desk = tostring(name), action = fn })
    return false
  end
  adapter[fn](name, inst, ...)
  return true
end

function desks.open(name, conv, group, opts) return call(name, "open", conv, group, opts) end
function desks.close(name, conv, text, reason) return call(name, "close", conv, text, reason) end

-- A one-time message (oneTimeMessage): the desk gets it in a session that
-- is closed at once, so that no desk session stays open while the bot has
-- the conversation; what an agent answers there is refused (below).
desks.ONE_TIME_CLOSE_TEXT = "One-time message from the bot: no live chat follows"
function desks.one_time(name, conv, group, opts)
  local adapter, inst = desks.resolve(name)
  if adapter and adapter.one_time then
    adapter.one_time(name, inst, conv, group, opts)
    return true
  end
  return call(name, "open", conv, group, opts) and call(name, "close", conv, desks.ONE_TIME_CLOSE_TEXT)
end

-- Lower case for the scripts close phrases are usually written in: ASCII,
-- Latin-1, Latin Extended-A, Greek and Cyrillic (string.lower knows ASCII only).
local function lower_codepoint(c)
  if c < 0x80 then
    if c >= 0x41 and c <= 0x5A then return c + 32 end
  elseif (c >= 0xC0 and c <= 0xDE and c ~= 0xD7) then return c + 32
  elseif c >= 0x100 and c <= 0x17F then
    if (c >= 0x139 and c <= 0x148) or (c >= 0x179 and c <= 0x17E) then
      if c % 2 == 1 then return c + 1 end
    elseif c % 2 == 0 and c ~= 0x138 then return c + 1 end
  elseif c >= 0x391 and c <= 0x3AB and c ~= 0x3A2 then return c + 32
  elseif c >= 0x410 and c <= 0x42F then return c + 32
  elseif c >= 0x400 and c <= 0x40F then return c + 80
  end
  return c
end

local function fold(s)
  -- ASCII (most texts of most scripts) needs no walk through the characters
  if not s:find("[\128-\255]") or not utf8.len(s) then return s:lower() end
  local out = {}
  for _, c in utf8.codes(s) do out[#out + 1] = utf8.char(lower_codepoint(c)) end
  return table.concat(out)
end
desks.fold = fold

local function trim_lower(s)
  return fold((s:gsub("^%s+", ""):gsub("%s+$", "")))
end

-- A client message while the conversation is queued for or with an agent.
function desks.client_message(conv, m)
  local lc = conv.data.livechat
  if not lc then
    log.warn("client message in an agent state without a live chat", { conversation = conv.id })
    conv:journal("undelivered", { message = m.id, reason = "no live chat" })
    return
  end
  local said = trim_lower(m.text or "")
  for _, phrase in ipairs(lc.close_phrases or {}) do
    if said ~= "" and said == trim_lower(phrase) then
      livechat.closed_by_client(conv, m)
      return
    end
  end
  livechat.touch(conv)
  call(lc.desk, "send_client_message", conv, m)
end

-- What a desk may touch: only a conversation in a live chat with that desk
-- instance (queued or agent, data.livechat.desk == name). The one answer
-- for "no such conversation" and "not yours" is 404, so a desk cannot probe
-- conversation ids. Nothing is written before this check passed.
function desks.live_chat(name, conversation_id)
  local conv = type(conversation_id) == "string" and conversations.get(conversation_id) or nil
  if not conv or (conv.state ~= "queued" and conv.state ~= "agent") then return nil end
  local lc = conv.data.livechat
  if not lc or lc.desk ~= name then return nil end
  return conv
end

local function refuse()
  http_error(404, "not_found", "no live chat with this desk for this conversation")
end

-- A desk event carries an id; a repeat of one already applied to this
-- conversation is answered again without being applied, also after the
-- chat ended (the desk may not have seen our first answer).
local function message_key(name, event_id)
  return event_id and ("desk:" .. name .. ":" .. event_id) or nil
end
local function event_state_key(name, event_id)
  return event_id and ("desk_event:" .. name .. ":" .. event_id) or nil
end
local function dedupe_window()
  return (config.conversations and config.conversations.dedupe_window) or 86400
end

local function applied_event(name, conversation_id, event_id)
  local key = event_state_key(name, event_id)
  return key ~= nil and type(conversation_id) == "string" and state.get(key) == conversation_id
end

-- Whether desk `name` already applied the event `event_id` to this
-- conversation: for adapters that answer events outside a live chat
-- themselves (200 ignored rather than 404) and must still call a repeat a repeat.
function desks.seen_event(name, conversation_id, event_id)
  return applied_event(name, conversation_id, event_id)
end

local function remember_event(name, conv, event_id)
  local key = event_state_key(name, event_id)
  if key then state.set(key, conv.id, dedupe_window()) end
end

-- The conversation an event of desk `name` acts on, its id remembered
-- as applied with the event's writes; nil for a repeat. Anything but a
-- live chat with this desk ends the request with 404, before any write.
local function take_event(name, conversation_id, event_id)
  if applied_event(name, conversation_id, event_id) then return nil end
  local conv = desks.live_chat(name, conversation_id)
  if not conv then refuse() end
  remember_event(name, conv, event_id)
  return conv
end

-- An agent's message from desk `name`; the first one makes a queued chat the agent's.
-- msg = { text =, attachments = { {url, name?, type?} }, employee = { id =, name = }, event_id = }
-- Returns the stored message ({id, duplicate = true} for a repeated event id).
function desks.agent_message(name, conversation_id, msg)
  local key = message_key(name, msg.event_id)
  local known = type(conversation_id) == "string" and conversations.get(conversation_id) or nil
  if known and key then
    local mid = known:seen(key)
    if mid then return { id = mid, duplicate = true } end
  end
  local conv = desks.live_chat(name, conversation_id)
  if not conv then refuse() end
  -- adapters check their fields; this guards a client against one that does not
  for i, a in ipairs(msg.attachments or {}) do
    if not (type(a) == "table" and S.http_url(a.url)) then
      http_error(422, "invalid_field", "attachments[" .. i .. "].url must be an http:// or https:// URL")
    end
  end
  local employee = msg.employee or {}
  -- ids and names of agents in a message stay as the desk gives them;
  -- conv.agent is msg.assign when the desk keys its agents (the built-in desk's ids)
  local m = conv:append{
    author = { kind = "agent", name = employee.name, id = employee.id },
    text = msg.text or "", attachments = msg.attachments, dedupe_key = key,
  }
  if m.duplicate then return m end
  local joined = conv.state == "queued"
  if joined then
    conv:set_state("agent", "agent answered")
  end
  local assign = msg.assign or employee.name or employee.id
  if assign and conv.agent ~= assign then conv:set{ agent = assign } end
  if joined then
    -- the bus's livechat.started (docs/events.md)
    local lc = conv.data.livechat
    conv:journal("livechat_started", { desk = name, group = lc.group, agent = employee.name, agent_id = employee.id })
  end
  livechat.touch(conv)
  channels.send(conv, m)
  return m
end

-- The agent ended the chat on desk `name`. opts = { event_id =, defer_event = }
-- (defer_event: the bot gets livechatFinished with the client's next message).
-- Returns { duplicate = true } for a repeated event id, else {}.
function desks.agent_closed(name, conversation_id, opts)
  opts = opts or {}
  local conv = take_event(name, conversation_id, opts.event_id)
  if not conv then return { duplicate = true } end
  livechat.finish(conv, "agent", { defer_event = opts.defer_event })
  return {}
end

-- An agent of desk `name` took the chat (a desk that says so apart from
-- the agent's first message: Jivo's AGENT_JOINED, Chat2Desk's transfer to
-- an operator). A queued chat becomes the agent's (livechat.started); one
-- already with an agent gets the new agent. opts = { agent = { id =, name = }, event_id = }.
function desks.agent_joined(name, conversation_id, opts)
  opts = opts or {}
  local conv = take_event(name, conversation_id, opts.event_id)
  if not conv then return { duplicate = true } end
  local agent = opts.agent or {}
  if agent.name or agent.id then conv:set{ agent = agent.name or agent.id } end
  if conv.state == "queued" then
    conv:set_state("agent", "agent joined")
    conv:journal("livechat_started", { desk = name, group = conv.data.livechat.group, agent = agent.name,
                                       agent_id = agent.id })
  end
  livechat.touch(conv)
  return {}
end

-- Desk `name` found no agent for a queued chat (Jivo's AGENT_UNAVAILABLE):
-- livechat.unavailable. opts = { event_id = }. Returns { action = "waiting" | "returned" }.
function desks.agent_unavailable(name, conversation_id, opts)
  opts = opts or {}
  local conv = take_event(name, conversation_id, opts.event_id)
  if not conv then return { duplicate = true } end
  if conv.state ~= "queued" then return { action = "ignored" } end   -- an agent has it already
  return { action = livechat.unavailable(conv) }
end

-- Desk `name` moved the chat to another group. opts = { event_id = }.
function desks.group_changed(name, conversation_id, group, opts)
  opts = opts or {}
  local conv = take_event(name, conversation_id, opts.event_id)
  if not conv then return { duplicate = true } end
  conv:set{ group = group }
  local data = conv.data
  data.livechat.group = group
  conv:set{ data = data }
  return {}
end

-- An agent's status changed on desk `name` (online, offline, a custom
-- status): published as agent.status_changed with the job's other writes.
-- Adapters call it for the desk's status webhooks; the built-in desk will too.
function desks.agent_status(name, agent, status)
  if not desks.instance(name) then error("desks.agent_status: no desk named " .. tostring(name), 2) end
  events.agent_status(name, agent, status)
end

return desks
