-- Declarative checks of JSON shapes (docs/lua-api.md, "schema"):
--
--   local S = require("schema")
--   local Body = S.object{ client_id = S.string{ required = true, max = 256 },
--                          attachments = S.array(S.object{ url = S.url{ required = true } }, { max = 20 }) }
--   local body = S.check(Body, req:json(), "the body")   -- 422 invalid_field naming the path
--   S.assert(SendMessage, body, "telegram sendMessage")   -- a plain Lua error: our own bug
--
-- A schema is built once, at load; checking walks it and builds the
-- normalised value (ids as strings, JSON nulls as nil, unknown fields left
-- out), so a handler reads only what was checked. Fields are checked in name
-- order: the first error named is always the same one.
local S = {}

local type, pairs, ipairs, tostring, next = type, pairs, ipairs, tostring, next
local setmetatable, getmetatable = setmetatable, getmetatable
local find, format, concat, sort = string.find, string.format, table.concat, table.sort
local tointeger, ulen = math.tointeger, utf8.len

local null = json.null

function S.is_null(x) return x == nil or x == null end

-- The value at a dotted path ("a.b.1.c": names, and array indexes from 1)
-- in a decoded JSON value, or nil; JSON null is absent. For platforms
-- whose payload paths are the integrator's to configure.
function S.at(value, path)
  if type(path) ~= "string" or path == "" then return nil end
  for part in path:gmatch("[^.]+") do
    if type(value) ~= "table" then return nil end
    local i = math.tointeger(tonumber(part))
    if i and value[i] ~= nil then value = value[i] else value = value[part] end
  end
  if value == null then return nil end
  return value
end
local is_null = S.is_null

-- True for a table decoded from a JSON array (or an empty object, which
-- JSON decoding cannot tell apart from an empty array).
function S.is_array(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end
local is_array = S.is_array

function S.is_object(t)
  return type(t) == "table" and (next(t) == nil or t[1] == nil)
end
local is_object = S.is_object

function S.max_text()
  return (config.conversations and config.conversations.max_text_bytes) or 4096
end

-- An absolute http(s) URL. Anything else (javascript:, data:, file:, a
-- relative path) could run or read something where a client or an agent
-- opens it.
function S.http_url(x)
  if type(x) ~= "string" or #x > 2048 or find(x, "[%c%s]") then return false end
  local scheme, host = x:match("^(%a[%w+.-]*)://([^/?#]+)")
  if not scheme then return false end
  scheme = scheme:lower()
  return (scheme == "http" or scheme == "https") and host ~= ""
end

-- Ends the request with 422 invalid_field: for checks a schema cannot say.
function S.invalid(field, what)
  http_error(422, "invalid_field", field .. " " .. what)
end

-- ---------------------------------------------------------------- checking

-- A failure: where, what, and the status and code it answers with. The
-- default is 422 invalid_field; `errors = { utf8 = { 400, "invalid_utf8" } }`
-- on a node changes one kind of failure for that node and all below it
-- (kinds: type, required, utf8, nul, too_long, empty, enum, range, count,
-- unknown, check).
local DEFAULT_ERROR = { 422, "invalid_field" }
local function fail(ctx, path, what, kind)
  local e = ctx.errors and ctx.errors[kind] or DEFAULT_ERROR
  return nil, { path = path, what = what, kind = kind, status = e[1], code = e[2] }
end

-- The status and code a failure of `kind` at the root of `schema` answers
-- with: for a caller that refuses a value before checking it (inbound's
-- null body), with the answer the schema gives for the rest.
function S.error_for(schema, kind)
  local e = schema.opts.errors and schema.opts.errors[kind] or DEFAULT_ERROR
  return e[1], e[2]
end

local function join(path, key)
  if path == "" then return key end
  return path .. "." .. key
end

local node_mt = { __name = "schema" }
local function is_node(x) return getmetatable(x) == node_mt end
S.is_schema = is_node

-- Runs node n on x at path: the options every kind shares, then the kind's
-- own check. Returns the normalised value, or nil and the failure.
local function run(n, x, path, ctx)
  local o = n.opts
  if o.errors or o.lenient then
    local errors = ctx.errors
    if o.errors then
      errors = {}
      for k, v in pairs(ctx.errors or {}) do errors[k] = v end
      for k, v in pairs(o.errors) do errors[k] = v end
    end
    ctx = { errors = errors, lenient = ctx.lenient or o.lenient }
  end
  if o.before then x = o.before(x) end
  if is_null(x) then
    if o.default ~= nil then return o.default end
    if o.required and not ctx.lenient then return fail(ctx, path, "is required", "required") end
    return nil
  end
  local v, err = n.check(n, x, path, ctx)
  if not err and o.check then
    local what, sub = o.check(v)
    if what then v, err = fail(ctx, sub and join(path, sub) or path, what, "check") end
  end
  -- lenient: a value that fails counts as absent (platforms that send an
  -- event again for as long as it is refused)
  if err and ctx.lenient then return nil end
  return v, err
end

local function node(kind, what, accepts, check, opts)
  opts = opts or {}
  if type(opts) ~= "table" or is_node(opts) then
    error("schema." .. kind .. ": options must be a table", 3)
  end
  return setmetatable({ kind = kind, what = what, accepts = accepts, check = check, opts = opts }, node_mt)
end

local function is_string(x) return type(x) == "string" end
local function is_number(x) return type(x) == "number" end

-- Strings: valid UTF-8 without NUL (the store refuses NUL, and a C string
-- would end there), within max bytes (and max_chars characters).
local function string_check(n, x, path, ctx)
  local o = n.opts
  if type(x) ~= "string" then return fail(ctx, path, "must be a string", "type") end
  local chars = ulen(x)
  if not chars then return fail(ctx, path, "must be valid UTF-8", "utf8") end
  if find(x, "\0", 1, true) then return fail(ctx, path, "must not contain NUL characters", "nul") end
  local max = n.text and S.max_text() or o.max
  if max and #x > max then return fail(ctx, path, "is longer than " .. max .. " bytes", "too_long") end
  if o.max_chars and chars > o.max_chars then
    return fail(ctx, path, "is longer than " .. o.max_chars .. " characters", "too_long")
  end
  if x == "" then
    if o.nonempty then return fail(ctx, path, "must not be empty", "empty") end
    if o.empty_is_nil then return nil end
  end
  if n.enum and not n.enum[x] then
    return fail(ctx, path, "must be one of: " .. concat(o.enum, ", "), "enum")
  end
  return x
end

local function enum_set(opts)
  if opts and opts.enum then
    local set = {}
    for _, v in ipairs(opts.enum) do set[v] = true end
    return set
  end
end

-- S.string{ required, max, max_chars, nonempty, empty_is_nil, enum, default, errors, lenient, before, check }
function S.string(opts)
  local n = node("string", "a string", is_string, string_check, opts)
  n.enum = enum_set(opts)
  return n
end

-- S.text{...}: a message text, S.string bounded by conversations.max_text_bytes.
function S.text(opts)
  local n = S.string(opts)
  n.text = true
  return n
end

-- S.id{ required, max = 128 }: a platform's id, a non-empty string or an
-- integer; always a string after the check.
local function id_check(n, x, path, ctx)
  if type(x) == "number" then
    local i = tointeger(x)
    if not i then return fail(ctx, path, "must be a string or an integer", "type") end
    return format("%d", i)
  end
  if type(x) ~= "string" then return fail(ctx, path, "must be a string or an integer", "type") end
  return string_check(n, x, path, ctx)
end
function S.id(opts)
  opts = opts or {}
  local o = { max = 128, nonempty = true }
  for k, v in pairs(opts) do o[k] = v end
  return node("id", "a string or an integer", function(x) return is_string(x) or is_number(x) end, id_check, o)
end

-- S.url{ required, max = 2048 }: an absolute http:// or https:// URL (the
-- scheme in any case).
local function url_check(n, x, path, ctx)
  local v, err = string_check(n, x, path, ctx)
  if err then return nil, err end
  if not S.http_url(v) then return fail(ctx, path, "must be an http:// or https:// URL", "type") end
  return v
end
function S.url(opts)
  local o = { max = 2048 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return node("url", "an http(s) URL", is_string, url_check, o)
end

local function range(ctx, path, x, o)
  if o.min and x < o.min then return fail(ctx, path, "must be at least " .. tostring(o.min), "range") end
  if o.max and x > o.max then return fail(ctx, path, "must be at most " .. tostring(o.max), "range") end
  return x
end

-- S.integer{ required, min, max }: JSON numbers arrive as floats; an
-- integral one comes back as a Lua integer.
function S.integer(opts)
  return node("integer", "an integer", is_number, function(n, x, path, ctx)
    local i = type(x) == "number" and tointeger(x)
    if not i then return fail(ctx, path, "must be an integer", "type") end
    return range(ctx, path, i, n.opts)
  end, opts)
end

-- S.number{ required, min, max }
function S.number(opts)
  return node("number", "a number", is_number, function(n, x, path, ctx)
    if type(x) ~= "number" or x ~= x then return fail(ctx, path, "must be a number", "type") end
    return range(ctx, path, x, n.opts)
  end, opts)
end

-- S.boolean{ required, default }
function S.boolean(opts)
  return node("boolean", "a boolean", function(x) return type(x) == "boolean" end, function(n, x, path, ctx)
    if type(x) ~= "boolean" then return fail(ctx, path, "must be true or false", "type") end
    return x
  end, opts)
end

-- S.any{ required }: anything but null, unchecked.
function S.any(opts)
  return node("any", "any value", function() return true end, function(n, x) return x end, opts)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys)
  return keys
end

local function check_fields(fields, keys, x, out, path, ctx)
  for _, k in ipairs(keys) do
    local v, err = run(fields[k], x[k], join(path, k), ctx)
    if err then return err end
    out[k] = v
  end
end

local function object_check(n, x, path, ctx)
  local o = n.opts
  if not is_object(x) then return fail(ctx, path, "must be an object", "type") end
  local out = {}
  local err = check_fields(n.fields, n.keys, x, out, path, ctx)
  if err then return nil, err end
  local case = o.by and n.cases[out[o.by]]
  if case then
    err = check_fields(case.fields, case.keys, x, out, path, ctx)
    if err then return nil, err end
  end
  if o.unknown == "refuse" then
    local unknown = {}
    for k in pairs(x) do
      if n.fields[k] == nil and not (case and case.fields[k]) then unknown[#unknown + 1] = tostring(k) end
    end
    if #unknown > 0 then
      sort(unknown)
      return fail(ctx, join(path, unknown[1]), "is not a known field", "unknown")
    end
  end
  return out
end

local function check_field_table(fields, where)
  if type(fields) ~= "table" or is_node(fields) then error(where .. ": fields must be a table of schemas", 3) end
  for k, v in pairs(fields) do
    if type(k) ~= "string" or not is_node(v) then
      error(where .. ": field " .. tostring(k) .. " is not a schema (S.string{...}, S.object{...}, ...)", 3)
    end
  end
  return { fields = fields, keys = sorted_keys(fields) }
end

-- S.object(fields [, opts]): a JSON object; opts: required, unknown =
-- "ignore" (the default: left out of the value) | "refuse" (422 naming
-- the field), by = "<field>" and cases = { [value] = { more fields } }
-- (the fields a kind of event adds, chosen by one field's value).
function S.object(fields, opts)
  local f = check_field_table(fields, "schema.object")
  local n = node("object", "an object", is_object, object_check, opts)
  n.fields, n.keys, n.cases = f.fields, f.keys, {}
  if n.opts.by then
    for value, case in pairs(n.opts.cases or {}) do
      n.cases[value] = check_field_table(case, "schema.object case " .. tostring(value))
    end
  end
  return n
end

-- S.array(item [, opts]): opts: required, min, max (items). An empty array
-- comes back as nil, like an absent one: a handler tests one thing, and an
-- unmarked empty table passed on would encode as {}.
function S.array(item, opts)
  if not is_node(item) then error("schema.array: the item must be a schema", 2) end
  local n = node("array", "an array", is_array, function(n, x, path, ctx)
    local o = n.opts
    if not is_array(x) then return fail(ctx, path, "must be an array", "type") end
    if o.max and #x > o.max then return fail(ctx, path, "has more than " .. o.max .. " items", "count") end
    if o.min and #x < o.min then return fail(ctx, path, "has fewer than " .. o.min .. " items", "count") end
    local out = {}
    for i = 1, #x do
      local v, err = run(item, x[i], path .. "[" .. i .. "]", ctx)
      if err then return nil, err end
      out[#out + 1] = v     -- a lenient item that failed is left out
    end
    if #out == 0 then return nil end
    return out
  end, opts)
  return n
end

-- S.map(value [, opts]): an object with keys of the caller's choosing;
-- opts: required, max_keys, key = S.string{...} (the check of each key).
function S.map(value, opts)
  if not is_node(value) then error("schema.map: the value must be a schema", 2) end
  return node("map", "an object", is_object, function(n, x, path, ctx)
    local o = n.opts
    if not is_object(x) then return fail(ctx, path, "must be an object", "type") end
    local count = 0
    for k in pairs(x) do
      if type(k) ~= "string" then return fail(ctx, path, "keys must be strings", "type") end
      count = count + 1
    end
    if o.max_keys and count > o.max_keys then
      return fail(ctx, path, "has more than " .. o.max_keys .. " fields", "count")
    end
    local out = {}
    for _, k in ipairs(sorted_keys(x)) do
      local key, err = k, nil
      if o.key then
        key, err = run(o.key, k, path, ctx)
        if err then return fail(ctx, path, "key " .. err.what, err.kind) end
      end
      if key ~= nil then        -- nil: a lenient key that failed, left out with its value
        local v
        v, err = run(value, x[k], join(path, k), ctx)
        if err then return nil, err end
        out[k] = v
      end
    end
    return out
  end, opts)
end

-- S.one_of{ a, b, ... [, required = ...] }: the first alternative that takes
-- the value's kind (a string, a number, an object ...) checks it, so its
-- errors are the precise ones; a kind none takes is refused naming them all.
function S.one_of(spec)
  local alts, opts = {}, {}
  for k, v in pairs(spec) do
    if type(k) == "number" then alts[k] = v else opts[k] = v end
  end
  local whats = {}
  for i, alt in ipairs(alts) do
    if not is_node(alt) then error("schema.one_of: alternative " .. i .. " is not a schema", 2) end
    whats[i] = alt.what
  end
  local what = #whats > 1 and concat(whats, ", ", 1, #whats - 1) .. " or " .. whats[#whats] or whats[1]
  return node("one_of", what, function(x)
    for _, alt in ipairs(alts) do if alt.accepts(x) then return true end end
    return false
  end, function(n, x, path, ctx)
    for _, alt in ipairs(alts) do
      if alt.accepts(x) then return run(alt, x, path, ctx) end
    end
    return fail(ctx, path, "must be " .. what, "type")
  end, opts)
end

local function message(err, name)
  return (err.path ~= "" and err.path or name) .. " " .. err.what
end

-- S.validate(schema, value [, name]) -> value | nil, message, failure: no
-- error raised, for a caller that decides itself.
function S.validate(schema, value, name)
  local v, err = run(schema, value, "", {})
  if err then return nil, message(err, name or "the value"), err end
  return v
end

-- S.decode(schema, text [, name]) -> value | nil, message: JSON text (a
-- platform's answer) decoded and validated, never raising.
function S.decode(schema, text, name)
  local ok, value = pcall(json.decode, text)
  if not ok then return nil, "not JSON" end
  return S.validate(schema, value, name)
end

-- S.check(schema, value [, name]) -> the normalised value, or the request
-- ends with the failure's status (422 invalid_field unless the schema says
-- otherwise) and a message naming the path (name stands for the root).
function S.check(schema, value, name)
  local v, err = run(schema, value, "", {})
  if err then http_error(err.status, err.code, message(err, name or "the value")) end
  return v
end

-- S.assert(schema, value, what) -> the normalised value, or a plain Lua
-- error at the caller: for what the engine itself builds (outbound calls),
-- where a mismatch is a bug in the script, not the client's fault.
function S.assert(schema, value, what)
  local v, err = run(schema, value, "", {})
  if err then error((what and what .. ": " or "") .. message(err, "the value"), 2) end
  return v
end

return S
