-- JAICP Operator API desk (docs/providers/operator_api.md): any live-chat
-- server that speaks it, Tovie Agent-style platforms included. We call the
-- desk at {api_url}: setWebhook (at every load), getDestinations,
-- selectDestination, sendText, sendFile, closeChat; it posts agent events to
-- POST /v1/providers/{instance}/operatorapi/{api_key}. An event may touch
-- only a conversation in a live chat with this desk (desks.lua).
local desks = require("desks")
local inbound = require("inbound")
local S = require("schema")
local operator_api = {}
local url_encode = url.encode

-- JAICP's own names (apiUrl, apiKey) work as well as api_url, api_key.
local function api_key(inst) return inst.api_key or inst.apiKey end
local function url(inst, method) return (inst.api_url or inst.apiUrl or ""):gsub("/+$", "") .. "/" .. method end

local function post(name, inst, conv, method, body)
  outbox.send{ conversation = conv, target = "desk:" .. name, lane = conv.id .. "|desk:" .. name,
               url = url(inst, method), body = body }
end

-- getDestinations' answer is not documented: an array of {destinationId,
-- name, hasOnline} or {"destinations": [...]}, hasOnline a boolean or
-- "true"/"false", is the best-evidence guess.
local Destination = S.object({ destinationId = S.id{}, name = S.string{}, hasOnline = S.any{} }, { lenient = true })
local Destinations = S.one_of{ S.array(Destination), S.object{ destinations = S.array(Destination) } }

-- GET getDestinations (destinations_path), cached in state for availability_ttl seconds.
function operator_api.destinations(name, inst)
  local key = "operator_api:destinations:" .. name
  local cached = state.get(key)
  if cached then return cached end
  local status, err, body = http.request{ method = "GET", url = url(inst, inst.destinations_path or "getDestinations"),
                                          timeout = 5 }
  if status ~= 200 then return nil, "getDestinations: " .. tostring(status or err) end
  local list, why = S.decode(Destinations, body)
  if why then return nil, "getDestinations: not a JSON list" end
  local out = {}
  for _, d in ipairs(list and (list.destinations or list) or {}) do
    local online = d.hasOnline == true or d.hasOnline == "true" or d.hasOnline == 1
    if d.destinationId then out[d.destinationId] = { name = d.name or d.destinationId, online = online } end
  end
  local ttl = tonumber(inst.availability_ttl) or 5
  if ttl > 0 then state.set(key, out, ttl) end   -- 0: ask the desk every time
  return out
end

function operator_api.open(name, inst, conv, group, opts)
  local p = conv.client
  post(name, inst, conv, "selectDestination", {
    userId = conv.id, destinationId = group,
    userName = type(p.name) == "string" and p.name ~= "" and p.name or conv.channel .. " " .. conv.client_id,
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

-- setWebhook at every load (idempotent on the desk's side). The body holds
-- our webhook URL with the api_key in it: the kit sends it with
-- http.request, never stored, and retries it from a timer until the desk takes it.
local register = inbound.register_at_load{
  name = "operator_api_webhook", registry = desks, type = "operator_api",
  request = function(name, inst, public_url)
    if not api_key(inst) then return nil, "api_key is not set" end
    return { url = url(inst, "setWebhook"),
             body = { url = public_url .. "/v1/providers/" .. url_encode(name) .. "/operatorapi/" .. url_encode(api_key(inst)) } }
  end,
}
-- the retry timers of versions before the kit name this handler
function operator_api.register(data) register({ instance = data.desk, attempt = data.attempt }) end

local Employee = S.object{ employeeId = S.id{}, firstName = S.string{ max = 256, empty_is_nil = true },
                           lastName = S.string{ max = 256, empty_is_nil = true } }
-- Every field an event type needs, checked before anything is looked up or
-- written: the desk gets a 422 naming the field, and nothing changes.
local Event = S.object({ type = S.string{ required = true, max = 64, nonempty = true }, userId = S.id{ required = true },
                         id = S.id{} }, { by = "type", cases = {
  TextMessage = { text = S.text{ required = true, nonempty = true }, employee = Employee },
  FileMessage = { url = S.url{ required = true }, name = S.string{ max = 256, empty_is_nil = true }, comment = S.text{},
                  employee = Employee },
  SelectDestination = { destination = S.object({ destinationId = S.id{ required = true } }, { required = true }) },
} })

inbound.endpoint{
  method = "POST", path = "/v1/providers/{instance}/operatorapi/{key}",
  registry = desks, type = "operator_api", auth = { path = "key", secret = api_key, what = "api key" },
  schema = Event,
  handler = function(ctx)
    local e, name, emp = ctx.body, ctx.name, ctx.body.employee or {}
    local employee = { id = emp.employeeId, name = emp.firstName and (emp.lastName and emp.firstName .. " " .. emp.lastName
                                                                      or emp.firstName) or emp.lastName }
    -- desks.* act only on a conversation in a live chat with this desk (404 otherwise)
    local result
    if e.type == "TextMessage" or e.type == "FileMessage" then
      result = desks.agent_message(name, e.userId, {
        text = e.text or e.comment or "", attachments = e.url and { { url = e.url, name = e.name } } or nil,
        employee = employee, event_id = e.id,
      })
    elseif e.type == "Closed" then
      result = desks.agent_closed(name, e.userId, { event_id = e.id })
    elseif e.type == "SelectDestination" then
      result = desks.group_changed(name, e.userId, e.destination.destinationId, { event_id = e.id })
    else
      -- a type this adapter does not know touches nothing
      log.info("operator_api event ignored", { desk = name, type = e.type })
      return 200, { ok = true, ignored = true }
    end
    return 200, { ok = true, duplicate = result.duplicate }
  end,
}

desks.adapters.operator_api = operator_api

return operator_api
