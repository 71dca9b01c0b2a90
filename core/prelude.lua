-- Engine prelude: runs first in every runtime, before any script. It returns
-- the engine's own functions, kept in the registry where scripts cannot
-- replace them. Everything it needs from the globals is captured now.
local loaded = ...   -- the runtime's modules by name (require's cache)
local type, pairs, tostring, error, setmetatable, pcall, select, rawset, next =
      type, pairs, tostring, error, setmetatable, pcall, select, rawset, next
local gmatch, floor = string.gmatch, math.floor
local G = _G
local json_encode, json_decode = json.encode, json.decode
local http_error = http_error
local is_stream = events._is_stream
events._is_stream = nil

local engine = {}

-- Conversations. A job that gets hold of one has it to itself until the job
-- ends (docs/architecture.md): the C primitives below say where it is, and
-- these wrappers load it from the store or wait in line, both by yielding.
local conv_api = conversations
local c_lookup, c_load, c_wait, c_create = conv_api._lookup, conv_api._load, conv_api._wait, conv_api._create
conv_api._lookup, conv_api._load, conv_api._wait, conv_api._create = nil, nil, nil, nil

local function hold(a, b)
  while true do
    local conv, status = c_lookup(a, b)
    if conv then return conv end
    if status == "unloaded" then
      local found, err = c_load(a, b)
      if found == nil then error("conversations: " .. tostring(err), 3) end
      if not found then return nil end
    elseif status == "busy" then
      c_wait(a, b)
    else
      error("conversations: waiting for this conversation would deadlock"
            .. " (the job holding it waits for one this job holds)", 3)
    end
  end
end

-- conversations.get(id) -> conv | nil
function conv_api.get(id)
  if type(id) ~= "string" then error("conversations.get: id must be a string", 2) end
  if #id ~= 20 then return nil end   -- not an id the engine gives
  return hold(id)
end

-- conversations.find(channel, client_id) -> conv | nil
function conv_api.find(channel, client_id)
  return hold(channel, client_id)
end

-- conversations.find_or_create(channel, client_id [, client]) -> conv, created
function conv_api.find_or_create(channel, client_id, client)
  while true do
    local conv = hold(channel, client_id)
    if conv then return conv, false end
    conv = c_create(channel, client_id, client)
    if conv then return conv, true end
  end
end

-- The global table of code loaded after the engine's modules (engine.freeze).
local public = G

-- Handlers given as functions (route(method, path, fn)) get a name, so
-- that everything refers to handlers the same way.
local anonymous = {}
function engine.name_function(name, fn)
  anonymous[name] = fn
  return name
end

-- "name" or "a.b.c": a function looked up at call time so a reload (which
-- builds a new runtime) changes what runs. The first part is a global or,
-- failing that, a module: "telegram.on_sent" is the on_sent field of what
-- providers/telegram.lua returned.
function engine.resolve(name)
  local fn = anonymous[name]
  if fn then return fn end
  local v
  for part in gmatch(name, "[^%.]+") do
    if v == nil then
      v = public[part]
      if v == nil then v = loaded[part] end
    else
      if type(v) ~= "table" then return nil end
      v = v[part]
    end
  end
  return v
end
local resolve = engine.resolve
-- Scripts that take handler names (the adapters' kit) resolve them the
-- way jobs do: resolve_handler(name) -> the function, or nil.
G.resolve_handler = resolve

-- The frozen global environment of provider and rule files (docs/lua-api.md,
-- "Modules and the global environment"). The engine's table of globals
-- (G: the libraries, the bindings, the engine's globals, and from now on
-- every engine module by its name) stays as it is for the code loaded
-- before, so the engine reads its globals at full speed; what loads after
-- gets `public`, an empty table that reads through to G and refuses to
-- assign any name G has, at the line that tried. A file's own new globals
-- land in `public`. The loader makes `public` the runtime's global table.
function engine.freeze(modules)
  for k, v in next, modules do
    if G[k] == nil and type(k) == "string" and not k:find(".", 1, true) then rawset(G, k, v) end
  end
  public = setmetatable({}, {
    __index = G,
    __newindex = function(t, k, v)
      if G[k] ~= nil then
        local what = modules[k] ~= nil and ("the engine module '" .. tostring(k) .. "' (use: local " .. tostring(k)
                     .. " = require(\"" .. tostring(k) .. "\"))") or ("the engine name '" .. tostring(k) .. "'")
        error("cannot assign to " .. what .. ": make it a local of your file", 2)
      end
      rawset(t, k, v)
    end,
    __engine_names = G,
    __metatable = "the global environment is frozen",
  })
  rawset(G, "_G", public)   -- `_G.json = x` goes through the guard too
  return public
end

local request_methods = {}
local request_mt = { __index = request_methods }

-- req:json(): the body as a Lua value, or a 400 malformed_json error.
function request_methods.json(req)
  local ok, value = pcall(json_decode, req.body)
  if not ok then
    http_error(400, "malformed_json", "request body is not valid JSON")
  end
  return value
end

local function check_headers(headers)
  local out = {}
  if headers == nil then return out end
  if type(headers) ~= "table" then
    error("route handler: headers must be a table", 0)
  end
  for k, v in pairs(headers) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
      error("route handler: header names and values must be strings", 0)
    end
    out[k] = tostring(v)
  end
  return out
end

-- Runs a route handler and normalises what it returned into
-- status, body string, content type (or nil), headers table.
function engine.run_route(name, req)
  local fn = resolve(name)
  if type(fn) ~= "function" then
    error("route handler '" .. name .. "' is not a function", 0)
  end
  setmetatable(req, request_mt)
  local status, body, headers = fn(req)
  if type(status) ~= "number" or status ~= floor(status) or status < 100 or status > 599 then
    error("route handler '" .. name .. "' must return an HTTP status (100-599) first, got "
          .. tostring(status), 0)
  end
  local ctype
  if body == nil then
    body = ""
  elseif is_stream(body) then
    ctype = "text/event-stream"   -- events.stream{...}: the server streams (sse.c)
  elseif type(body) == "table" then
    body = json_encode(body)
    ctype = "application/json"
  elseif type(body) == "string" then
    ctype = "text/plain; charset=utf-8"
  else
    error("route handler '" .. name .. "' must return a string or table body, got " .. type(body), 0)
  end
  return status, body, ctype, check_headers(headers)
end

-- Runs a timer handler with its data decoded from the JSON kept by the core.
function engine.run_timer(name, data_json, id)
  local fn = resolve(name)
  if type(fn) ~= "function" then
    error("timer handler '" .. name .. "' is not a function", 0)
  end
  local data
  if data_json ~= nil then data = json_decode(data_json) end
  fn(data, id)
end

-- An outbox delivery's result handler: handler(result, context, info), where
-- result = {status, headers, body} and context is what outbox.send got.
function engine.run_outbox_result(name, result, context_json, info)
  local fn = resolve(name)
  if type(fn) ~= "function" then
    error("outbox result handler '" .. name .. "' is not a function", 0)
  end
  local context
  if context_json ~= nil then context = json_decode(context_json) end
  fn(result, context, info)
end

-- An outbox job: handler(data, info). Returning false (or raising) makes
-- the attempt fail, so it is retried with backoff.
function engine.run_outbox_job(name, data_json, info)
  local fn = resolve(name)
  if type(fn) ~= "function" then
    error("outbox job handler '" .. name .. "' is not a function", 0)
  end
  local data
  if data_json ~= nil then data = json_decode(data_json) end
  if fn(data, info) == false then
    error("outbox job handler '" .. name .. "' asked for a retry", 0)
  end
end

-- An event handler: handler(event), where event = {id, name, conversation,
-- at, attempt, data} (docs/events.md). Returning false (or raising) makes
-- the attempt fail, so it is retried with backoff.
function engine.run_event(handler, event, data_json)
  local fn = handler
  if type(handler) == "string" then fn = resolve(handler) end
  if type(fn) ~= "function" then
    error("event handler '" .. tostring(handler) .. "' is not a function", 0)
  end
  event.data = json_decode(data_json)
  if fn(event) == false then
    error("event handler asked for a retry", 0)
  end
end

return engine
