-- JAICP Operator API desk (the calls and event shapes it relies on are in
-- docs/handoff.md): any live-chat server that speaks it, Tovie Agent-style
-- platforms included.
--
-- We call the desk at {api_url}: setWebhook (at every load), getDestinations,
-- selectDestination, sendText, sendFile, closeChat; it posts agent events to
-- POST /v1/providers/{instance}/operatorapi/{api_key}: TextMessage,
-- FileMessage, Closed, SelectDestination. The api_key in the path is the
-- only secret (wrong key, or unknown instance: the same 401). An event may
-- touch only a conversation in a live chat with this desk (desks.lua).
--
-- Instance config (config.desks.<name>):
--   type = "operator_api", api_url =, api_key =, public_url = (how the desk reaches us),
--   default_group =, admin_recipient =, inactivity_timeout = 600, group_inactivity = {},
--   availability_ttl = 5, transfer_message =, history_labels = { client = "Client", bot = "Bot" }
-- Assumptions where the platform's documentation says nothing, each
-- overridable in the instance config:
--   destinations_path = "getDestinations" (GET); its answer is an array of
--   {destinationId, name, hasOnline} or {"destinations": [...]}; hasOnline may be
--   a boolean or "true"/"false". Any 2xx answer to our calls is success.
local channels = require("channels")
local desks = require("desks")
local routing = require("routing")
local operator_api = {}

local v = require("validate")

-- JAICP's own names (apiUrl, apiKey) work as well as api_url, api_key.
local function api_url(inst) return inst.api_url or inst.apiUrl or "" end
local function api_key(inst) return inst.api_key or inst.apiKey end

local function url(inst, method)
  return api_url(inst):gsub("/+$", "") .. "/" .. method
end

local function lane(name, conv) return conv.id .. "|desk:" .. name end

local function post(name, inst, conv, method, body)
  outbox.send{
    conversation = conv, target = "desk:" .. name, lane = conv and lane(name, conv) or ("desk:" .. name),
    url = url(inst, method), body = body,
  }
end

local function truthy(v) return v == true or v == "true" or v == 1 end

-- GET getDestinations, cached in state for availability_ttl seconds.
function operator_api.destinations(name, inst)
  local key = "operator_api:destinations:" .. name
  local cached = state.get(key)
  if cached then return cached end
  local status, _, body = http.request{
    method = "GET", url = url(inst, inst.destinations_path or "getDestinations"), timeout = 5,
  }
  if status ~= 200 then
    return nil, "getDestinations: " .. tostring(status or _)
  end
  local ok, list = pcall(json.decode, body)
  if ok and type(list) == "table" and type(list.destinations) == "table" then list = list.destinations end
  if not ok or type(list) ~= "table" then return nil, "getDestinations: not a JSON list" end
  local out = {}
  for _, d in ipairs(list) do
    local id = type(d) == "table" and routing.id_of(d.destinationId)
    if id then out[id] = { name = type(d.name) == "string" and d.name or id, online = truthy(d.hasOnline) } end
  end
  local ttl = tonumber(inst.availability_ttl) or 5
  if ttl > 0 then state.set(key, out, ttl) end   -- 0: ask the desk every time
  return out
end

local function user_name(conv)
  local p = conv.client
  if type(p.name) == "string" and p.name ~= "" then return p.name end
  return conv.channel .. " " .. conv.client_id
end

function operator_api.open(name, inst, conv, group, opts)
  post(name, inst, conv, "selectDestination", {
    userId = conv.id, destinationId = group, userName = user_name(conv),
    attributes = opts.attributes or {}, hiddenAttributes = opts.hidden_attributes or {},
    customData = opts.custom_data or {},
  })
  local labels = inst.history_labels or {}
  for _, h in ipairs(opts.history or {}) do
    local label = h.author == "bot" and (labels.bot or "Bot") or (labels.client or "Client")
    post(name, inst, conv, "sendText", { userId = conv.id, text = label .. ": " .. h.text })
  end
  if opts.first_message and opts.first_message ~= "" then
    post(name, inst, conv, "sendText", { userId = conv.id, text = opts.first_message })
  end
end

function operator_api.send_client_message(name, inst, conv, m)
  if m.text and m.text ~= "" then
    post(name, inst, conv, "sendText", { userId = conv.id, text = m.text })
  end
  for _, a in ipairs(m.attachments or {}) do
    post(name, inst, conv, "sendFile", {
      userId = conv.id, url = a.url, fileName = a.name or a.url:match("[^/]+$") or "file", size = a.size or 0,
    })
  end
end

function operator_api.close(name, inst, conv, text)
  post(name, inst, conv, "closeChat", { userId = conv.id, text = text or "The user closed the chat" })
end

-- setWebhook at every load (idempotent on the desk's side), through the outbox.
-- setWebhook at every load (idempotent on the desk's side). The body holds
-- our webhook URL with the api_key in it: it is sent with http.request,
-- never stored, and retried from a timer (1, 2, 4 ... 300 s) until the desk
-- takes it.
function operator_api.register(data)
  local inst = desks.instance(data.desk)
  if not inst or inst.type ~= "operator_api" then return end
  if not inst.public_url or not api_key(inst) then
    log.warn("operator_api desk has no public_url or api_key: setWebhook skipped", { desk = data.desk })
    return
  end
  local status, _, body_or_err = http.request{
    method = "POST", url = url(inst, "setWebhook"), timeout = 10,
    headers = { ["Content-Type"] = "application/json" },
    body = json.encode{ url = inst.public_url:gsub("/+$", "") .. "/v1/providers/" .. data.desk .. "/operatorapi/"
                              .. api_key(inst) },
  }
  if status and status >= 200 and status < 300 then
    log.info("operator_api setWebhook done", { desk = data.desk })
    return
  end
  local attempt = (data.attempt or 0) + 1
  local delay = math.min(300, 2 ^ (attempt - 1))
  log.warn("operator_api setWebhook failed: trying again", {
    desk = data.desk, status = status and tostring(status) or "error",
    error = status and nil or tostring(body_or_err), retry_in = delay,
  })
  timer.after(delay, "operator_api.register", { desk = data.desk, attempt = attempt })
end

-- The event's employee, checked: { id =, name = } (both optional).
local function employee_of(e)
  if v.is_null(e) then return {} end
  if not v.is_object(e) then v.invalid("employee", "must be an object") end
  local first = v.string(e.firstName, "employee.firstName", { max = 256 })
  local last = v.string(e.lastName, "employee.lastName", { max = 256 })
  if first == "" then first = nil end
  if last == "" then last = nil end
  local name = first and (last and first .. " " .. last or first) or last
  return { id = v.id(e.employeeId, "employee.employeeId"), name = name }
end

-- Every field an event type needs, checked before anything is looked up or
-- written: the desk gets a 422 naming the field, and nothing changes.
local function check_event(ev)
  if not v.is_object(ev) then http_error(422, "invalid_field", "the body must be a JSON object") end
  local e = {
    type = v.string(ev.type, "type", { required = true, max = 64, nonempty = true }),
    user = v.id(ev.userId, "userId", true),
    event_id = v.id(ev.id, "id"),
  }
  if e.type == "TextMessage" then
    e.text = v.text(ev.text, "text", { required = true, nonempty = true })
    e.employee = employee_of(ev.employee)
  elseif e.type == "FileMessage" then
    e.attachments = { {
      url = v.url(ev.url, "url", true),
      name = v.string(ev.name, "name", { max = 256 }),
    } }
    if e.attachments[1].name == "" then e.attachments[1].name = nil end
    e.text = v.text(ev.comment, "comment") or ""
    e.employee = employee_of(ev.employee)
  elseif e.type == "SelectDestination" then
    if not v.is_object(ev.destination) then v.invalid("destination", "must be an object") end
    e.group = v.id(ev.destination.destinationId, "destination.destinationId", true)
  end
  return e
end

function operator_api.webhook(req)
  local name = req.params.instance
  local inst = desks.instance(name)
  local key = inst and inst.type == "operator_api" and api_key(inst) or nil
  channels.authenticate(req.params.key, key, "api key")
  local e = check_event(req:json())

  -- desks.* act only on a conversation in a live chat with this desk (404 otherwise)
  local result
  if e.type == "TextMessage" or e.type == "FileMessage" then
    result = desks.agent_message(name, e.user, {
      text = e.text, attachments = e.attachments, employee = e.employee, event_id = e.event_id,
    })
  elseif e.type == "Closed" then
    result = desks.agent_closed(name, e.user, { event_id = e.event_id })
  elseif e.type == "SelectDestination" then
    result = desks.group_changed(name, e.user, e.group, { event_id = e.event_id })
  else
    -- a type this adapter does not know touches nothing
    log.info("operator_api event ignored", { desk = name, type = e.type })
    return 200, { ok = true, ignored = true }
  end
  if result.duplicate then return 200, { ok = true, duplicate = true } end
  return 200, { ok = true }
end

desks.adapters.operator_api = operator_api
route("POST", "/v1/providers/{instance}/operatorapi/{key}", "operator_api.webhook")

-- Register our webhook with every operator_api desk at load.
for desk_name, inst in pairs(config.desks or {}) do
  if inst.type == "operator_api" then
    timer.after(0, "operator_api.register", { desk = desk_name })
  end
end

return operator_api
