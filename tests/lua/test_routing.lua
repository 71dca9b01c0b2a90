-- Destination resolution rule by rule (docs/handoff.md, "Destination
-- resolution"; scripts/routing.lua): routing.resolve(destination, desk, known)
-- -> group, rule, reason; routing.map_group(desk, platform_group, page_url).

-- What a desk's getDestinations gives: { [id] = { name =, online = } }
local KNOWN = {
  ["15"] = { name = "Support", online = true },
  ["20"] = { name = "Sales", online = false },
  ["1"] = { name = "Admin", online = true },
}
local DESK = { default_group = "15", admin_recipient = "1" }

local function resolves(want_group, want_rule, destination, desk, known)
  local group, rule, reason = routing.resolve(destination, desk, known)
  eq(group, want_group, "group")
  eq(rule, want_rule, "rule")
  assert(type(reason) == "string" and reason ~= "", "a reason is given, got " .. tostring(reason))
  return reason
end

local function errors_naming(text)
  local n = 0
  for _, r in ipairs(logged("error")) do
    local all = r.msg
    for _, v in pairs(r.fields) do all = all .. " " .. tostring(v) end
    if all:find(text, 1, true) then n = n + 1 end
  end
  return n
end

-- rule 1 ---------------------------------------------------------------------

test("rule 1: the switch's destination wins over the desk's default group", function()
  resolves("20", 1, "20", DESK, KNOWN)
  eq(#logged("error"), 0, "errors logged")
end)

test("rule 1: a destination equal to the default group is still rule 1", function()
  resolves("15", 1, "15", DESK, KNOWN)
end)

test("rule 1: works without any desk default", function()
  resolves("20", 1, "20", {}, KNOWN)
  resolves("20", 1, "20", nil, KNOWN)
end)

test("rule 1: numeric destination ids become strings", function()
  resolves("20", 1, 20, DESK, KNOWN)
  resolves("20", 1, 20.0, DESK, KNOWN)          -- JSON numbers may decode as floats
  resolves("15", 1, 15, DESK, { ["15"] = true }) -- a plain set works as `known` too
end)

-- rule 2 ---------------------------------------------------------------------

test("rule 2: no destination -> the desk's default group", function()
  resolves("15", 2, nil, DESK, KNOWN)
end)

test("rule 2: an empty destination counts as none", function()
  resolves("15", 2, "", DESK, KNOWN)
end)

test("rule 2: a numeric default group", function()
  resolves("15", 2, nil, { default_group = 15, admin_recipient = "1" }, KNOWN)
end)

-- rule 3 ---------------------------------------------------------------------

test("rule 3: no destination, no default group -> admin recipient", function()
  resolves("1", 3, nil, { admin_recipient = "1" }, KNOWN)
end)

test("rule 3: a numeric admin recipient", function()
  resolves("1", 3, nil, { admin_recipient = 1 }, KNOWN)
end)

test("rule 3: the admin recipient needs not be a listed destination", function()
  resolves("999", 3, nil, { admin_recipient = "999" }, KNOWN)
end)

-- unknown destinations ------------------------------------------------------

test("an unknown destination falls back to rule 2 and is logged as an error", function()
  local reason = resolves("15", 2, "99", DESK, KNOWN)
  assert(reason:find("99", 1, true), "the reason names the unknown destination: " .. reason)
  assert(errors_naming("99") >= 1, "an error naming destination 99 is logged")
end)

test("an unknown numeric destination falls back too", function()
  resolves("15", 2, 99, DESK, KNOWN)
end)

test("unknown destination and unknown default group fall back to rule 3", function()
  local reason = resolves("1", 3, "99", { default_group = "77", admin_recipient = "1" }, KNOWN)
  assert(reason:find("99", 1, true) and reason:find("77", 1, true), "the reason names both: " .. reason)
  assert(errors_naming("99") >= 1, "an error naming destination 99 is logged")
  assert(errors_naming("77") >= 1, "an error naming default group 77 is logged")
end)

test("no destination and an unknown default group fall back to rule 3", function()
  resolves("1", 3, nil, { default_group = "77", admin_recipient = "1" }, KNOWN)
  assert(errors_naming("77") >= 1, "an error naming default group 77 is logged")
end)

test("an empty list of destinations knows nothing", function()
  resolves("1", 3, "20", DESK, {})
end)

-- known = nil: the desk's list cannot be fetched --------------------------------

test("known = nil accepts any destination", function()
  resolves("99", 1, "99", DESK, nil)
  eq(#logged("error"), 0, "errors logged")
end)

test("known = nil accepts any default group", function()
  resolves("77", 2, nil, { default_group = "77", admin_recipient = "1" }, nil)
end)

-- nothing configured --------------------------------------------------------

test("nothing configured: no group, rule 3, with a reason", function()
  resolves(nil, 3, nil, {}, KNOWN)
  resolves(nil, 3, nil, nil, nil)
end)

test("unknown destination and nothing configured: no group, rule 3", function()
  resolves(nil, 3, "99", {}, KNOWN)
end)

-- routing.map_group -----------------------------------------------------------

local MAP_DESK = {
  group_map = { ["7"] = "sales", ["8"] = 15 },
  page_routes = {
    { pattern = "^https://shop%.", group = "sales" },
    { pattern = "/help/", group = "support" },
    { pattern = "^https://", group = "web" },
  },
}

test("map_group: a platform group id maps to a group", function()
  local g, why = routing.map_group(MAP_DESK, "7", nil)
  eq(g, "sales", "group")
  assert(type(why) == "string" and why:find("7", 1, true), "why names the platform group: " .. tostring(why))
end)

test("map_group: numeric platform ids and numeric mapped groups", function()
  eq((routing.map_group(MAP_DESK, 7, nil)), "sales", "group for platform group 7")
  eq((routing.map_group(MAP_DESK, 8, nil)), "15", "group for platform group 8")
end)

test("map_group: the platform group wins over the page", function()
  eq((routing.map_group(MAP_DESK, "7", "https://example.com/help/x")), "sales", "group")
end)

test("map_group: page URL patterns, first match wins", function()
  eq((routing.map_group(MAP_DESK, nil, "https://shop.example.com/help/cart")), "sales", "shop page")
  eq((routing.map_group(MAP_DESK, nil, "http://example.com/help/faq")), "support", "help page")
  eq((routing.map_group(MAP_DESK, nil, "https://example.com/")), "web", "any https page")
  local g, why = routing.map_group(MAP_DESK, nil, "http://example.com/help/faq")
  assert(type(why) == "string" and why:find("example.com", 1, true), "why names the page: " .. tostring(why))
end)

test("map_group: an unmapped platform group falls through to the page", function()
  eq((routing.map_group(MAP_DESK, "42", "http://example.com/help/")), "support", "group")
end)

test("map_group: nothing matches -> nil", function()
  eq((routing.map_group(MAP_DESK, "42", "ftp://example.com/")), nil, "group")
  eq((routing.map_group(MAP_DESK, nil, nil)), nil, "group")
  eq((routing.map_group({}, "7", "https://shop.example.com/")), nil, "group with an empty desk")
  eq((routing.map_group(nil, "7", "https://shop.example.com/")), nil, "group with no desk")
end)
