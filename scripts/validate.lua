-- Field-by-field input checks (`local v = require("validate")`), for code
-- that checks one value at a time, as the /v1 API does; new code declares
-- its shapes with `schema` (scripts/schema.lua), which these are built on.
-- Each failing check ends the request with a 4xx naming the field. Check
-- the whole input before writing: a handler that fails half way would
-- leave its earlier writes committed.
local S = require("schema")
local v = {}

v.max_text, v.invalid, v.is_null = S.max_text, S.invalid, S.is_null
v.is_array, v.is_object, v.http_url = S.is_array, S.is_object, S.http_url

-- opts of v.string and v.text: required, max, nonempty, utf8_status (the
-- status of invalid UTF-8; 422 unless given), too_long (status, code of an
-- over-long string).
local function string_opts(opts)
  opts = opts or {}
  local errors
  if opts.utf8_status or opts.too_long then
    errors = { too_long = opts.too_long }
    if opts.utf8_status then errors.utf8 = { opts.utf8_status, "invalid_utf8" } end
  end
  return { required = opts.required, max = opts.max, nonempty = opts.nonempty, errors = errors }
end

-- A string that the store and every platform take: valid UTF-8, no NUL, at
-- most `max` bytes.
function v.string(x, field, opts) return S.check(S.string(string_opts(opts)), x, field) end

-- A message text: v.string bounded by conversations.max_text_bytes.
function v.text(x, field, opts) return S.check(S.text(string_opts(opts)), x, field) end

local ID, REQUIRED_ID = S.id{}, S.id{ required = true }
local URL, REQUIRED_URL = S.url{}, S.url{ required = true }
local BOOLEAN = S.boolean{}

-- An id from a platform: a non-empty string or an integer, as a string.
function v.id(x, field, required) return S.check(required and REQUIRED_ID or ID, x, field) end

-- An absolute http(s) URL of at most 2048 bytes.
function v.url(x, field, required) return S.check(required and REQUIRED_URL or URL, x, field) end

function v.boolean(x, field) return S.check(BOOLEAN, x, field) end

-- Query parameters and path ids that are numbers: plain decimal digits only
-- (tonumber would also take "1e2", "0x10" and " 5 ").
function v.digits(s, max_len)
  return type(s) == "string" and #s <= (max_len or 18) and s:match("^%d+$") ~= nil
end

return v
