-- Rules without effects (docs/rules.md, "Testing and dry runs"): the spec
-- files `switchboard test` runs, and POST /admin/rules/dry-run. Both feed
-- events to the rules against plain views of conversations, with a clock
-- of their own, and report what the rules would do: nothing is written,
-- sent or stored.
local channels = require("channels")
local rules = require("rules")
local rules_spec = {}

local START = 1767607200   -- Monday 2026-01-05 10:00 UTC: inside weekday working hours

-- A conversation view as rules see one: the fields of a handle, plain.
local function view(t, n)
  local v = {
    id = t.id or ("spec-" .. n), channel = t.channel or "web", client_id = t.client_id or ("client-" .. n),
    desk = t.desk, group = t.group, agent = t.agent, state = t.state or "bot", status = t.status or "open",
    tags = t.tags or {}, client = t.client or {}, data = t.data or {}, messages = {},
  }
  for _, m in ipairs(t.messages or {}) do
    v.messages[#v.messages + 1] = { author = { kind = m.author or m[1] or "client", name = m.name },
                                    text = m.text or m[2] or "", created = m.created }
  end
  return v
end

-- A context like rules.live_context, over a view and a fake clock.
local function context(env, ev, v)
  return {
    event = ev, conv = v,
    now = function() return env.clock end,
    messages = function() return v.messages end,
    local_time = function() return timer.local_time(env.clock) end,
    working_hours = rules.working_hours,
    agents_online = function(desk, group)
      local o = env.online[(desk or "") .. "/" .. (group or "")]
      if o == nil then o = env.online["*"] end
      return o == true
    end,
  }
end

-- fired -> { { rule =, actions = { { action =, arg =, text = } }, error = } }
local function report(fired)
  local out = {}
  for _, f in ipairs(fired) do
    local acts = {}
    for _, a in ipairs(f.actions or {}) do acts[#acts + 1] = { action = a.name, arg = a.arg, text = a.text } end
    out[#out + 1] = { rule = f.rule.name, actions = acts, error = f.error }
  end
  return out
end

local function deep_eq(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do if not deep_eq(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local function show(v)
  if type(v) == "table" then
    local ok, text = pcall(json.encode, v)
    return ok and text or tostring(v)
  end
  return tostring(v)
end

-- The functions a spec file sees (docs/rules.md).
local function harness(registry)
  local env = { clock = START, online = {}, n = 0, specs = {}, events = 0 }
  local api = {}
  function api.spec(name, fn) env.specs[#env.specs + 1] = { name = name, fn = fn } end
  function api.conversation(t)
    env.n = env.n + 1
    return view(t or {}, env.n)
  end
  function api.clock(t) env.clock = t end
  function api.advance(seconds) env.clock = env.clock + seconds end
  function api.now() return env.clock end
  function api.agents_online(desk, group, online) env.online[(desk or "*") .. (group and "/" .. group or "")] = online end
  -- event(name, conv [, data]) -> what fired
  function api.event(name, v, data)
    env.events = env.events + 1
    local ev = { id = env.events, name = name, conversation = v and v.id, at = env.clock, depth = 0, data = data or {} }
    local names = name:match("^case%.") and { name } or rules.names_of(ev, v)
    return report(rules.evaluate(registry, names, context(env, ev, v)))
  end
  -- message(conv, author_kind, text): the message is added to the view, then message.created
  function api.message(v, kind, text)
    v.messages[#v.messages + 1] = { author = { kind = kind }, text = text, created = env.clock }
    return api.event("message.created", v, { author = { kind = kind }, text = text, state = v.state, status = v.status })
  end
  -- tick(rule_name, { conv, ... }) -> what the scheduled rule did, per conversation that its scope selects
  function api.tick(name, views)
    local r = registry.by_name[name]
    if not r or not r.schedule then error("no scheduled rule named " .. tostring(name), 2) end
    local out = {}
    for _, v in ipairs(views or {}) do
      local inside = true
      for k, want in pairs(r.scope or {}) do
        if k ~= "limit" and k ~= "order" then
          local have = v[k]
          if type(want) == "table" then
            local any = false
            for _, w in ipairs(want) do if have == w then any = true end end
            inside = inside and any
          elseif want == false then inside = inside and have == nil
          else inside = inside and have == want end
        end
      end
      if inside then
        local ev = { name = "schedule", at = env.clock, data = { rule = name } }
        for _, f in ipairs(report(rules.evaluate(rules.only(r), { "schedule" },
                                                 context(env, ev, v)))) do
          f.conversation = v.id
          out[#out + 1] = f
        end
      end
    end
    return out
  end
  -- assertions
  function api.fired(result)
    local names = {}
    for _, f in ipairs(result) do if not f.error then names[#names + 1] = f.rule end end
    return names
  end
  function api.actions(result, rule)
    local list = {}
    for _, f in ipairs(result) do
      if f.rule == rule or rule == nil then
        for _, a in ipairs(f.actions) do list[#list + 1] = { [a.action] = a.arg } end
      end
    end
    return list
  end
  function api.eq(got, want, what)
    if not deep_eq(got, want) then
      error((what and what .. ": " or "") .. "expected " .. show(want) .. ", got " .. show(got), 2)
    end
  end
  function api.truthy(v, what) if not v then error((what or "expected a true value") .. ", got " .. show(v), 2) end end
  return env, api
end

-- switchboard test: one spec file -> { { name, ok, message } }
function rules_spec.run(label, source)
  local env, api = harness(rules)
  local sandbox = setmetatable({}, { __index = function(_, k)
    local v = api[k]
    if v ~= nil then return v end
    return _G[k]
  end })
  local chunk, err = load(source, "=" .. label, "t", sandbox)
  if not chunk then return { { name = "(load)", ok = false, message = err } } end
  local ok, why = pcall(chunk)
  if not ok then return { { name = "(top level)", ok = false, message = tostring(why) } } end
  local results = {}
  for _, s in ipairs(env.specs) do
    env.clock, env.online = START, {}
    local passed, message = pcall(s.fn)
    results[#results + 1] = { name = s.name, ok = passed, message = not passed and tostring(message) or nil }
  end
  if #results == 0 then results[1] = { name = "(no specs)", ok = false, message = "the file declares no spec" } end
  return results
end

-- ---------------------------------------------------------------- dry run

local function admin(req)
  local token = config.admin_token
  channels.require_bearer(req, type(token) == "string" and token ~= "" and token or nil, "admin token")
end

-- Candidate rules: the source declares rules into a registry of its own
-- (no schedules, no subscription), in a sandbox with the pure libraries
-- and the config only: a candidate's functions cannot write, send or call
-- out, so a dry run of them changes nothing.
local PURE = { "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring", "type",
               "string", "table", "math", "utf8" }
local function candidate(source)
  local registry = { list = {}, by_name = {} }
  local sandbox = {
    rule = function(name)
      return function(spec) return rules.declare(name, spec, "candidate", registry) end
    end,
    config = config, now = now, os = { time = os.time, date = os.date },
    json = { encode = json.encode, decode = json.decode, null = json.null },
  }
  for _, k in ipairs(PURE) do sandbox[k] = _G[k] end
  local chunk, err = load(source, "=candidate", "t", sandbox)
  if not chunk then http_error(422, "invalid_field", "source: " .. tostring(err)) end
  local ok, why = pcall(chunk)
  if not ok then http_error(422, "invalid_field", "source: " .. tostring(why)) end
  return registry
end

local JOURNAL_TO_EVENT = {
  created = "conversation.created", message = "message.created", state = "conversation.state_changed",
  tag_added = "tag.added", tag_removed = "tag.removed", switch = "livechat.requested",
  livechat_started = "livechat.started", livechat_finished = "livechat.ended",
  desk = "conversation.assigned", group = "conversation.assigned", agent = "conversation.assigned",
}

local function read_all(kind, params)
  local out, cursor = {}, nil
  for _ = 1, 50 do
    params.cursor, params.limit = cursor, 200
    local text, err = conversations.read(kind, params)
    if not text then http_error(503, "store_unavailable", tostring(err)) end
    local page = json.decode(text)
    local items = page == json.null and {} or (page.events or page.messages or {})
    for _, x in ipairs(items) do out[#out + 1] = x end
    cursor = page ~= json.null and page.next_cursor or nil
    if not cursor or cursor == json.null then break end
  end
  return out
end

-- A stored conversation as a recording: its fields now, its messages, and
-- its journal as the events the bus gave (oldest first).
local function recording(id)
  local text = conversations.read("conversation", { id = id, messages = 0 })
  if not text or text == "null" then http_error(404, "not_found", "no such conversation") end
  local c = json.decode(text).conversation
  for k, val in pairs(c) do if val == json.null then c[k] = nil end end
  local msgs = {}
  for _, m in ipairs(read_all("messages", { id = id })) do msgs[m.id] = m end
  local events = {}
  for _, e in ipairs(read_all("events", { id = id })) do
    local name = JOURNAL_TO_EVENT[e.type]
    if name then
      local data = type(e.data) == "table" and e.data or {}
      if e.type == "message" and msgs[data.id] then data.text = msgs[data.id].text end
      if name == "conversation.assigned" then data.field = e.type end
      events[#events + 1] = { id = e.id, name = name, at = e.created, data = data }
    end
  end
  return c, msgs, events
end

-- POST /admin/rules/dry-run {conversation_id | conversation, source?}: the
-- conversation's events replayed through the rules (or the candidate
-- source's rules); what would fire and what it would do. Changes nothing.
function rules_spec.dry_run(req)
  admin(req)
  local body = req:json()
  if type(body) ~= "table" then http_error(422, "invalid_field", "the body must be a JSON object") end
  if body.source ~= nil and type(body.source) ~= "string" then http_error(422, "invalid_field", "source must be a string") end
  local registry = body.source and candidate(body.source) or rules
  local env = { clock = now(), online = {} }
  local conv, events
  if type(body.conversation_id) == "string" then
    local c, msgs, evs = recording(body.conversation_id)
    conv, events = view(c, 1), evs
    conv.id = c.id
    conv.messages = {}
    local ordered = {}
    for _, m in pairs(msgs) do ordered[#ordered + 1] = m end
    table.sort(ordered, function(a, b) return a.seq < b.seq end)
    conv.all_messages = ordered
  elseif type(body.conversation) == "table" then
    conv = view(body.conversation, 1)
    events = {}
    for i, e in ipairs(type(body.conversation.events) == "table" and body.conversation.events or {}) do
      if type(e) ~= "table" or not (rules.EVENTS[e.name] or e.name == "case.new" or e.name == "case.updated") then
        http_error(422, "invalid_field", "conversation.events[" .. i .. "].name must be an engine event")
      end
      events[#events + 1] = { id = i, name = e.name, at = e.at or env.clock, data = type(e.data) == "table" and e.data or {} }
    end
    conv.all_messages = conv.messages
    conv.messages = {}
  else
    http_error(422, "invalid_field", "conversation_id (a string) or conversation (an object) is required")
  end
  local out = json.array()
  local shown = 0
  for _, ev in ipairs(events) do
    env.clock = ev.at or env.clock
    -- the messages the conversation had when the event happened
    if ev.name == "message.created" then
      shown = shown + 1
      conv.messages[#conv.messages + 1] = conv.all_messages[shown] or
        { author = ev.data.author or { kind = "client" }, text = ev.data.text or "", created = ev.at }
    end
    local names = ev.name:match("^case%.") and { ev.name } or rules.names_of(ev, conv)
    local fired = report(rules.evaluate(registry, names, context(env, ev, conv)))
    if #fired > 0 then out[#out + 1] = { event_id = ev.id, event = ev.name, fired = fired } end
  end
  return 200, { conversation = conv.id, rules = #registry.list, events = #events, fired = out }
end

route("POST", "/admin/rules/dry-run", "rules_spec.dry_run")

return rules_spec
