-- The built-in agent desk (docs/desk.md): agents, groups and statuses from
-- a desk instance of type "builtin"; chats wait in their group's queue and
-- are offered to agents; agents work through the /v1 API with their own
-- tokens and follow their chats on an event stream; ended chats are cases.
--
-- What is durable lives in the store, not in shared keys: a queued chat is
-- a conversation in state `queued` on this desk with its `group`, an
-- offered or taken chat has the agent's id as `agent`, a case is a
-- conversation of this desk with a case `status`. The queue and the loads
-- are queries of the store, so two jobs never overwrite each other's
-- list. An agent's status is a `state` key written by that agent only.
-- Offers run as outbox jobs on one lane per desk: one at a time, in order.
local api = require("api")
local channels = require("channels")
local desks = require("desks")
local livechat = require("livechat")
local S = require("schema")
local helpdesk = {}

local BUILTIN_STATUSES = { online = true, offline = false }
local CASE_STATUSES = { open = true, pending = true, solved = true, closed = true }
local DEFAULT_CAPACITY = 3
local DEFAULT_INACTIVITY = 600
local OFFERS_PER_RUN = 50

-- ---------------------------------------------------------------- config

local function fail(desk, what) error("desks." .. desk .. ": " .. what, 0) end

-- The desk's config, checked and indexed at every load: a mistake fails the
-- load (and --check), never a request.
local function build(name, inst)
  if not name:match("^[%w_%-]+$") then fail(name, "a builtin desk's name must be letters, digits, _ and -") end
  local d = { name = name, agents = {}, order = {}, groups = {}, group_order = {}, statuses = {} }
  for status, takes in pairs(BUILTIN_STATUSES) do d.statuses[status] = { name = status, takes_chats = takes } end
  for i, st in ipairs(inst.statuses or {}) do
    if type(st) ~= "table" or type(st.name) ~= "string" or not st.name:match("^[%w_%-]+$") then
      fail(name, "statuses[" .. i .. "].name must be letters, digits, _ and -")
    end
    if BUILTIN_STATUSES[st.name] ~= nil or d.statuses[st.name] then fail(name, "status " .. st.name .. " is declared twice") end
    if type(st.takes_chats) ~= "boolean" then fail(name, "statuses[" .. i .. "].takes_chats must be true or false") end
    d.statuses[st.name] = { name = st.name, label = st.label, takes_chats = st.takes_chats }
  end
  for key, g in pairs(inst.groups or {}) do
    if type(key) ~= "string" or type(g) ~= "table" then fail(name, "groups must map a group's key to a table") end
    local timeout = g.inactivity_timeout
    if timeout ~= nil and (type(timeout) ~= "number" or timeout <= 0) then
      fail(name, "groups." .. key .. ".inactivity_timeout must be a positive number of seconds")
    end
    d.groups[key] = { key = key, name = type(g.name) == "string" and g.name or key, members = {},
                      inactivity_timeout = timeout, working_hours = g.working_hours }
    d.group_order[#d.group_order + 1] = key
  end
  table.sort(d.group_order)
  if #d.group_order == 0 then fail(name, "a builtin desk needs at least one group") end
  local tokens = {}
  for i, a in ipairs(inst.agents or {}) do
    local where = "agents[" .. i .. "]"
    if type(a) ~= "table" or type(a.id) ~= "string" or not a.id:match("^[%w_.%-]+$") then
      fail(name, where .. ".id must be letters, digits, _, . and -")
    end
    if d.agents[a.id] then fail(name, where .. ": agent " .. a.id .. " is declared twice") end
    local cap = a.capacity == nil and DEFAULT_CAPACITY or math.tointeger(a.capacity)
    if not cap or cap < 0 then fail(name, where .. ".capacity must be a whole number >= 0") end
    local agent = { id = a.id, name = type(a.name) == "string" and a.name or a.id, email = a.email,
                    groups = {}, channels = {}, capacity = cap, token = a.token }
    for _, g in ipairs(a.groups or {}) do
      if not d.groups[g] then fail(name, where .. ".groups: no group " .. tostring(g)) end
      agent.groups[g] = true
    end
    for _, ch in ipairs(a.channels or {}) do
      if not (config.channels and config.channels[ch]) then fail(name, where .. ".channels: no channel " .. tostring(ch)) end
      agent.channels[ch] = true
    end
    if type(a.token) ~= "string" or a.token == "" then
      log.warn("agent has no token: the agent cannot sign in", { desk = name, agent = a.id })
      agent.token = nil
    elseif tokens[a.token] then
      fail(name, where .. ": the same token as agent " .. tokens[a.token])
    else
      tokens[a.token] = a.id
    end
    d.agents[a.id] = agent
    d.order[#d.order + 1] = agent
  end
  for key, g in pairs(inst.groups or {}) do
    for _, id in ipairs(g.members or {}) do
      if not d.agents[id] then fail(name, "groups." .. key .. ".members: no agent " .. tostring(id)) end
      d.agents[id].groups[key] = true
    end
  end
  for _, agent in ipairs(d.order) do
    for key in pairs(agent.groups) do table.insert(d.groups[key].members, agent.id) end
  end
  local default = inst.default_group
  if default ~= nil and not d.groups[default] then fail(name, "default_group: no group " .. tostring(default)) end
  d.default_group = default or (#d.group_order == 1 and d.group_order[1]) or nil
  if inst.admin_recipient ~= nil and not d.groups[inst.admin_recipient] then
    fail(name, "admin_recipient: no group " .. tostring(inst.admin_recipient))
  end
  return d
end

local DESKS = {}
for name, inst in pairs(config.desks or {}) do
  if type(inst) == "table" and inst.type == "builtin" then DESKS[name] = build(name, inst) end
end

-- An API token and an agent's token must differ: one request, one identity.
for _, t in ipairs(type(config.api_tokens) == "table" and config.api_tokens or {}) do
  for name, d in pairs(DESKS) do
    for _, a in ipairs(d.order) do
      if a.token and type(t) == "table" and t.token == a.token then
        fail(name, "agent " .. a.id .. " has the token of API token " .. tostring(t.name))
      end
    end
  end
end
for name, d in pairs(DESKS) do
  for _, a in ipairs(d.order) do
    if a.token and a.token == config.api_token then fail(name, "agent " .. a.id .. " has the api_token as token") end
  end
end

local function agent_view(a)
  local groups, chans = json.array(), json.array()
  for g in pairs(a.groups) do groups[#groups + 1] = g end
  for c in pairs(a.channels) do chans[#chans + 1] = c end
  table.sort(groups)
  table.sort(chans)
  return { id = a.id, name = a.name, email = a.email, groups = groups, channels = chans, capacity = a.capacity }
end

-- The desk agent's config (without the token), or nil.
function helpdesk.agent(desk, id)
  local d = DESKS[desk]
  local a = d and d.agents[id]
  return a and agent_view(a) or nil
end

function helpdesk.is_builtin(desk) return DESKS[desk] ~= nil end

-- Whether a status takes live chats (online yes, offline no, custom as declared).
function helpdesk.takes_chats(desk, status)
  local d = DESKS[desk]
  local st = d and d.statuses[status]
  return st ~= nil and st.takes_chats == true
end

local function status_key(desk, id) return "helpdesk:" .. desk .. ":status:" .. id end

function helpdesk.status_of(desk, id)
  local s = state.get(status_key(desk, id))
  return s and s.status or "offline"
end

-- ---------------------------------------------------------------- reading the store

local function read(kind, params)
  local text, err = conversations.read(kind, params)
  if not text then error("helpdesk: the store could not be read: " .. tostring(err), 0) end
  return json.decode(text)
end

-- Chats each agent of the desk has (offered or taken): { [agent id] = n }.
local function loads(desk)
  return read("conversation_counts", { desk = desk, by = "agent", state = { "queued", "agent" } })
end

-- A group's queue, oldest first: queued chats of the desk no agent has.
local function queue(desk, group, limit)
  local page = read("conversations", { desk = desk, group = group, state = "queued", agent = false,
                                       limit = limit or OFFERS_PER_RUN, order = "asc" })
  return page and page.conversations or {}
end

-- ---------------------------------------------------------------- offering chats

-- Asks for an offer round on the desk's lane (after this job committed).
function helpdesk.offer_soon(desk, conv)
  outbox.call{ conversation = conv, target = "helpdesk.offer", lane = "helpdesk:" .. desk, data = { desk = desk } }
end

-- The policy (docs/desk.md): each queued chat, oldest first within its
-- group, goes to the least busy agent of the group whose status takes
-- chats, who may work in the chat's channel and is under capacity; a tie
-- goes to the agent whose status has taken chats the longest. A chat no
-- agent can take waits.
function helpdesk.offer(data)
  local d = DESKS[data.desk]
  if not d then return end
  local load = loads(d.name)
  local offered = 0
  for _, key in ipairs(d.group_order) do
    local g = d.groups[key]
    local ready = {}
    for _, id in ipairs(g.members) do
      local st = state.get(status_key(d.name, id))
      if st and helpdesk.takes_chats(d.name, st.status) then ready[#ready + 1] = { agent = d.agents[id], since = st.since } end
    end
    if #ready > 0 then
      for _, c in ipairs(queue(d.name, key)) do
        local best
        for _, r in ipairs(ready) do
          local n = load[r.agent.id] or 0
          if n < r.agent.capacity and r.agent.channels[c.channel] then
            if not best or n < (load[best.agent.id] or 0)
               or (n == (load[best.agent.id] or 0) and (r.since or 0) < (best.since or 0)) then
              best = r
            end
          end
        end
        if best then
          local conv = conversations.get(c.id)
          if conv and conv.state == "queued" and conv.desk == d.name and not conv.agent then
            conv:set{ agent = best.agent.id }
            conv:journal("offered", { desk = d.name, group = key, agent = best.agent.id })
            load[best.agent.id] = (load[best.agent.id] or 0) + 1
            offered = offered + 1
            if offered >= OFFERS_PER_RUN then
              helpdesk.offer_soon(d.name)   -- the rest in the next round
              return
            end
          end
        end
      end
    end
  end
end

-- ---------------------------------------------------------------- the desk adapter

local builtin = { keeps_agent = true }   -- an ended chat is a case of the agent who had it

function builtin.destinations(name)
  local d = DESKS[name]
  if not d then return nil, "no such builtin desk" end
  local out = {}
  for _, key in ipairs(d.group_order) do
    local g = d.groups[key]
    local online = false
    for _, id in ipairs(g.members) do
      if helpdesk.takes_chats(name, helpdesk.status_of(name, id)) then online = true break end
    end
    local entry = { id = key, name = g.name, online = online }
    out[key] = entry
    if out[g.name] == nil then out[g.name] = entry end
  end
  return out
end

function builtin.inactivity_timeout(name, inst, group)
  local d = DESKS[name]
  local g = d and d.groups[group]
  return (g and g.inactivity_timeout) or tonumber(inst.inactivity_timeout) or DEFAULT_INACTIVITY
end

-- A switch (or a chat with no bot) to the desk: the conversation is queued
-- with its group already; what the bot asked the agents to see becomes a note.
function builtin.open(name, inst, conv, group, opts)
  local lines = {}
  for k, val in pairs(opts.attributes or {}) do
    lines[#lines + 1] = tostring(k) .. ": " .. (type(val) == "table" and json.encode(val) or tostring(val))
  end
  table.sort(lines)
  if opts.first_message_explicit and opts.first_message and opts.first_message ~= "" then
    table.insert(lines, 1, opts.first_message)
  end
  if #lines > 0 then
    conv:append{ author = { kind = "note", name = "bot" }, text = table.concat(lines, "\n") }
  end
  -- a case the client comes back to keeps its status (a rule may act on
  -- "resumed while pending"); anything else is an open case
  if not CASE_STATUSES[conv.status] then conv:set{ status = "open" } end
  helpdesk.offer_soon(name, conv)
end

-- The client's message is in the conversation already: agents read it there.
function builtin.send_client_message() end

-- The chat ended other than by an agent of this desk (the client's close
-- phrase, inactivity, the API, a rule): the channel hears of it, and the
-- agent's place goes to the next chat.
function builtin.close(name, inst, conv, text, reason)
  helpdesk.ended(name, conv, reason)
end

function builtin.one_time(name, inst, conv, group, opts)
  local text = opts.first_message or ""
  conv:append{ author = { kind = "note", name = "bot" },
               text = "One-time message for group " .. tostring(group) .. ": " .. text }
end

-- After any end: the channel's adapter may close the chat on its platform
-- (Chaport), and a freed place is offered.
function helpdesk.ended(desk, conv, reason)
  local adapter, inst = channels.resolve(conv.channel)
  if adapter and adapter.closed then adapter.closed(conv.channel, inst, conv, reason) end
  helpdesk.offer_soon(desk, conv)
end

desks.adapters.builtin = builtin

-- ---------------------------------------------------------------- agents' requests

-- The agent whose token the request carries: desk name, agent; or nil.
-- Every agent's token is compared, whichever matches, so the time taken
-- does not tell which one did.
function helpdesk.agent_of(req)
  local given = channels.bearer(req)
  if not given then return nil end
  local found_desk, found
  for name, d in pairs(DESKS) do
    for _, a in ipairs(d.order) do
      if a.token and secure_equal(given, a.token) then found_desk, found = name, a end
    end
  end
  return found_desk, found
end

local function signed_in(req)
  local desk, agent = helpdesk.agent_of(req)
  if not desk then http_error(401, "unauthorized", "missing or wrong agent token") end
  return desk, agent
end

-- The conversation an agent acts on: 404 unknown, 403 a channel the agent
-- may not work in (before anything is written), 409 not a live chat of
-- this desk when `live` is asked for.
local function conversation_for(desk, agent, id, live)
  local conv = type(id) == "string" and conversations.get(id) or nil
  if not conv then http_error(404, "not_found", "no such conversation") end
  if not agent.channels[conv.channel] then
    http_error(403, "forbidden", "you do not work in this conversation's channel")
  end
  if live and not desks.live_chat(desk, conv.id) then
    http_error(409, "not_in_live_chat", "the conversation is not queued for or with this desk")
  end
  return conv
end

local function body_of(req, schema)
  if req.body == "" then return S.check(schema, {}, "the body") end
  return S.check(schema, req:json(), "the body")
end

function helpdesk.me(req)
  local desk, agent = signed_in(req)
  local view = agent_view(agent)
  view.desk, view.status = desk, helpdesk.status_of(desk, agent.id)
  view.takes_chats = helpdesk.takes_chats(desk, view.status)
  local page = read("conversations", { desk = desk, agent = agent.id, state = { "queued", "agent" }, limit = 200 })
  local chats = json.array()
  for _, c in ipairs(page and page.conversations or {}) do chats[#chats + 1] = c end
  view.chats = chats
  local statuses = json.array()
  for _, st in pairs(DESKS[desk].statuses) do
    statuses[#statuses + 1] = { name = st.name, label = st.label, takes_chats = st.takes_chats }
  end
  table.sort(statuses, function(a, b) return a.name < b.name end)
  view.statuses = statuses
  return 200, view
end

local Status = S.object({ status = S.string{ required = true, max = 64, nonempty = true } }, { unknown = "refuse" })

function helpdesk.set_status(req)
  local desk, agent = signed_in(req)
  local b = body_of(req, Status)
  local d = DESKS[desk]
  if not d.statuses[b.status] then
    http_error(422, "invalid_field", "status must be online, offline or a status of the desk's config")
  end
  local before = helpdesk.status_of(desk, agent.id)
  if before ~= b.status then
    state.set(status_key(desk, agent.id), { status = b.status, since = now() })
    desks.agent_status(desk, agent.id, b.status)
    if helpdesk.takes_chats(desk, b.status) then helpdesk.offer_soon(desk) end
  end
  return 200, { agent = agent.id, status = b.status, takes_chats = helpdesk.takes_chats(desk, b.status) }
end

-- The queues of the agent's groups: chats no agent has yet, in channels the
-- agent works in, oldest first.
function helpdesk.queue(req)
  local desk, agent = signed_in(req)
  local out = json.array()
  for _, key in ipairs(DESKS[desk].group_order) do
    if agent.groups[key] then
      for _, c in ipairs(queue(desk, key, 200)) do
        if agent.channels[c.channel] then out[#out + 1] = c end
      end
    end
  end
  table.sort(out, function(a, b) return (a.created or 0) < (b.created or 0) end)
  return 200, { desk = desk, conversations = out }
end

-- The agent takes a chat: it becomes theirs (capacity does not apply to a
-- chat taken by hand) and, if it was waiting, an agent chat.
function helpdesk.take(req)
  local desk, agent = signed_in(req)
  local conv = conversation_for(desk, agent, req.params.id, true)
  if conv.agent ~= agent.id then conv:set{ agent = agent.id } end
  if conv.state == "queued" then
    conv:set_state("agent", "agent took the chat")
    conv:journal("livechat_started", { desk = desk, group = conv.group, agent = agent.name, agent_id = agent.id })
  end
  livechat.touch(conv)
  return 200, { conversation_id = conv.id, state = conv.state, agent = agent.id }
end

local Transfer = S.object({ group = S.string{ max = 128, nonempty = true }, agent = S.string{ max = 128, nonempty = true } },
                          { unknown = "refuse", check = function(b)
                              if (b.group == nil) == (b.agent == nil) then return "must name a group or an agent" end
                            end })

-- To a group: back to its queue, unassigned. To an agent: theirs (who must
-- work in the chat's channel); the group becomes one of theirs if it was not.
function helpdesk.transfer(req)
  local desk, agent = signed_in(req)
  local b = body_of(req, Transfer)
  local d = DESKS[desk]
  local conv = conversation_for(desk, agent, req.params.id, true)
  local data = conv.data
  if b.group then
    if not d.groups[b.group] then http_error(422, "invalid_field", "group: no such group on this desk") end
    data.livechat.group = b.group
    conv:set{ group = b.group, agent = false, data = data }
    if conv.state == "agent" then conv:set_state("queued", "transferred") end
  else
    local to = d.agents[b.agent]
    if not to then http_error(422, "invalid_field", "agent: no such agent on this desk") end
    if not to.channels[conv.channel] then
      http_error(422, "invalid_field", "agent: " .. to.id .. " does not work in this conversation's channel")
    end
    local group = to.groups[conv.group] and conv.group or next(to.groups) or conv.group
    data.livechat.group = group
    conv:set{ agent = to.id, group = group, data = data }
  end
  conv:journal("transferred", { desk = desk, by = agent.id, group = b.group, agent = b.agent })
  helpdesk.offer_soon(desk, conv)
  return 200, { conversation_id = conv.id, state = conv.state, group = conv.group, agent = conv.agent or json.null }
end

local Reply = S.object({
  text = S.text{ max_chars = 10000 },
  attachments = S.array(S.object{ url = S.url{ required = true }, name = S.string{ max = 256 },
                                  type = S.string{ max = 64 } }, { max = 20 }),
}, { unknown = "refuse", check = function(b)
  if (b.text == nil or b.text == "") and not b.attachments then return "must have a text or attachments", "text" end
end })

-- The agent's answer to the client: the chat becomes theirs.
function helpdesk.reply(req)
  local desk, agent = signed_in(req)
  local b = body_of(req, Reply)
  conversation_for(desk, agent, req.params.id, true)
  local m = desks.agent_message(desk, req.params.id, {
    text = b.text or "", attachments = b.attachments, employee = { id = agent.id, name = agent.name }, assign = agent.id,
  })
  return 201, { id = m.id, seq = m.seq }
end

local Note = S.object({ text = S.text{ required = true, nonempty = true } }, { unknown = "refuse" })

-- An internal note: a message of kind `note`, never sent to the client.
function helpdesk.note(req)
  local desk, agent = signed_in(req)
  local b = body_of(req, Note)
  local conv = conversation_for(desk, agent, req.params.id, false)
  if conv.desk ~= desk then http_error(409, "not_on_desk", "the conversation is not on this desk") end
  local m = conv:append{ author = { kind = "note", name = agent.name, id = agent.id }, text = b.text }
  return 201, { id = m.id, seq = m.seq }
end

local End = S.object({ status = S.string{ enum = { "open", "pending", "solved", "closed" } } }, { unknown = "refuse" })

-- The agent ends the chat; it stays a case with the status given (open
-- unless said). The client gets lastMessage, the bot (if any) livechatFinished.
function helpdesk.end_chat(req)
  local desk, agent = signed_in(req)
  local b = body_of(req, End)
  local conv = conversation_for(desk, agent, req.params.id, true)
  livechat.finish(conv, "agent")
  conv:set{ status = b.status or "open" }
  helpdesk.ended(desk, conv, "agent")
  return 200, { conversation_id = conv.id, state = conv.state, status = conv.status }
end

-- A message an agent typed in the platform's own interface (Chatra): kept
-- in the conversation as an agent message, not sent back to the client.
-- msg = { name =, text =, dedupe_key =, platform_agent = }. Returns the message.
function helpdesk.external_agent_message(conv, msg)
  local m = conv:append{ author = { kind = "agent", name = msg.name, id = msg.platform_agent },
                         text = msg.text or "", attachments = msg.attachments, dedupe_key = msg.dedupe_key }
  if not m.duplicate then livechat.touch(conv) end
  return m
end

-- ---------------------------------------------------------------- cases and the agent's stream

-- Ended live chats of the desk with a case status, newest first.
-- ?status=&group=&agent=&channel=&limit=&cursor=. Agents see their
-- channels' cases; an API token with the read scope sees all (?desk= when
-- there are several builtin desks).
function helpdesk.cases(req, api_caller)
  local desk, agent
  if api_caller then
    desk = req.query.desk
    if desk == nil then
      for name in pairs(DESKS) do
        if desk then http_error(400, "invalid_parameter", "desk is required: several builtin desks") end
        desk = name
      end
    end
    if not DESKS[desk or ""] then http_error(404, "unknown_desk", "no builtin desk named " .. tostring(desk)) end
  else
    desk, agent = signed_in(req)
  end
  local q = req.query
  if q.status ~= nil and not CASE_STATUSES[q.status] then
    http_error(400, "invalid_parameter", "status must be open, pending, solved or closed")
  end
  local statuses = q.status and q.status or { "open", "pending", "solved", "closed" }
  local chans
  if agent then
    if q.channel ~= nil and not agent.channels[q.channel] then http_error(403, "forbidden", "not your channel") end
    if q.channel == nil then
      chans = {}
      for c in pairs(agent.channels) do chans[#chans + 1] = c end
      table.sort(chans)
      if #chans == 0 then return 200, { conversations = json.array() } end
    end
  end
  local text, err = conversations.read("conversations", {
    desk = desk, status = statuses, group = q.group, agent = q.agent, channel = q.channel or chans,
    state = { "closed", "bot" }, order = "desc", limit = api.param_limit(q), cursor = api.param_cursor(q),
  })
  if not text then http_error(503, "store_unavailable", tostring(err)) end
  return 200, text, { ["Content-Type"] = "application/json" }
end

-- The agent's live feed: the event stream of the channels the agent works
-- in (?events= and Last-Event-ID as on /v1/events/stream).
function helpdesk.stream(req)
  local desk, agent = signed_in(req)
  local chans = {}
  for c in pairs(agent.channels) do chans[#chans + 1] = c end
  table.sort(chans)
  local after, patterns = api.stream_options(req)
  -- the conversations of the agent's channels, and the status changes of the desk's agents
  return events.stream{ after = after, events = patterns, channels = #chans > 0 and chans or nil, desk = desk }
end

-- GET /v1/cases answers agents (their channels) and API tokens (read scope).
function helpdesk.cases_route(req)
  if helpdesk.agent_of(req) then return helpdesk.cases(req) end
  api.auth(req, "read")
  return helpdesk.cases(req, true)
end

route("GET", "/v1/agents/me", "helpdesk.me")
route("PUT", "/v1/agents/me/status", "helpdesk.set_status")
route("GET", "/v1/agents/me/stream", "helpdesk.stream")
route("GET", "/v1/desk/queue", "helpdesk.queue")
route("GET", "/v1/cases", "helpdesk.cases_route")
route("POST", "/v1/conversations/{id}/take", "helpdesk.take")
route("POST", "/v1/conversations/{id}/transfer", "helpdesk.transfer")
route("POST", "/v1/conversations/{id}/messages", "helpdesk.reply")
route("POST", "/v1/conversations/{id}/notes", "helpdesk.note")

return helpdesk
