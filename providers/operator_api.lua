-- JAICP Operator API desk (../shared/providers/platforms.md §5.3): any
-- live-chat server that speaks it, Tovie Agent-style platforms included.
--
-- We call the desk at {api_url}: setWebhook (at every load), getDestinations,
-- selectDestination, sendText, sendFile, closeChat; it posts agent events to
-- POST /v1/providers/{instance}/operatorapi/{api_key}: TextMessage,
-- FileMessage, Closed, SelectDestination. The api_key in the path is the
-- only secret (wrong key: 401).
--
-- Instance config (config.desks.<name>):
--   type = "operator_api", api_url =, api_key =, public_url = (how the desk reaches us),
--   default_group =, admin_recipient =, inactivity_timeout = 600, group_inactivity = {},
--   availability_ttl = 5, transfer_message =, history_labels = { client = "Client", bot = "Bot" }
-- Assumptions where the platform facts are unverified (platforms.md §7), each
-- overridable in the instance config:
--   destinations_path = "getDestinations" (GET); its answer is an array of
--   {destinationId, name, hasOnline} or {"destinations": [...]}; hasOnline may be
--   a boolean or "true"/"false". Any 2xx answer to our calls is success.
operator_api = {}

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
function operator_api.register(data)
  local inst = desks.instance(data.desk)
  if not inst or inst.type ~= "operator_api" then return end
  if not inst.public_url or not api_key(inst) then
    log.warn("operator_api desk has no public_url or api_key: setWebhook skipped", { desk = data.desk })
    return
  end
  outbox.send{
    target = "desk:" .. data.desk, lane = "desk:" .. data.desk .. ":setup",
    url = url(inst, "setWebhook"),
    body = { url = inst.public_url:gsub("/+$", "") .. "/v1/providers/" .. data.desk .. "/operatorapi/" .. api_key(inst) },
  }
end

local function employee_of(e)
  if type(e) ~= "table" then return {} end
  local first = type(e.firstName) == "string" and e.firstName or nil
  local last = type(e.lastName) == "string" and e.lastName or nil
  local name = first and (last and first .. " " .. last or first) or last
  return { id = routing.id_of(e.employeeId), name = name }
end

function operator_api.webhook(req)
  local name = req.params.instance
  local inst = desks.instance(name)
  if not inst or inst.type ~= "operator_api" then
    http_error(404, "unknown_desk", "no operator_api desk named " .. name)
  end
  if not api_key(inst) or not secure_equal(req.params.key, api_key(inst)) then
    http_error(401, "unauthorized", "wrong api key")
  end
  local ev = req:json()
  if type(ev) ~= "table" or type(ev.type) ~= "string" then
    http_error(422, "invalid_field", "type is required")
  end
  local user = routing.id_of(ev.userId)
  local conv = user and conversations.get(user)
  if not conv then http_error(404, "not_found", "no conversation for userId") end
  local event_id = routing.id_of(ev.id)
  local dedupe = event_id and ("operator_api:" .. name .. ":" .. event_id) or nil
  -- A repeated event id is answered but not applied again. Messages are
  -- deduplicated with the message store's key; other events here.
  if dedupe and ev.type ~= "TextMessage" and ev.type ~= "FileMessage" then
    if state.get(dedupe) then return 200, { ok = true, duplicate = true } end
    state.set(dedupe, true, 86400)
  end

  if ev.type == "TextMessage" then
    if type(ev.text) ~= "string" or utf8.len(ev.text) == nil then
      http_error(422, "invalid_field", "text must be a UTF-8 string")
    end
    desks.agent_message(conv, { text = ev.text, employee = employee_of(ev.employee), dedupe_key = dedupe })
  elseif ev.type == "FileMessage" then
    if type(ev.url) ~= "string" then http_error(422, "invalid_field", "url must be a string") end
    desks.agent_message(conv, {
      text = type(ev.comment) == "string" and ev.comment or "",
      attachments = { { url = ev.url, name = type(ev.name) == "string" and ev.name or nil } },
      employee = employee_of(ev.employee), dedupe_key = dedupe,
    })
  elseif ev.type == "Closed" then
    desks.agent_closed(conv)
  elseif ev.type == "SelectDestination" then
    local d = type(ev.destination) == "table" and routing.id_of(ev.destination.destinationId)
    if not d then http_error(422, "invalid_field", "destination.destinationId is required") end
    desks.group_changed(conv, d)
  else
    conv:journal("desk_event_ignored", { desk = name, type = ev.type })
  end
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
