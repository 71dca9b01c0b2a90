-- Destination resolution for a switch (pure: no I/O, unit-tested in tests/lua).
--   1. the switch names a destination -> that group, whatever the desk's default is;
--   2. else the desk instance has a default group -> that group;
--   3. else the desk's account administrator / default recipient.
-- A destination the desk does not know is an error in the log and falls back
-- to rule 2, then 3. `known` is a set of destination ids (nil: the desk's list
-- is not available, so every destination is taken as known).
local routing = {}

local function known_to(known, id)
  return known == nil or known[id] ~= nil
end

local function id_of(v)
  if type(v) == "number" then
    local i = math.tointeger(v)
    return i and tostring(i) or tostring(v)
  end
  if type(v) == "string" and v ~= "" then return v end
  return nil
end
routing.id_of = id_of

-- Returns group (or nil), rule number, reason.
function routing.resolve(requested, desk, known)
  local notes = {}
  local wanted = id_of(requested)
  if wanted then
    if known_to(known, wanted) then
      return wanted, 1, "the switch named destination " .. wanted
    end
    notes[#notes + 1] = "unknown destination " .. wanted
    if log then log.error("switch destination unknown to the desk", { destination = wanted }) end
  end
  local default = id_of(desk and desk.default_group)
  if default then
    if known_to(known, default) then
      notes[#notes + 1] = "desk default group " .. default
      return default, 2, table.concat(notes, "; ")
    end
    notes[#notes + 1] = "default group " .. default .. " unknown to the desk"
    if log then log.error("desk default group unknown to the desk", { group = default }) end
  end
  local admin = id_of(desk and desk.admin_recipient)
  notes[#notes + 1] = admin and ("account default recipient " .. admin) or "no recipient configured"
  return admin, 3, table.concat(notes, "; ")
end

-- Optional mapping of a platform's group/department id, or of the page the
-- chat started on, to a group: desk.group_map = { ["<platform id>"] = "group" },
-- desk.page_routes = { { pattern = "^https://shop%.", group = "sales" }, ... }.
function routing.map_group(desk, platform_group, page_url)
  if desk and type(desk.group_map) == "table" and platform_group ~= nil then
    local g = desk.group_map[id_of(platform_group) or ""]
    if g then return id_of(g), "platform group " .. id_of(platform_group) end
  end
  if desk and type(desk.page_routes) == "table" and type(page_url) == "string" then
    for _, r in ipairs(desk.page_routes) do
      if type(r.pattern) == "string" and page_url:find(r.pattern) then
        return id_of(r.group), "page " .. page_url
      end
    end
  end
  return nil
end

return routing
