-- The integrator's kit for platform webhooks (docs/lua-api.md, "inbound";
-- docs/writing-an-adapter.md). One declaration per endpoint:
--
--   inbound.endpoint{ method =, path = ".../{instance}/...", registry = channels | desks, type =,
--                     auth =, schema =, event_id =, on_duplicate =, handler = }
--
-- and every request goes through the same steps before the handler sees
-- it: the credential (one 401 for every way of being wrong, before anything
-- is parsed, read or written), the JSON body (400), its schema (422 naming
-- the path), the event id (a repeat is answered without running the
-- handler). inbound.register_at_load tells a platform where our webhook is,
-- at every load, retried until it takes it.
local channels = require("channels")
local S = require("schema")
local inbound = { registrations = {} }

local HMAC_ALGORITHMS = { sha1 = true, sha256 = true, sha512 = true }
local HMAC_ENCODINGS = { hex = true, base64 = true }
local DUPLICATE = { 200, { ok = true, duplicate = true } }

local function dedupe_window()
  return (config.conversations and config.conversations.dedupe_window) or 86400
end

-- The instance's secret named by `spec` (a key of the instance config or a
-- function of it), or nil: an unknown instance and one without the secret
-- are refused alike.
local function secret_of(inst, spec)
  if not inst then return nil end
  local s
  if type(spec) == "function" then s = spec(inst) else s = inst[spec] end
  if type(s) ~= "string" or s == "" then return nil end
  return s
end

-- The one refusal (channels.authenticate): the same answer after a
-- comparison of the same cost for an unknown instance and a wrong secret.
local authenticate, STAND_IN = channels.authenticate, channels.STAND_IN

-- Each kind of auth: a function(req, inst) that returns or raises 401.
local AUTH = {}

function AUTH.bearer(a)
  return function(req, inst)
    authenticate(channels.bearer(req), secret_of(inst, a.bearer), a.what or "bearer token")
  end
end

function AUTH.header(a)
  local header = a.header:lower()
  return function(req, inst)
    authenticate(req.headers[header], secret_of(inst, a.secret), a.what or a.header)
  end
end

function AUTH.path(a)
  return function(req, inst)
    authenticate(req.params[a.path], secret_of(inst, a.secret), a.what or "key in the path")
  end
end

-- header: a name, or a function of the instance config (platforms whose
-- header names are the integrator's to set); message(req, inst): what is
-- signed (default the raw body); key(secret): the key, or keys(secret): a
-- list of keys any of which may have signed (a key being rotated, a
-- platform that does not say how it derives its key); enabled(inst): false
-- skips this check for that instance (a signature the integrator turns
-- on). Every key costs one HMAC, whichever matches.
function AUTH.hmac(a)
  local h = a.hmac
  local alg, enc, prefix = h.algorithm or "sha256", h.encoding or "hex", h.prefix or ""
  local what = a.what or ((type(h.header) == "string" and h.header .. " " or "") .. "signature")
  return function(req, inst)
    if h.enabled and inst and not h.enabled(inst) then return end
    local secret = secret_of(inst, h.secret)
    local base = secret or STAND_IN
    local keys = h.keys and h.keys(base) or { h.key and h.key(base) or base }
    local signed = h.message and h.message(req, inst or {}) or req.body
    local header = h.header
    if type(header) == "function" then header = inst and header(inst) or "x-signature" end
    local given = req.headers[header:lower()]
    if type(given) ~= "string" then given = "" end
    if enc == "hex" and given:sub(1, #prefix) == prefix then
      given = prefix .. given:sub(#prefix + 1):lower()   -- hex digits in either case
    end
    local ok = false
    for _, key in ipairs(keys) do
      if secure_equal(given, prefix .. crypto.hmac(alg, key, signed, enc)) then ok = true end
    end
    authenticate(ok and "match" or "", "match", what, secret ~= nil)
  end
end

-- Several checks that must all pass, in order (a secret in the path, then a signature).
local function all_of(checks)
  return function(req, inst)
    for _, check in ipairs(checks) do check(req, inst) end
  end
end

local check_auth
function check_auth(a)
  if type(a) ~= "table" then return nil, "auth must be a table (bearer, header, path or hmac)" end
  if a[1] ~= nil then
    -- one refusal for all: which check failed would tell a caller that
    -- got the path secret right that it did
    local checks, whats = {}, {}
    for i, one in ipairs(a) do
      if type(one) ~= "table" then return nil, "auth[" .. i .. "] must be a table" end
      whats[i] = one.what or (one.bearer and "bearer token") or (one.path and "key in the path")
                 or (one.hmac and "signature") or one.header
    end
    local what = a.what or table.concat(whats, " or ")
    for i, one in ipairs(a) do
      local copy = {}
      for k, v in pairs(one) do copy[k] = v end
      copy.what = what
      local check, why = check_auth(copy)
      if not check then return nil, "auth[" .. i .. "]: " .. why end
      checks[i] = check
    end
    return all_of(checks)
  end
  local kind
  for k in pairs(AUTH) do
    if a[k] ~= nil then
      if kind then return nil, "auth: give one of bearer, header, path, hmac, not " .. kind .. " and " .. k end
      kind = k
    end
  end
  if not kind then return nil, "auth needs one of bearer, header, path, hmac" end
  local secret = kind == "bearer" and a.bearer or kind == "hmac" and type(a.hmac) == "table" and a.hmac.secret
                 or a.secret
  if type(secret) ~= "string" and type(secret) ~= "function" then
    return nil, "auth: the secret must name a key of the instance config (or be a function of it)"
  end
  if kind == "header" and type(a.header) ~= "string" then return nil, "auth.header must be a header name" end
  if kind == "path" and type(a.path) ~= "string" then return nil, "auth.path must name a {parameter} of the path" end
  if kind == "hmac" then
    local h = a.hmac
    if type(h.header) ~= "string" and type(h.header) ~= "function" then
      return nil, "auth.hmac.header must be a header name or a function of the instance config"
    end
    for _, f in ipairs({ "message", "key", "keys", "enabled" }) do
      if h[f] ~= nil and type(h[f]) ~= "function" then return nil, "auth.hmac." .. f .. " must be a function" end
    end
    if h.algorithm and not HMAC_ALGORITHMS[h.algorithm] then return nil, "auth.hmac.algorithm: sha1, sha256 or sha512" end
    if h.encoding and not HMAC_ENCODINGS[h.encoding] then return nil, "auth.hmac.encoding: hex or base64" end
  end
  return AUTH[kind](a)
end

-- "a.b.c" -> a function of the checked body that walks that path.
local function path_getter(path)
  return function(body) return S.at(body, path) end
end

local function event_key(ep, name, id)
  if math.type(id) == "integer" then id = string.format("%d", id) end
  if type(id) ~= "string" or id == "" then
    error("inbound " .. ep.label .. ": event_id must give a string or an integer, got " .. type(id), 0)
  end
  local key = "inbound:" .. ep.registry.key .. ":" .. name .. ":" .. id
  if #key > 512 then key = "inbound:" .. crypto.sha256(key) end   -- state keys are at most 512 bytes
  return id, key
end

local function serve(ep, req)
  local name = req.params.instance
  local inst = ep.registry.instance(name)
  if type(inst) ~= "table" or inst.type ~= ep.type then inst = nil end
  ep.auth(req, inst)

  local body
  if ep.schema then
    body = req:json()
    if S.is_null(body) then
      local status, code = S.error_for(ep.schema, "type")
      http_error(status, code, "the body must be " .. ep.schema.what)
    end
    body = S.check(ep.schema, body, "the body")
  end
  local ctx = { req = req, body = body, name = name, inst = inst }
  local key
  if ep.event_id then
    local id = ep.event_id(body, req)
    if id ~= nil then
      ctx.event_id, key = event_key(ep, name, id)
      if state.get(key) ~= nil then
        if type(ep.on_duplicate) == "function" then return ep.on_duplicate(ctx) end
        return ep.on_duplicate[1], ep.on_duplicate[2], ep.on_duplicate[3]
      end
    end
  end
  local handler = ep.handler
  if type(handler) == "string" then
    -- looked up at each request, so it may be defined after the endpoint
    -- (the loader checks it resolves when the load ends: route()'s `calls`)
    handler = resolve_handler(handler)
    if type(handler) ~= "function" then
      error("inbound " .. ep.label .. ": handler '" .. ep.handler .. "' is not a function", 0)
    end
  end
  local status, out, headers = handler(ctx)
  -- the key commits with the handler's own writes: a handler that failed
  -- leaves none, and the platform's retry runs it again
  if key and type(status) == "number" and status < 300 then state.set(key, true, dedupe_window()) end
  return status, out, headers
end

-- inbound.endpoint{...}: declares the route (at load time, like route()).
function inbound.endpoint(spec)
  local function bad(what) error("inbound.endpoint: " .. what, 3) end
  if type(spec) ~= "table" then bad("takes a table") end
  if type(spec.method) ~= "string" or type(spec.path) ~= "string" then bad("method and path are required") end
  if not spec.path:find("{instance}", 1, true) then bad("the path must have an {instance} segment") end
  local r = spec.registry
  if type(r) ~= "table" or type(r.instance) ~= "function" or type(r.key) ~= "string" then
    bad("registry must be channels or desks (require(\"channels\"), require(\"desks\"))")
  end
  if type(spec.type) ~= "string" then bad("type (the adapter's type in the instance config) is required") end
  local auth, why = check_auth(spec.auth)
  if not auth then bad(why) end
  if spec.schema ~= nil and not S.is_schema(spec.schema) then bad("schema must be built with require(\"schema\")") end
  local event_id = spec.event_id
  if type(event_id) == "string" then event_id = path_getter(event_id)
  elseif event_id ~= nil and type(event_id) ~= "function" then bad("event_id must be a path in the body or a function") end
  local on_duplicate = spec.on_duplicate or DUPLICATE
  if type(on_duplicate) ~= "function" and (type(on_duplicate) ~= "table" or math.type(on_duplicate[1]) ~= "integer") then
    bad("on_duplicate must be { status, body [, headers] } or a function(ctx)")
  end
  if type(spec.handler) ~= "function" and type(spec.handler) ~= "string" then
    bad("handler must be a function or a handler name")
  end
  local ep = {
    label = spec.method .. " " .. spec.path, registry = r, type = spec.type, auth = auth, schema = spec.schema,
    event_id = event_id, on_duplicate = on_duplicate, handler = spec.handler,
  }
  -- level 2: the route is named after, and a bad one reported at, the adapter's line
  -- a handler given by name must resolve when the load ends, as a route's does
  route(spec.method, spec.path, function(req) return serve(ep, req) end, 2,
        type(spec.handler) == "string" and spec.handler or nil)
end

-- ---------------------------------------------------------------- registering our webhook

-- The instance's public_url (how the platform reaches us) without a
-- trailing slash, or nil and why. With https_ports (a list), only an
-- https:// URL on one of those ports will do.
function inbound.public_url(inst, https_ports)
  local u = inst.public_url
  if type(u) ~= "string" or not S.http_url(u) then return nil, "public_url (how the platform reaches us) is not set" end
  u = u:gsub("/+$", "")
  if https_ports then
    local host = u:match("^[Hh][Tt][Tt][Pp][Ss]://([^/?#]+)")
    local port = host and math.tointeger(tonumber(host:match(":(%d+)$") or "443"))
    for _, p in ipairs(https_ports) do
      if p == port then return u end
    end
    return nil, "public_url must be https:// on port " .. table.concat(https_ports, ", ")
  end
  return u
end

local function retry_delay(attempt) return math.min(300, 2 ^ (attempt - 1)) end

local function accept_2xx(status) return status >= 200 and status < 300 end

-- One attempt of registration `spec` for an instance; on failure the next
-- one is a timer (1, 2, 4 ... 300 s), which survives reloads and restarts.
-- The call itself is never stored: it usually carries a secret.
local function register(spec, data)
  local name = data.instance
  local inst = spec.registry.instance(name)
  if type(inst) ~= "table" or inst.type ~= spec.type then return end   -- gone since
  local fields = { registration = spec.name, instance = name }
  local base, why = inbound.public_url(inst, spec.https_ports)
  local call
  if base then call, why = spec.request(name, inst, base) end
  if not call then
    fields.reason = tostring(why)
    log.warn("registration skipped", fields)
    return
  end
  local headers, body = call.headers or {}, call.body
  if type(body) == "table" then
    body = json.encode(body)
    if not headers["Content-Type"] then headers["Content-Type"] = "application/json" end
  end
  local status, rheaders, rbody = http.request{
    method = call.method or "POST", url = call.url, headers = headers, body = body, timeout = call.timeout or 10,
  }
  local ok, problem
  if status then
    ok, problem = (spec.accept or accept_2xx)(status, rheaders, rbody)
  else
    problem = rheaders        -- no answer: libcurl's message (never the URL)
  end
  if ok then
    log.info("registration done", fields)
    return
  end
  local attempt = (data.attempt or 0) + 1
  fields.status, fields.error, fields.retry_in = status and tostring(status) or "none", problem, retry_delay(attempt)
  log.warn("registration failed: trying again", fields)
  timer.after(retry_delay(attempt), "inbound.registrations." .. spec.name, { instance = name, attempt = attempt })
end

-- inbound.register_at_load{ name =, registry =, type =, request = function(name, inst, public_url),
--                          accept =, https_ports = }:
-- at every load, for every instance of that type with a public_url (see
-- inbound.public_url), request returns the call ({ method, url, headers,
-- body (a table is sent as JSON), timeout }) or nil and why it is skipped;
-- accept(status, headers, body) says whether the platform took it (default:
-- any 2xx), or false and why. Returns the function of one attempt, given
-- { instance =, attempt = }.
function inbound.register_at_load(spec)
  local function bad(what) error("inbound.register_at_load: " .. what, 3) end
  if type(spec) ~= "table" then bad("takes a table") end
  if type(spec.name) ~= "string" or not spec.name:match("^[%a_][%w_]*$") then
    bad("name must be letters, digits and _ (it names the retry timers' handler)")
  end
  if inbound.registrations[spec.name] then bad("the name " .. spec.name .. " is taken") end
  local r = spec.registry
  if type(r) ~= "table" or type(r.instance) ~= "function" or type(r.key) ~= "string" then
    bad("registry must be channels or desks")
  end
  if type(spec.type) ~= "string" or type(spec.request) ~= "function" then bad("type and request are required") end
  if spec.accept ~= nil and type(spec.accept) ~= "function" then bad("accept must be a function") end
  if spec.https_ports ~= nil and type(spec.https_ports) ~= "table" then bad("https_ports must be a list of ports") end
  local function attempt(data) register(spec, data) end
  inbound.registrations[spec.name] = attempt
  for name, inst in pairs(config[r.key] or {}) do
    if type(inst) == "table" and inst.type == spec.type then
      timer.after(0, "inbound.registrations." .. spec.name, { instance = name })
    end
  end
  return attempt
end

return inbound
