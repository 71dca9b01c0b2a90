-- Input checks shared by the channel and desk adapters and the /v1 API
-- (`local v = require("validate")`). Every public endpoint checks its whole
-- input with these before it writes anything: a handler that fails half way
-- would leave its earlier writes committed. Each check ends the request
-- with a 4xx naming the field.
local v = {}

local function max_text()
  return (config.conversations and config.conversations.max_text_bytes) or 4096
end
v.max_text = max_text

function v.invalid(field, what)
  http_error(422, "invalid_field", field .. " " .. what)
end
local invalid = v.invalid

function v.is_null(x) return x == nil or x == json.null end
local is_null = v.is_null

-- True for a table decoded from a JSON array (or an empty object, which
-- JSON decoding cannot tell apart from an empty array).
function v.is_array(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

function v.is_object(t)
  if type(t) ~= "table" then return false end
  return next(t) == nil or t[1] == nil
end

-- A string that the store and every platform take: valid UTF-8, no NUL
-- (the store refuses NUL, and a C string would end there), at most `max`
-- bytes. opts: required, max, nonempty, utf8_status (the status of invalid
-- UTF-8; 422 unless given), too_long (status, code of an over-long string).
function v.string(x, field, opts)
  opts = opts or {}
  if is_null(x) then
    if opts.required then invalid(field, "is required") end
    return nil
  end
  if type(x) ~= "string" then invalid(field, "must be a string") end
  if utf8.len(x) == nil then
    if opts.utf8_status then http_error(opts.utf8_status, "invalid_utf8", field .. " is not valid UTF-8") end
    invalid(field, "must be valid UTF-8")
  end
  if x:find("\0", 1, true) then invalid(field, "must not contain NUL characters") end
  if opts.max and #x > opts.max then
    local what = field .. " is longer than " .. opts.max .. " bytes"
    if opts.too_long then http_error(opts.too_long[1], opts.too_long[2], what) end
    http_error(422, "invalid_field", what)
  end
  if opts.nonempty and x == "" then invalid(field, "must not be empty") end
  return x
end

-- A message text: v.string bounded by conversations.max_text_bytes.
function v.text(x, field, opts)
  local o = { max = max_text() }
  for k, val in pairs(opts or {}) do o[k] = val end
  return v.string(x, field, o)
end

-- An id from a platform: a non-empty string or an integer, as a string.
function v.id(x, field, required)
  if is_null(x) then
    if required then invalid(field, "is required") end
    return nil
  end
  if type(x) == "number" then
    local i = math.tointeger(x)
    if not i then invalid(field, "must be a string or an integer") end
    return string.format("%d", i)
  end
  if type(x) ~= "string" then invalid(field, "must be a string or an integer") end
  return v.string(x, field, { max = 128, nonempty = true })
end

-- An absolute http(s) URL. Anything else (javascript:, data:, file:, a
-- relative path) could run or read something where a client or an agent
-- opens it.
function v.http_url(x)
  if type(x) ~= "string" or #x > 2048 or x:find("[%c%s]") then return false end
  local scheme, host = x:match("^(%a[%w+.-]*)://([^/?#]+)")
  if not scheme then return false end
  scheme = scheme:lower()
  return (scheme == "http" or scheme == "https") and host ~= ""
end

function v.url(x, field, required)
  if is_null(x) then
    if required then invalid(field, "is required") end
    return nil
  end
  if type(x) ~= "string" then invalid(field, "must be a string") end
  if not v.http_url(x) then invalid(field, "must be an http:// or https:// URL of at most 2048 bytes") end
  return x
end

function v.boolean(x, field)
  if is_null(x) then return nil end
  if type(x) ~= "boolean" then invalid(field, "must be true or false") end
  return x
end

-- Query parameters and path ids that are numbers: plain decimal digits only
-- (tonumber would also take "1e2", "0x10" and " 5 ").
function v.digits(s, max_len)
  return type(s) == "string" and #s <= (max_len or 18) and s:match("^%d+$") ~= nil
end

return v
