-- The read API, bot replies and dead letters; all need the API token.
api = {}

local json_headers = { ["Content-Type"] = "application/json" }

local function auth(req)
  channels.require_bearer(req, config.api_token, "API token")
end

local function param_limit(q)
  if q.limit == nil then return nil end
  local n = tonumber(q.limit)
  if not n or n ~= math.floor(n) or n < 1 or n > 200 then
    http_error(400, "invalid_parameter", "limit must be an integer from 1 to 200")
  end
  return math.tointeger(n)
end

local function param_cursor(q)
  if q.cursor == nil then return nil end
  if not q.cursor:match("^%d+$") or #q.cursor > 18 then
    http_error(400, "invalid_parameter", "cursor is not valid")
  end
  return q.cursor
end

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
  auth(req)
  local text = read("conversation", { id = req.params.id, messages = 20 })
  if text == "null" then http_error(404, "not_found", "no such conversation") end
  return 200, text, json_headers
end

function api.conversations(req)
  auth(req)
  local q = req.query
  if q.state and not ({ bot = 1, queued = 1, agent = 1, closed = 1 })[q.state] then
    http_error(400, "invalid_parameter", "state must be bot, queued, agent or closed")
  end
  return 200, read("conversations", {
    state = q.state, channel = q.channel, limit = param_limit(q), cursor = param_cursor(q),
  }), json_headers
end

-- A page of one conversation's messages or events.
local function conversation_page(kind)
  return function(req)
    auth(req)
    known_conversation(req.params.id)
    return 200, read(kind, { id = req.params.id, limit = param_limit(req.query),
                             cursor = param_cursor(req.query) }), json_headers
  end
end

api.messages = conversation_page("messages")
api.events = conversation_page("events")

-- A bot answering later: {"replies": [...], "bot": "optional name"}
function api.replies(req)
  auth(req)
  local conv = conversations.get(req.params.id)
  if not conv then http_error(404, "not_found", "no such conversation") end
  local body = req:json()
  if type(body) ~= "table" or type(body.replies) ~= "table" then
    http_error(422, "invalid_field", "replies must be an array")
  end
  local bot = type(body.bot) == "string" and body.bot or select(1, bots.for_channel(conv.channel)) or "bot"
  local ids = flow.bot_replies(conv, body.replies, bot)
  return 202, { message_ids = ids }
end

function api.dead(req)
  auth(req)
  return 200, read("outbox_dead", { limit = param_limit(req.query), cursor = param_cursor(req.query) }),
         json_headers
end

function api.retry_dead(req)
  auth(req)
  local id = tonumber(req.params.id)
  if not id or id ~= math.floor(id) then http_error(404, "not_found", "no such dead letter") end
  local requeued, why = outbox.requeue(math.tointeger(id))
  if not requeued then
    if why == "not found" then http_error(404, "not_found", "no such dead letter") end
    -- sent again meanwhile (by another request), or never dead
    http_error(409, "not_dead", "this entry is not a dead letter (any more)")
  end
  return 202, { id = requeued, state = "pending" }
end

-- Ends a live chat: {"reason": "optional text"} -> the desk is told, the
-- client gets lastMessage, the bot gets livechatFinished with reason "api".
function api.end_chat(req)
  auth(req)
  local conv = conversations.get(req.params.id)
  if not conv then http_error(404, "not_found", "no such conversation") end
  if not livechat.finish(conv, "api") then
    http_error(409, "not_in_live_chat", "the conversation is not queued for or with an agent")
  end
  return 200, { conversation_id = conv.id, state = conv.state }
end

-- Would a switch to this group find an agent now? ?desk= picks the desk.
function api.availability(req)
  auth(req)
  local desk = req.query.desk
  if not desk then
    for name in pairs(config.desks or {}) do desk = name break end
  end
  if not desk or not desks.instance(desk) then http_error(404, "unknown_desk", "no such desk") end
  local known, err = desks.destinations(desk)
  if not known then http_error(502, "desk_unavailable", tostring(err)) end
  local d = known[req.params.name]
  if not d then http_error(404, "unknown_group", "the desk does not know this group") end
  return 200, { desk = desk, group = req.params.name, name = d.name, online = d.online == true }
end

route("POST", "/v1/conversations/{id}/end", "api.end_chat")
route("GET", "/v1/groups/{name}/availability", "api.availability")
route("GET", "/v1/conversations", "api.conversations")
route("GET", "/v1/conversations/{id}", "api.conversation")
route("GET", "/v1/conversations/{id}/messages", "api.messages")
route("GET", "/v1/conversations/{id}/events", "api.events")
route("POST", "/v1/conversations/{id}/replies", "api.replies")
route("GET", "/v1/outbox/dead", "api.dead")
route("POST", "/v1/outbox/dead/{id}/retry", "api.retry_dead")
