-- The /v1 API: reads, bot replies, the end of a live chat, dead letters,
-- availability. Every endpoint needs an API token with the endpoint's scope
-- (docs/security.md) and checks its whole input before it writes anything.
local bots = require("bots")
local channels = require("channels")
local desks = require("desks")
local flow = require("flow")
local helpdesk = require("helpdesk")
local livechat = require("livechat")
local api = {}

local v = require("validate")

local json_headers = { ["Content-Type"] = "application/json" }

-- ---------------------------------------------------------------- tokens

local SCOPES = { read = true, write = true }

-- The tokens of this load: { name =, token =, scopes = { read = true, ... }, bot = } each.
-- A config mistake fails the load (and `switchboard --check`) rather than
-- leaving a token with more or fewer rights than meant.
local function load_tokens()
  local out, seen_names = {}, {}
  local function add(t, where)
    for _, other in ipairs(out) do
      if other.token == t.token then
        error(where .. ": the same token as " .. other.name .. " (each token must be different)")
      end
    end
    out[#out + 1] = t
  end
  local legacy = config.api_token
  if legacy ~= nil and legacy ~= "" then
    if type(legacy) ~= "string" then error("api_token must be a string") end
    add({ name = "api_token", token = legacy, scopes = { read = true, write = true } }, "api_token")
  end
  local list = config.api_tokens
  if list == nil then return out end
  if type(list) ~= "table" then error("api_tokens must be an array of tables") end
  for i, e in ipairs(list) do
    local where = "api_tokens[" .. i .. "]"
    if type(e) ~= "table" then error(where .. " must be a table {name =, token =, scopes =, bot =}") end
    if type(e.name) ~= "string" or e.name == "" or #e.name > 64 then
      error(where .. ".name must be a string of 1 to 64 bytes")
    end
    if seen_names[e.name] then error(where .. ".name: " .. e.name .. " is used twice") end
    seen_names[e.name] = true
    where = where .. " (" .. e.name .. ")"
    if type(e.scopes) ~= "table" or #e.scopes == 0 then
      error(where .. ".scopes must be a non-empty array of: read, write")
    end
    local scopes = {}
    for _, s in ipairs(e.scopes) do
      if not SCOPES[s] then error(where .. ".scopes: unknown scope " .. tostring(s) .. " (read, write)") end
      scopes[s] = true
    end
    if e.bot ~= nil and (type(e.bot) ~= "string" or not (config.bots and config.bots[e.bot])) then
      error(where .. ".bot: no bot named " .. tostring(e.bot) .. " in bots")
    end
    if e.token == nil or e.token == "" then
      -- usually token = env("X") with X unset: that token is off, the rest work
      log.warn("API token has no value: it is disabled", { token = e.name })
    elseif type(e.token) ~= "string" then
      error(where .. ".token must be a string")
    else
      add({ name = e.name, token = e.token, scopes = scopes, bot = e.bot }, where)
    end
  end
  return out
end

local TOKENS = load_tokens()

-- The configured token the request carries, or a 401/403. Every token is
-- compared (in constant time), whatever matched first, so the time taken
-- does not tell which one did or how far a guess got.
local function caller(req)
  if #TOKENS == 0 then http_error(403, "forbidden", "no API token is configured") end
  local given = channels.bearer(req) or ""
  local found
  for _, t in ipairs(TOKENS) do
    if secure_equal(given, t.token) and not found then found = t end
  end
  if not found then http_error(401, "unauthorized", "missing or wrong API token") end
  return found
end

local function auth(req, scope)
  local who = caller(req)
  if not who.scopes[scope] then
    http_error(403, "insufficient_scope", "this token does not have the " .. scope .. " scope")
  end
  return who
end
api.auth = auth

-- A conversation the caller may act on. A token bound to a bot sees the
-- conversations of that bot's channels only; any other is "no such
-- conversation", as an unknown id is.
local function conversation_for(who, id)
  local conv = conversations.get(id)
  if conv and who.bot and bots.for_channel(conv.channel) ~= who.bot then conv = nil end
  if not conv then http_error(404, "not_found", "no such conversation") end
  return conv
end

-- ---------------------------------------------------------------- reads

local function param_limit(q)
  if q.limit == nil then return nil end
  local n = v.digits(q.limit) and math.tointeger(tonumber(q.limit))
  if not n or n < 1 or n > 200 then
    http_error(400, "invalid_parameter", "limit must be an integer from 1 to 200")
  end
  return n
end

local function param_cursor(q)
  if q.cursor == nil then return nil end
  if not v.digits(q.cursor) then
    http_error(400, "invalid_parameter", "cursor is not valid")
  end
  return q.cursor
end
-- the desk's lists (helpdesk.lua) page the same way
api.param_limit, api.param_cursor = param_limit, param_cursor

local function read(kind, params)
  local text, err = conversations.read(kind, params)
  if not text then http_error(503, "store_unavailable", err or "store read failed") end
  return text
end

-- Read pages come from the store (after every write before them), without
-- taking hold of the conversation.
local function known_conversation(id)
  local text = read("conversation", { id = id, messages = 0 })
  if text == "null" then http_error(404, "not_found", "no such conversation") end
end

function api.conversation(req)
  auth(req, "read")
  local text = read("conversation", { id = req.params.id, messages = 20 })
  if text == "null" then http_error(404, "not_found", "no such conversation") end
  return 200, text, json_headers
end

-- A name to filter by (a channel, desk, group, agent or status): what the
-- store can hold, so a value no conversation can have is an error, not an
-- empty page.
local function param_name(q, key)
  local x = q[key]
  if x ~= nil and (x == "" or utf8.len(x) == nil or x:find("\0", 1, true) or #x > 512) then
    http_error(400, "invalid_parameter", key .. " must be a non-empty UTF-8 name of at most 512 bytes")
  end
  return x
end

function api.conversations(req)
  auth(req, "read")
  local q = req.query
  if q.state and not ({ bot = 1, queued = 1, agent = 1, closed = 1 })[q.state] then
    http_error(400, "invalid_parameter", "state must be bot, queued, agent or closed")
  end
  if q.order ~= nil and q.order ~= "asc" and q.order ~= "desc" then
    http_error(400, "invalid_parameter", "order must be asc or desc")
  end
  return 200, read("conversations", {
    state = q.state, channel = param_name(q, "channel"), desk = param_name(q, "desk"),
    group = param_name(q, "group"), agent = param_name(q, "agent"), status = param_name(q, "status"),
    order = q.order, limit = param_limit(q), cursor = param_cursor(q),
  }), json_headers
end

-- A page of one conversation's messages or events.
local function conversation_page(kind)
  return function(req)
    auth(req, "read")
    local limit, cursor = param_limit(req.query), param_cursor(req.query)
    known_conversation(req.params.id)
    return 200, read(kind, { id = req.params.id, limit = limit, cursor = cursor }), json_headers
  end
end

api.messages = conversation_page("messages")
api.events = conversation_page("events")

function api.dead(req)
  auth(req, "read")
  return 200, read("outbox_dead", { limit = param_limit(req.query), cursor = param_cursor(req.query) }),
         json_headers
end

-- ---------------------------------------------------------------- replies

local MAX_REPLIES = 50
local MAX_BUTTONS = 20
local MAX_PHRASES = 20

local invalid = v.invalid

local function check_buttons(list, field)
  if not v.is_array(list) or #list == 0 or #list > MAX_BUTTONS then
    invalid(field, "must be an array of 1 to " .. MAX_BUTTONS .. " buttons")
  end
  for i, b in ipairs(list) do
    local f = field .. "[" .. i .. "]"
    if type(b) == "string" then
      v.string(b, f, { max = 256, nonempty = true })
    elseif v.is_object(b) then
      v.string(b.text, f .. ".text", { required = true, max = 256, nonempty = true })
      v.string(b.payload, f .. ".payload", { max = 1024 })
      v.url(b.url, f .. ".url")
    else
      invalid(f, "must be a string or an object {text, payload?, url?}")
    end
  end
end

-- A switch's fields in either spelling (docs/handoff.md); the name in an
-- error is the one the caller used.
local function switch_field(r, field, camel, snake)
  if not v.is_null(r[camel]) then return r[camel], field .. "." .. camel end
  return r[snake], field .. "." .. snake
end

local function check_switch(r, field)
  local x, f = switch_field(r, field, "destination", "destination")
  if not v.is_null(x) then v.id(x, f) end
  for _, k in ipairs({ { "firstMessage", "first_message" }, { "lastMessage", "last_message" } }) do
    x, f = switch_field(r, field, k[1], k[2])
    v.text(x, f)
  end
  x, f = switch_field(r, field, "theme", "theme")
  v.string(x, f, { max = 256 })
  x, f = switch_field(r, field, "closeChatPhrases", "close_chat_phrases")
  if not v.is_null(x) then
    if not v.is_array(x) or #x > MAX_PHRASES then
      invalid(f, "must be an array of at most " .. MAX_PHRASES .. " strings")
    end
    for i, p in ipairs(x) do v.string(p, f .. "[" .. i .. "]", { required = true, max = 256, nonempty = true }) end
  end
  for _, k in ipairs({ { "appendCloseChatButton", "append_close_chat_button" }, { "ignoreOffline", "ignore_offline" },
                       { "oneTimeMessage", "one_time_message" },
                       { "sendMessagesToOperator", "send_messages_to_operator" } }) do
    x, f = switch_field(r, field, k[1], k[2])
    v.boolean(x, f)
  end
  x, f = switch_field(r, field, "sendMessageHistoryAmount", "send_message_history_amount")
  if not v.is_null(x) then
    local n = type(x) == "number" and math.tointeger(x)
    if not n or n < 0 or n > 50 then invalid(f, "must be an integer from 0 to 50") end
  end
  for _, k in ipairs({ { "attributes", "attributes" }, { "hiddenAttributes", "hidden_attributes" } }) do
    x, f = switch_field(r, field, k[1], k[2])
    if not v.is_null(x) and not v.is_object(x) then invalid(f, "must be an object") end
  end
  x, f = switch_field(r, field, "customData", "custom_data")
  if not v.is_null(x) and type(x) ~= "table" then invalid(f, "must be an object or an array") end
end

-- The whole body of POST /v1/conversations/{id}/replies, before anything is stored.
local function check_replies(body)
  if not v.is_object(body) then http_error(422, "invalid_field", "the body must be a JSON object") end
  local replies = body.replies
  if not v.is_array(replies) or #replies == 0 or #replies > MAX_REPLIES then
    invalid("replies", "must be an array of 1 to " .. MAX_REPLIES .. " replies")
  end
  local switches = 0
  for i, r in ipairs(replies) do
    local f = "replies[" .. i .. "]"
    if not v.is_object(r) or next(r) == nil then invalid(f, "must be an object with a type") end
    local t = v.string(r.type, f .. ".type", { required = true, max = 32 })
    if t == "text" then
      v.text(r.text, f .. ".text", { required = true, nonempty = true })
    elseif t == "buttons" then
      v.text(r.text, f .. ".text")
      check_buttons(r.buttons, f .. ".buttons")
    elseif t == "image" then
      v.url(r.imageUrl, f .. ".imageUrl", true)
      v.text(r.text, f .. ".text")
    elseif t == "switch" then
      switches = switches + 1
      if switches > 1 then invalid(f, "is a second switch: one switch per request") end
      check_switch(r, f)
    else
      invalid(f .. ".type", "must be text, buttons, image or switch")
    end
  end
  return replies, v.string(body.bot, "bot", { max = 128, nonempty = true })
end

-- A bot answering later: {"replies": [...], "bot": "optional name"}
function api.replies(req)
  local who = auth(req, "write")
  local conv = conversation_for(who, req.params.id)
  local replies, bot = check_replies(req:json())
  if who.bot then
    if bot and bot ~= who.bot then invalid("bot", "must be " .. who.bot .. " (the bot of this token) or absent") end
    bot = who.bot
  end
  bot = bot or select(1, bots.for_channel(conv.channel)) or "bot"
  local ids = flow.bot_replies(conv, replies, bot)
  -- a switch alone stores no message: still a list
  return 202, { message_ids = json.array(ids) }
end

-- ---------------------------------------------------------------- other writes

-- Dead letter ids are plain decimal integers; anything else names no dead letter.
function api.retry_dead(req)
  local who = auth(req, "write")
  if who.bot then
    http_error(403, "insufficient_scope", "a token bound to a bot cannot retry dead letters")
  end
  local id = v.digits(req.params.id) and math.tointeger(tonumber(req.params.id))
  if not id then http_error(404, "not_found", "no such dead letter") end
  local requeued, why = outbox.requeue(id)
  if not requeued then
    if why == "not found" then http_error(404, "not_found", "no such dead letter") end
    -- sent again meanwhile (by another request), or never dead
    http_error(409, "not_dead", "this entry is not a dead letter (any more)")
  end
  return 202, { id = requeued, state = "pending" }
end

-- Ends a live chat: the desk is told, the client gets lastMessage, the bot
-- gets livechatFinished with reason "api". The body is empty or a JSON
-- object (no fields are defined yet).
function api.end_chat(req)
  -- an agent of the built-in desk ends the chat as an agent (docs/desk.md)
  if helpdesk.agent_of(req) then return helpdesk.end_chat(req) end
  local who = auth(req, "write")
  if req.body ~= "" and not v.is_object(req:json()) then
    http_error(422, "invalid_field", "the body must be empty or a JSON object")
  end
  local conv = conversation_for(who, req.params.id)
  if not livechat.finish(conv, "api") then
    http_error(409, "not_in_live_chat", "the conversation is not queued for or with an agent")
  end
  return 200, { conversation_id = conv.id, state = conv.state }
end

-- Would a switch to this group find an agent now? ?desk= picks the desk,
-- else desks.default().
function api.availability(req)
  auth(req, "read")
  local desk = req.query.desk
  if desk == nil then
    local why
    desk, why = desks.default()
    if not desk then
      local any = false
      for _ in pairs(config.desks or {}) do any = true break end
      if not any then http_error(404, "unknown_desk", why) end
      http_error(400, "invalid_parameter", "desk is required: " .. why)
    end
  end
  if not desks.instance(desk) then http_error(404, "unknown_desk", "no such desk") end
  local known, err = desks.destinations(desk)
  if not known then http_error(502, "desk_unavailable", tostring(err)) end
  local d = known[req.params.name]
  if not d then http_error(404, "unknown_group", "the desk does not know this group") end
  return 200, { desk = desk, group = req.params.name, name = d.name, online = d.online == true }
end

-- ---------------------------------------------------------------- event stream

local MAX_STREAM_PATTERNS = 32

-- GET /v1/events/stream: engine events as Server-Sent Events (docs/events.md).
-- ?events=message.created,livechat.* and ?conversation=<id> filter; the
-- Last-Event-ID header (or ?last_event_id=) resumes after that event. A
-- token bound to a bot sees its bot's channels' conversations only.
-- ?events= and Last-Event-ID of a stream request: after, patterns (400 when bad).
function api.stream_options(req)
  local q = req.query
  local patterns
  if q.events ~= nil then
    patterns = {}
    for name in q.events:gmatch("[^,]+") do
      local ok, why = events.valid(name)
      if not ok then http_error(400, "invalid_parameter", "events: " .. why) end
      patterns[#patterns + 1] = name
    end
    if #patterns == 0 or #patterns > MAX_STREAM_PATTERNS then
      http_error(400, "invalid_parameter", "events must list 1 to " .. MAX_STREAM_PATTERNS .. " event names")
    end
  end
  local last = req.headers["last-event-id"] or q.last_event_id
  if last ~= nil and (not v.digits(last) or #last > 15) then
    http_error(400, "invalid_parameter", "Last-Event-ID must be an event id")
  end
  return last and math.tointeger(tonumber(last)), patterns
end

function api.events_stream(req)
  local who = auth(req, "read")
  local q = req.query
  local after, patterns = api.stream_options(req)
  local conv_id
  if q.conversation ~= nil then conv_id = conversation_for(who, q.conversation).id end
  local channels_seen
  if who.bot then
    channels_seen = {}
    for name in pairs(config.channels or {}) do
      if bots.for_channel(name) == who.bot then channels_seen[#channels_seen + 1] = name end
    end
  end
  return events.stream{
    after = after, events = patterns, conversation = conv_id,
    channels = channels_seen,
  }
end

route("GET", "/v1/events/stream", "api.events_stream")
route("POST", "/v1/conversations/{id}/end", "api.end_chat")
route("GET", "/v1/groups/{name}/availability", "api.availability")
route("GET", "/v1/conversations", "api.conversations")
route("GET", "/v1/conversations/{id}", "api.conversation")
route("GET", "/v1/conversations/{id}/messages", "api.messages")
route("GET", "/v1/conversations/{id}/events", "api.events")
route("POST", "/v1/conversations/{id}/replies", "api.replies")
route("GET", "/v1/outbox/dead", "api.dead")
route("POST", "/v1/outbox/dead/{id}/retry", "api.retry_dead")

return api
