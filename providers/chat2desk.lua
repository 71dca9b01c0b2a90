-- Chat2Desk as a desk (docs/providers/chat2desk.md): a bot's switch makes
-- the client a Chat2Desk client on an external channel, injects the history
-- and the client's messages as inbound messages and transfers the dialog to
-- an operator group; operators' messages, closes, transfers and statuses
-- come back by webhook at POST /v1/providers/{instance}/chat2desk/{secret}.
--
-- Every call to Chat2Desk for a conversation is an outbox job (chat2desk.run)
-- on the conversation's desk lane: the calls of one conversation run in
-- order, each after the one before it succeeded (an inbox call needs the
-- client the call before made; the transfer needs the last message's id),
-- are retried with the outbox's backoff, and end as dead letters naming
-- Chat2Desk's own words.
local channels = require("channels")
local desks = require("desks")
local inbound = require("inbound")
local S = require("schema")
local chat2desk = {}

-- Destination rule 3 without a transfer: the dialog stays with whoever
-- Chat2Desk gives new dialogs to (the account's administrator).
chat2desk.default_recipient = "administrator"
local ADMIN = chat2desk.default_recipient

local PAGE = 200          -- Chat2Desk's largest page
local MAX_PAGES = 20      -- 4000 operators or groups: beyond that an account is not read whole

local function api_base(inst) return ((inst.api_url or "https://api.chat2desk.com"):gsub("/+$", "")) end
local function ttl(inst, key, default) return tonumber(inst[key]) or default end
local function key(name, ...) return "chat2desk:" .. name .. ":" .. table.concat({ ... }, ":") end
local function as_number(id) return math.tointeger(tonumber(id)) or id end

-- ------------------------------------------------------------------ calls

local Envelope = S.object({
  status = S.string{}, message = S.string{}, errors = S.any{}, data = S.any{},
  meta = S.object{ total = S.integer{ min = 0 } },
}, { lenient = true })

-- Chat2Desk's error text: `message` and `errors`, which is a string or an
-- object of lists of strings.
local function error_text(env, raw)
  local parts = {}
  if env.message then parts[#parts + 1] = env.message end
  local e = env.errors
  if type(e) == "string" then
    parts[#parts + 1] = e
  elseif type(e) == "table" then
    local fields = {}
    for field in pairs(e) do fields[#fields + 1] = tostring(field) end
    table.sort(fields)
    for _, field in ipairs(fields) do
      local v = e[field]
      if type(v) == "table" then
        local texts = {}
        for _, t in ipairs(v) do if type(t) == "string" then texts[#texts + 1] = t end end
        v = table.concat(texts, "; ")
      end
      if type(v) == "string" and v ~= "" then
        parts[#parts + 1] = (math.type(tonumber(field)) and "" or field .. ": ") .. v
      end
    end
  end
  if #parts == 0 then
    local text = type(raw) == "string" and channels.utf8_prefix(raw, 200) or ""
    return utf8.len(text) and text:gsub("%c", " ") or "an answer that is not Chat2Desk's"
  end
  return table.concat(parts, ": ")
end

-- What kind of failure: for the log, the metric and the advice.
local TOKEN_TEXTS = { "Token is not correct", "You need to auth", "You have to specify your token" }
local QUOTA_TEXTS = { "Number of API requests exceeded", "API calls exceeded" }
local function kind_of(status, text)
  for _, t in ipairs(TOKEN_TEXTS) do if text:find(t, 1, true) then return "token" end end
  for _, t in ipairs(QUOTA_TEXTS) do if text:find(t, 1, true) then return "quota" end end
  if status == 429 or status >= 500 then return "server" end
  return "refused"
end

local ADVICE = {
  token = "Chat2Desk refused the API token: check api_token (Settings -> API in Chat2Desk)",
  quota = "Chat2Desk's API quota is spent: calls fail until it is raised or the month ends",
}

local function count_error(name, kind)
  metrics.count("chat2desk_api_errors_total", { desk = name, error = kind })
end

-- One call. Returns data, meta; or nil and { kind, status, text }.
local function request(name, inst, method, path, query, body)
  local target = api_base(inst) .. path
  if query then target = target .. "?" .. url.build_query(query) end
  local headers = { Authorization = inst.api_token or "" }
  if body then headers["Content-Type"] = "application/json" end
  local status, rheaders, raw = http.request{
    method = method, url = target, headers = headers, body = body and json.encode(body),
    timeout = ttl(inst, "request_timeout", 10),
  }
  if not status then return nil, { kind = "network", text = "no answer: " .. tostring(rheaders) } end
  local env = S.decode(Envelope, raw) or {}
  if status >= 200 and status < 300 and env.status == "success" then
    if env.data == nil then return {}, env.meta end   -- a success that says no more
    return env.data, env.meta
  end
  local text = error_text(env, raw)
  return nil, { kind = kind_of(status, text), status = status, text = text }
end

local function problem_line(call, p)
  return "Chat2Desk " .. call .. ": " .. (p.status and ("HTTP " .. p.status .. ": ") or "") .. p.text
end

-- A failed call: counted, logged, and raised so the job is tried again.
local function fail(name, call, p, conversation)
  count_error(name, p.kind)
  log.error("chat2desk call failed", {
    desk = name, call = call, status = p.status and tostring(p.status) or "none", error = p.text,
    kind = p.kind, advice = ADVICE[p.kind], conversation = conversation,
  })
  error(problem_line(call, p), 0)
end

-- Every page of a list (limit/offset, meta.total).
local function list_all(name, inst, path)
  local out, offset = {}, 0
  for _ = 1, MAX_PAGES do
    local data, meta = request(name, inst, "GET", path, { limit = PAGE, offset = offset })
    if not data then return nil, meta end
    if type(data) ~= "table" then return nil, { kind = "refused", text = path .. ": data is not a list" } end
    for _, item in ipairs(data) do out[#out + 1] = item end
    offset = offset + PAGE
    local total = meta and meta.total or #out
    if #data < PAGE or offset >= total then return out end
  end
  log.warn("chat2desk list cut short", { desk = name, path = path, read = #out })
  return out
end

-- ------------------------------------------------------------------ groups, operators, availability

-- (lenient fields: a value that fails is absent; the id is required, and
-- an item without one is left out)
local Group = S.object{ id = S.id{ required = true }, name = S.string{ max = 256, lenient = true },
                        operator_ids = S.array(S.id{}, { max = 10000, lenient = true }) }
local Operator = S.object{ id = S.id{ required = true }, first_name = S.string{ max = 256, lenient = true },
                           last_name = S.string{ max = 256, lenient = true }, email = S.string{ max = 256, lenient = true },
                           online = S.any{} }

-- Groups, operators' online flags and names are kept in this runtime's
-- memory for a short while (a reload starts afresh): asking Chat2Desk at
-- every switch would spend the account's API quota, and writing them to
-- the store would cost a write per refresh.
local memory = {}
local function forget(name, what) memory[name .. "\0" .. what] = nil end
local function remembered(name, what)
  local m = memory[name .. "\0" .. what]
  if m and m.expires > now() then return m.value end
  return nil
end
local function keep(name, what, value, seconds)
  if seconds > 0 then memory[name .. "\0" .. what] = { value = value, expires = now() + seconds } end
end

local function cached(name, what, seconds, fetch)
  local v = remembered(name, what)
  if v ~= nil then return v end
  local fresh, problem = fetch()
  if fresh == nil then return nil, problem end
  keep(name, what, fresh, seconds)
  return fresh
end

local function full_name(o)
  local n = table.concat({ o.first_name or "", o.last_name or "" }, " "):gsub("^%s+", ""):gsub("%s+$", "")
  if n == "" then return o.email end
  return n
end

local function groups(name, inst)
  return cached(name, "groups", ttl(inst, "groups_ttl", 300), function()
    local raw, p = list_all(name, inst, "/v1/operators_groups")
    if not raw then return nil, p end
    local out = {}
    for _, g in ipairs(raw) do
      local ok = S.validate(Group, g)
      if ok then out[#out + 1] = { id = ok.id, name = ok.name, operators = ok.operator_ids or json.array() } end
    end
    return out
  end)
end

-- Operators' online flags (briefly cached: availability) and names (kept longer: authors of messages).
local function operators(name, inst)
  return cached(name, "operators", ttl(inst, "availability_ttl", 10), function()
    local raw, p = list_all(name, inst, "/v1/operators")
    if not raw then return nil, p end
    local out, names = {}, {}
    for _, o in ipairs(raw) do
      local ok = S.validate(Operator, o)
      if ok then
        local online = ok.online == 1 or ok.online == true or ok.online == "1"
        out[#out + 1] = { id = ok.id, online = online }
        names[ok.id] = full_name(ok)
      end
    end
    keep(name, "names", names, ttl(inst, "names_ttl", 3600))
    return out
  end)
end

-- The operator's "first last" name, or nil when Chat2Desk does not say.
local function operator_name(name, inst, id)
  if not id then return nil end
  local names = remembered(name, "names")
  if names and names[id] then return names[id] end
  -- an operator we have not seen: read the list again, at most once a minute
  if remembered(name, "names_read") then return nil end
  keep(name, "names_read", true, 60)
  forget(name, "operators")
  if not operators(name, inst) then return nil end
  names = remembered(name, "names")
  return names and names[id]
end

-- The groups by id and by name ({id, name, online}); ADMIN is online when
-- any operator is.
function chat2desk.destinations(name, inst)
  local gs, p = groups(name, inst)
  if not gs then return nil, problem_line("operators_groups", p) end
  local ops, p2 = operators(name, inst)
  if not ops then return nil, problem_line("operators", p2) end
  local online, anyone = {}, false
  for _, o in ipairs(ops) do
    if o.online then online[o.id], anyone = true, true end
  end
  local out = {}
  for _, g in ipairs(gs) do
    local on = false
    for _, id in ipairs(g.operators) do
      if online[id] then on = true break end
    end
    local d = { id = g.id, name = g.name or g.id, online = on }
    out[g.id] = d
    if g.name and out[g.name] == nil then out[g.name] = d end
  end
  if out[ADMIN] == nil then out[ADMIN] = { id = ADMIN, name = "the account's administrator", online = anyone } end
  return out
end

-- ------------------------------------------------------------------ the conversation's calls

local function mapping_ttl(inst) return ttl(inst, "mapping_ttl", 90 * 86400) end

-- Our conversation <-> Chat2Desk's client, dialog and request.
local function mapping(name, conversation) return state.get(key(name, "conv", conversation)) or {} end
local function remember(name, inst, conversation, map, links)
  state.set(key(name, "conv", conversation), map, mapping_ttl(inst))
  for what, id in pairs(links) do
    state.set(key(name, what, id), conversation, mapping_ttl(inst))
  end
end
local function conversation_of(name, what, id)
  return id and state.get(key(name, what, id)) or nil
end

local function identity(inst, conversation, d)
  local template = inst.client_identity or "switchboard:{conversation}"
  local values = { conversation = conversation, channel = d.channel or "", client_id = d.client_id or "" }
  return (template:gsub("{(%w+)}", function(k) return values[k] or "" end))
end

local Client = S.object{ id = S.id{ required = true } }
local Injected = S.object({ message_id = S.id{}, dialog_id = S.id{}, request_id = S.id{} }, { lenient = true })

local OPS = {}

-- The client exists in Chat2Desk: found by its identity (a retry after a
-- create whose answer was lost finds it), else created.
function OPS.client(name, inst, d, map)
  if map.client_id then return end
  local phone = identity(inst, d.conversation, d)
  local found, p = request(name, inst, "GET", "/v1/clients", { phone = phone })
  if found == nil then fail(name, "clients", p, d.conversation) end
  local client = type(found) == "table" and S.validate(Client, found[1] or {})
  if not client then
    local created, p2 = request(name, inst, "POST", "/v1/clients", nil, {
      phone = phone, transport = inst.transport or "external", channel_id = as_number(inst.channel_id),
      nickname = d.nickname,
    })
    if created == nil then fail(name, "create client", p2, d.conversation) end
    client = S.validate(Client, created)
    if not client then fail(name, "create client", { kind = "refused", text = "the answer has no client id" }, d.conversation) end
  end
  map.client_id = client.id
  remember(name, inst, d.conversation, map, { client = client.id })
end

function OPS.inbox(name, inst, d, map)
  -- the client call before it may have died: each inbox makes sure
  OPS.client(name, inst, d, map)
  local body = { client_id = as_number(map.client_id), text = d.text or "", channel_id = as_number(inst.channel_id),
                 transport = inst.transport or "external" }
  if inst.send_external_id ~= false then body.external_id = d.external_id end
  if d.attachment then body.attachment, body.attachment_filename = d.attachment, d.filename end
  if d.custom_fields then body.custom_fields = d.custom_fields end
  local data, p = request(name, inst, "POST", "/v1/messages/inbox", nil, body)
  if data == nil then fail(name, "inbox", p, d.conversation) end
  local r = S.validate(Injected, data) or {}
  local links = {}
  map.last_message_id = r.message_id or map.last_message_id
  if r.dialog_id then map.dialog_id, links.dialog = r.dialog_id, r.dialog_id end
  if r.request_id then map.request_id, links.request = r.request_id, r.request_id end
  remember(name, inst, d.conversation, map, links)
end

function OPS.transfer(name, inst, d, map)
  if not map.last_message_id then
    fail(name, "transfer_to_group", { kind = "refused", text = "no message of this conversation to transfer" },
         d.conversation)
  end
  local data, p = request(name, inst, "GET", "/v1/messages/" .. url.encode(map.last_message_id) .. "/transfer_to_group",
                          { group_id = d.group, force_assign = inst.force_assign == true })
  if data == nil then fail(name, "transfer_to_group", p, d.conversation) end
  map.group = d.group
  remember(name, inst, d.conversation, map, {})
end

function OPS.close(name, inst, d, map)
  if not map.dialog_id then
    log.warn("chat2desk: no dialog to close", { desk = name, conversation = d.conversation })
    return
  end
  local data, p = request(name, inst, "PUT", "/v1/dialogs/" .. url.encode(map.dialog_id), nil, { state = "closed" })
  if data == nil and not p.text:find("already has state", 1, true) then fail(name, "close dialog", p, d.conversation) end
end

-- The outbox job: one call of a conversation, d = { desk, conversation, op, ... }.
function chat2desk.run(d)
  local inst = desks.instance(d.desk)
  if type(inst) ~= "table" or inst.type ~= "chat2desk" then
    log.warn("chat2desk call dropped: the desk is no longer configured", { desk = d.desk, call = d.op })
    return
  end
  local op = OPS[d.op]
  if not op then error("chat2desk: unknown call " .. tostring(d.op), 0) end
  op(d.desk, inst, d, mapping(d.desk, d.conversation))
end

-- Every call carries who the client is: a call whose client call died
-- makes the client itself.
local function queue(name, conv, op, fields)
  local p = conv.client
  fields.desk, fields.conversation, fields.op = name, conv.id, op
  fields.nickname = type(p.name) == "string" and p.name ~= "" and p.name or conv.channel .. " " .. conv.client_id
  fields.channel, fields.client_id = conv.channel, conv.client_id
  outbox.call{ conversation = conv, target = "chat2desk.run", lane = conv.id .. "|desk:" .. name, data = fields }
end

function chat2desk.open(name, inst, conv, group, opts)
  queue(name, conv, "client", {})
  local labels, texts = inst.history_labels or {}, {}
  -- the switch's attributes are for the agent: one message before the history
  local attributes = {}
  for k, v in pairs(opts.attributes or {}) do
    attributes[#attributes + 1] = tostring(k) .. ": " .. (type(v) == "table" and json.encode(v) or tostring(v))
  end
  if #attributes > 0 then
    table.sort(attributes)
    texts[1] = (labels.attributes or "Attributes") .. ":\n" .. table.concat(attributes, "\n")
  end
  for _, h in ipairs(opts.history or {}) do
    local label = h.author == "bot" and (labels.bot or "Bot") or (labels.client or "Client")
    texts[#texts + 1] = label .. ": " .. h.text
  end
  if opts.first_message and opts.first_message ~= "" then texts[#texts + 1] = opts.first_message end
  -- the transfer needs a message of the client's: say something when the switch did not
  if #texts == 0 then texts[1] = inst.handoff_text or "The client was handed over by the bot." end
  local switch_no = conv.last_seq
  -- hiddenAttributes and customData are for the platform, not the agent:
  -- the client's custom_fields, when the instance says Chat2Desk takes them
  local custom
  if inst.send_custom_fields == true then
    custom = {}
    for k, v in pairs(opts.custom_data or {}) do custom[k] = v end
    for k, v in pairs(opts.hidden_attributes or {}) do custom[k] = v end
    if next(custom) == nil then custom = nil end
  end
  for i, text in ipairs(texts) do
    queue(name, conv, "inbox", { text = text, external_id = conv.id .. ":switch:" .. switch_no .. ":" .. i,
                                 custom_fields = i == 1 and custom or nil })
  end
  if group and group ~= ADMIN then queue(name, conv, "transfer", { group = group }) end
end

function chat2desk.send_client_message(name, inst, conv, m)
  if m.text and m.text ~= "" then queue(name, conv, "inbox", { text = m.text, external_id = m.id }) end
  for i, a in ipairs(m.attachments or {}) do
    queue(name, conv, "inbox", { text = "", attachment = a.url, filename = a.name or a.url:match("[^/?#]+$") or "file",
                                 external_id = m.id .. ":" .. i })
  end
end

function chat2desk.close(name, inst, conv)
  queue(name, conv, "close", {})
end

-- ------------------------------------------------------------------ webhooks

-- Chat2Desk repeats a refused event and turns the webhook off after 5 h of
-- refusals: all but hook_type is lenient (a value that fails is absent).
local L = { lenient = true }
local Event = S.object{
  hook_type = S.string{ required = true, max = 64, nonempty = true },
  type = S.string{ max = 64, lenient = true },
  message_id = S.id(L), request_id = S.id(L), dialog_id = S.id(L), client_id = S.id(L),
  operator_id = S.id(L), id = S.id(L), group_id = S.id(L), operator_group_id = S.id(L),
  text = S.text(L), event_time = S.string{ max = 64, lenient = true },
  online = S.any(L), offline_type = S.string{ max = 64, lenient = true },
  attachments = S.array(S.object{ name = S.string{ max = 256 }, link = S.url{} }, { max = 20, lenient = true }),
}

local function ignored(why) return 200, { ok = true, ignored = true, reason = why } end
local NOT_OURS = "not a live chat handed over to this desk"

local function forwarded(inst, kind)
  local f = type(inst.forward) == "table" and inst.forward or {}
  if kind == "autoreply" then return f.autoreply ~= false end
  if kind == "system" then return f.system == true end
  return false
end

local HOOKS = {}

-- An operator's message to the client (to_client), or Chat2Desk's own
-- (autoreply, system) when the instance forwards those.
function HOOKS.outbox(name, inst, e)
  local conversation = conversation_of(name, "client", e.client_id) or conversation_of(name, "dialog", e.dialog_id)
  if not conversation then return ignored(NOT_OURS) end
  local kind = e.type or "to_client"
  local attachments
  for _, a in ipairs(e.attachments or {}) do
    if a.link then
      attachments = attachments or {}
      attachments[#attachments + 1] = { url = a.link, name = a.name }
    end
  end
  if (e.text or "") == "" and not attachments then return ignored("no text") end
  local event_id = e.message_id and "outbox:" .. e.message_id
  if kind == "to_client" then
    -- the name first: reading the operators may wait on Chat2Desk, and
    -- the conversation is held from desks.live_chat on
    local agent = operator_name(name, inst, e.operator_id)
    if not desks.live_chat(name, conversation) then return ignored(NOT_OURS) end
    local m = desks.agent_message(name, conversation, {
      text = e.text or "", attachments = attachments, event_id = event_id,
      employee = { id = e.operator_id, name = agent },
    })
    return 200, { ok = true, duplicate = m.duplicate }
  end
  if not forwarded(inst, kind) then return ignored(kind .. " messages are not forwarded") end
  local conv = desks.live_chat(name, conversation)
  if not conv then return ignored(NOT_OURS) end
  local m = conv:append{ author = { kind = "system" }, text = e.text or "", attachments = attachments,
                         dedupe_key = event_id and ("desk:" .. name .. ":" .. event_id) }
  if not m.duplicate then channels.send(conv, m) end
  return 200, { ok = true, duplicate = m.duplicate }
end

local function closed(name, conversation, event_id)
  -- a repeat of a close we applied is a duplicate, also once the chat is over
  if desks.seen_event(name, conversation, event_id) then return 200, { ok = true, duplicate = true } end
  if not conversation or not desks.live_chat(name, conversation) then return ignored(NOT_OURS) end
  local r = desks.agent_closed(name, conversation, { event_id = event_id })
  return 200, { ok = true, duplicate = r.duplicate }
end

function HOOKS.close_request(name, _, e)
  return closed(name, conversation_of(name, "request", e.request_id),
                e.request_id and "close_request:" .. e.request_id)
end

function HOOKS.close_dialog(name, _, e)
  return closed(name, conversation_of(name, "dialog", e.dialog_id),
                e.dialog_id and "close_dialog:" .. e.dialog_id .. ":" .. (e.event_time or ""))
end

function HOOKS.dialog_transferred(name, inst, e)
  local conversation = conversation_of(name, "dialog", e.dialog_id) or conversation_of(name, "client", e.client_id)
  if not conversation then return ignored(NOT_OURS) end
  local agent = operator_name(name, inst, e.operator_id)
  local conv = desks.live_chat(name, conversation)
  if not conv then return ignored(NOT_OURS) end
  local group = e.operator_group_id or e.group_id
  conv:journal("chat2desk_dialog_transferred", { dialog = e.dialog_id, operator = e.operator_id, agent = agent,
                                                  group = group })
  if e.operator_id then conv:set{ agent = agent or e.operator_id } end
  if group then desks.group_changed(name, conversation, group, {}) end
  return 200, { ok = true }
end

-- An operator's status: kept, published when it changed, and the next
-- availability question asks Chat2Desk again.
local function operator_status(name, _, e)
  local id = e.id or e.operator_id
  if not id then return ignored("no operator id") end
  local online = e.online == 1 or e.online == true or e.online == "1"
  local status = online and "online" or (e.offline_type or "offline")
  local k = key(name, "status", id)
  local before = state.get(k)
  state.set(k, { status = status, online = online, at = now() })
  forget(name, "operators")
  if not before or before.status ~= status then desks.agent_status(name, id, status) end
  return 200, { ok = true }
end
HOOKS.operator_status_changed = operator_status
HOOKS.operator_status_updated = operator_status

local function signature(inst) return type(inst.signature) == "table" and inst.signature or nil end
local function timestamp_header(inst) return (signature(inst) or {}).timestamp_header or "X-Timestamp" end

inbound.endpoint{
  method = "POST", path = "/v1/providers/{instance}/chat2desk/{secret}",
  registry = desks, type = "chat2desk",
  auth = {
    { path = "secret", secret = "webhook_secret", what = "webhook secret" },
    -- hex(HMAC-SHA-256(MD5(api_token), body .. timestamp)); whether the key
    -- is the MD5's hex text or its bytes is not documented: both are taken
    { hmac = { header = function(inst) return (signature(inst) or {}).header or "X-Signature" end,
               secret = "api_token", what = "signature",
               keys = function(token) return { crypto.md5(token, "hex"), crypto.md5(token, "raw") } end,
               message = function(req, inst) return req.body .. (req.headers[timestamp_header(inst):lower()] or "") end,
               enabled = function(inst) return signature(inst) ~= nil end } },
  },
  schema = Event,
  -- statuses and transfers carry no id of their own; messages and closes
  -- are deduplicated per conversation (desks.lua)
  event_id = function(e)
    if e.hook_type:match("^operator_status") and (e.id or e.operator_id) then
      return e.hook_type .. ":" .. (e.id or e.operator_id) .. ":" .. (e.event_time or "") .. ":" .. tostring(e.online)
    elseif e.hook_type == "dialog_transferred" and e.dialog_id then
      return "dialog_transferred:" .. e.dialog_id .. ":" .. (e.operator_id or "") .. ":" .. (e.event_time or "")
    end
  end,
  handler = function(ctx)
    local sig, inst = signature(ctx.inst), ctx.inst
    if sig and tonumber(sig.max_age) then
      local ts = tonumber(ctx.req.headers[timestamp_header(inst):lower()])
      if not ts or math.abs(now() - ts) > tonumber(sig.max_age) then
        http_error(401, "unauthorized", "missing or wrong signature")
      end
    end
    local hook = HOOKS[ctx.body.hook_type]
    if not hook then return ignored(ctx.body.hook_type .. " events are not used") end
    return hook(ctx.name, inst, ctx.body)
  end,
}

-- A desk with signatures on but no token, or no webhook secret, takes no
-- webhook: say so at every load rather than at the first refused event.
for name, inst in pairs(config.desks or {}) do
  if type(inst) == "table" and inst.type == "chat2desk" then
    if type(inst.api_token) ~= "string" or inst.api_token == "" then
      log.warn("chat2desk desk has no api_token: every call to Chat2Desk fails", { desk = name })
    end
    if type(inst.webhook_secret) ~= "string" or inst.webhook_secret == "" then
      log.warn("chat2desk desk has no webhook_secret: every webhook is refused", { desk = name })
    end
    if inst.channel_id == nil then
      log.warn("chat2desk desk has no channel_id: clients cannot be injected", { desk = name })
    end
  end
end

desks.adapters.chat2desk = chat2desk

return chat2desk
