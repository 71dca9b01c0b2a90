-- The schema checker (scripts/schema.lua; docs/lua-api.md, "schema") on its
-- own: what each kind takes, the path a failure names, its status, and the
-- normalised value. The engine's globals it uses are stubbed here.

local NULL = setmetatable({}, { __name = "json.null" })
json = { null = NULL, decode = function(s)
  -- enough JSON for S.decode's specs: a few fixed texts
  local known = { ['{"ok":true,"result":{"message_id":5}}'] = { ok = true, result = { message_id = 5.0 } },
                   ['{"ok":false,"description":"Bad Request: x","result":true}'] = { ok = false,
                     description = "Bad Request: x", result = true } }
  if known[s] == nil then error("not JSON") end
  return known[s]
end }
config = { conversations = { max_text_bytes = 8 } }
http_error = function(status, code, message) error({ status = status, code = code, message = message }, 0) end

local S = dofile("scripts/schema.lua")

-- The failure S.check raises for value, or nil when it passes.
local function refusal(schema, value, name)
  local ok, err = pcall(S.check, schema, value, name)
  if ok then return nil end
  assert(type(err) == "table", "S.check raised a plain error: " .. tostring(err))
  return err
end

local function refuses(schema, value, message, status, code)
  local err = refusal(schema, value)
  assert(err, "accepted, want: " .. message)
  eq(err.message, message, "message")
  eq(err.status, status or 422, "status of " .. message)
  eq(err.code, code or "invalid_field", "code of " .. message)
end

test("strings: type, UTF-8, NUL, bytes and characters, empty", function()
  local s = S.string{ max = 6 }
  eq(S.check(s, "abc"), "abc", "a string")
  eq(S.check(s, nil), nil, "absent")
  eq(S.check(s, NULL), nil, "null is absent")
  refuses(s, 5, "the value must be a string")
  refuses(s, "a\xffb", "the value must be valid UTF-8")
  refuses(s, "a\0b", "the value must not contain NUL characters")
  refuses(s, "abcdefg", "the value is longer than 6 bytes")
  refuses(S.string{ max_chars = 2 }, "\u{436}\u{436}\u{436}", "the value is longer than 2 characters")
  eq(S.check(S.string{ max_chars = 3 }, "\u{436}\u{436}\u{436}"), "\u{436}\u{436}\u{436}", "3 characters, 6 bytes")
  refuses(S.string{ nonempty = true }, "", "the value must not be empty")
  eq(S.check(S.string{ empty_is_nil = true }, ""), nil, "empty_is_nil")
  refuses(S.string{ required = true }, NULL, "the value is required")
  refuses(S.string{ enum = { "a", "b" } }, "c", "the value must be one of: a, b")
  eq(S.check(S.string{ default = "d" }, nil), "d", "default")
end)

test("text is bounded by conversations.max_text_bytes", function()
  refuses(S.text{}, "123456789", "the value is longer than 8 bytes")
  config.conversations.max_text_bytes = 10
  eq(S.check(S.text{}, "123456789"), "123456789", "read at check time")
  config.conversations.max_text_bytes = 8
end)

test("ids, integers, numbers, booleans, URLs", function()
  eq(S.check(S.id{}, 42.0), "42", "an integral float id")
  eq(S.check(S.id{}, -7), "-7", "a negative id")
  eq(S.check(S.id{}, "x-1"), "x-1", "a string id")
  refuses(S.id{}, 1.5, "the value must be a string or an integer")
  refuses(S.id{}, "", "the value must not be empty")
  refuses(S.id{}, string.rep("x", 129), "the value is longer than 128 bytes")
  eq(math.type(S.check(S.integer{}, 3.0)), "integer", "an integer")
  refuses(S.integer{}, 3.5, "the value must be an integer")
  refuses(S.integer{ min = 1, max = 3 }, 0, "the value must be at least 1")
  refuses(S.integer{ min = 1, max = 3 }, 4, "the value must be at most 3")
  eq(S.check(S.number{ max = 1 }, 0.5), 0.5, "a number")
  refuses(S.number{}, "1", "the value must be a number")
  eq(S.check(S.boolean{}, false), false, "false is a value")
  refuses(S.boolean{}, "true", "the value must be true or false")
  eq(S.check(S.url{}, "HTTPS://x.example/a"), "HTTPS://x.example/a", "scheme in any case")
  for _, bad in ipairs({ "javascript:alert(1)", "//x.example", "ftp://x", "http://", "http://a b" }) do
    refuses(S.url{}, bad, "the value must be an http:// or https:// URL")
  end
end)

test("objects: name order, paths, unknown fields, nulls", function()
  local o = S.object({ b = S.string{ required = true }, a = S.object{ x = S.integer{} } }, { unknown = "refuse" })
  refuses(o, {}, "b is required")
  refuses(o, { a = { x = "1" } }, "a.x must be an integer")   -- a before b: name order
  refuses(o, { b = "", c = 1, d = 2 }, "c is not a known field")
  refuses(o, { 1, 2 }, "the value must be an object")
  local v = S.check(S.object{ a = S.string{}, n = S.id{} }, { a = NULL, n = 5, other = "dropped" })
  eq(v.a, nil, "null is absent")
  eq(v.n, "5", "the id as a string")
  eq(v.other, nil, "an unknown field is left out")
  eq(next(S.check(S.object{}, {})), nil, "an empty object stays a table")
end)

test("arrays and maps: items, counts, keys", function()
  local a = S.array(S.object{ url = S.url{ required = true } }, { max = 2 })
  refuses(a, { { url = "http://a" }, { url = "data:x" } }, "[2].url must be an http:// or https:// URL")
  refuses(a, { {}, {}, {} }, "the value has more than 2 items")
  refuses(S.array(S.integer{}, { min = 1 }), {}, "the value has fewer than 1 items")
  refuses(a, { x = 1 }, "the value must be an array")
  eq(S.check(a, {}), nil, "an empty array is nil")
  local m = S.map(S.string{ max = 2 }, { max_keys = 2, key = S.string{ max = 3 } })
  eq(S.check(m, { k = "v" }).k, "v", "a map")
  refuses(m, { a = "1", b = "2", c = "3" }, "the value has more than 2 fields")
  refuses(m, { long = "1" }, "the value key is longer than 3 bytes")
  refuses(S.object{ m = m }, { m = { k = "xyz" } }, "m.k is longer than 2 bytes")
end)

test("one_of: the alternative that takes the kind checks it", function()
  local o = S.one_of{ S.string{ max = 2 }, S.integer{}, required = true }
  eq(S.check(o, "ab"), "ab", "a string")
  eq(S.check(o, 3), 3, "an integer")
  refuses(o, "abc", "the value is longer than 2 bytes")   -- the string's own error
  refuses(o, true, "the value must be a string or an integer")
  refuses(o, nil, "the value is required")
end)

test("by/cases: the fields an event's type adds", function()
  local ev = S.object({ type = S.string{ required = true } }, { by = "type", cases = {
    Text = { text = S.string{ required = true } },
  } })
  refuses(ev, { type = "Text" }, "text is required")
  eq(S.check(ev, { type = "Text", text = "hi" }).text, "hi", "the case's field")
  eq(S.check(ev, { type = "Other", text = "hi" }).text, nil, "another type has no such field")
end)

test("errors: a status of its own for a kind of failure, inherited below", function()
  local o = S.object({ name = S.string{}, text = S.string{ max = 2, errors = { too_long = { 413, "text_too_long" } } },
                       id = S.string{ max = 2 } }, { errors = { utf8 = { 400, "invalid_utf8" } } })
  refuses(o, { name = "\xff" }, "name must be valid UTF-8", 400, "invalid_utf8")
  refuses(o, { text = "abc" }, "text is longer than 2 bytes", 413, "text_too_long")
  refuses(o, { id = "abc" }, "id is longer than 2 bytes")
  refuses(o, { text = "\xff" }, "text must be valid UTF-8", 400, "invalid_utf8")
end)

test("error_for: the root's answer to a kind of failure, else 422", function()
  local o = S.object({ id = S.id{} }, { errors = { type = { 400, "invalid_field" } } })
  local status, code = S.error_for(o, "type")
  eq(status, 400, "the status the schema gives")
  eq(code, "invalid_field", "its code")
  status, code = S.error_for(o, "utf8")
  eq(status, 422, "a kind the schema does not name")
  eq(code, "invalid_field", "the default code")
end)

test("lenient: a value that fails is absent, not an error", function()
  local u = S.object({ id = S.id{}, name = S.string{}, list = S.array(S.integer{}) }, { lenient = true })
  local v = S.check(S.object{ u = u, n = S.integer{} }, { u = { id = 1.5, name = "a\0", list = { 1, "x", 3 } }, n = 2 })
  eq(v.u.id, nil, "a bad id")
  eq(v.u.name, nil, "a name with NUL")
  eq(#v.u.list, 2, "the bad item is left out")
  eq(S.check(S.object{ u = u }, { u = "not an object" }).u, nil, "a lenient object of the wrong kind")
  refuses(S.object{ u = u, n = S.integer{} }, { n = "x" }, "n must be an integer")   -- only below it
end)

test("before and check", function()
  local c = S.object({ value = S.one_of{ S.string{}, S.number{}, required = true } },
                     { before = function(x) return type(x) == "table" and x or { value = x } end })
  eq(S.check(S.map(c), { k = 5 }).k.value, 5, "a bare value is wrapped")
  local o = S.object({ a = S.string{}, b = S.string{} },
                     { check = function(v) if not (v.a or v.b) then return "needs a or b", "a" end end })
  refuses(o, {}, "a needs a or b")
end)

test("check, validate, decode and assert name the root", function()
  local o = S.object{ n = S.integer{ required = true } }
  eq(refusal(o, "x", "the body").message, "the body must be an object", "the root's name")
  local v, message = S.validate(o, {})
  eq(v, nil, "validate: no value")
  eq(message, "n is required", "validate: the message")
  eq(select(2, S.decode(o, "{nope")), "not JSON", "decode: not JSON")
  local answer = S.object({ ok = S.boolean{}, description = S.string{}, result = S.object{ message_id = S.integer{} } },
                          { lenient = true })
  eq(S.decode(answer, '{"ok":true,"result":{"message_id":5}}').result.message_id, 5, "decode")
  eq(S.decode(answer, '{"ok":false,"description":"Bad Request: x","result":true}').result, nil, "lenient decode")
  local ok, err = pcall(S.assert, o, { n = "x" }, "acme send")
  eq(ok, false, "assert raises")
  eq(err, "acme send: n must be an integer", "a plain error, its message")
  eq(S.assert(o, { n = 2.0 }, "acme send").n, 2, "assert gives the value")
end)

test("declaring a bad schema is an error at once", function()
  eq(pcall(S.object, { a = "string" }), false, "a field that is no schema")
  eq(pcall(S.array, "x"), false, "an item that is no schema")
  eq(pcall(S.string, "x"), false, "options that are no table")
end)

test("S.at walks a dotted path of names and array indexes", function()
  local v = { visitor = { id = "v1", pages = { { url = "https://a/" }, { url = "https://b/" } } }, gone = json.null }
  eq(S.at(v, "visitor.id"), "v1", "names")
  eq(S.at(v, "visitor.pages.2.url"), "https://b/", "an index from 1")
  eq(S.at(v, "visitor.pages.3.url"), nil, "past the end")
  eq(S.at(v, "visitor.id.x"), nil, "through a string")
  eq(S.at(v, "gone"), nil, "JSON null is absent")
  eq(S.at(v, ""), nil, "an empty path")
  eq(S.at(v, nil), nil, "no path")
end)
