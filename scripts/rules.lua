-- Automation rules (docs/rules.md): `rule "name" { on =, when =, actions =, stop = }`
-- in rules/*.lua, run on the event bus's events (and on schedules) in file
-- then declaration order. Evaluation is separate from effects: a rule's
-- conditions and actions are worked out against a view of the
-- conversation, then carried out (live), or only recorded (specs, dry runs).
local channels = require("channels")
local desks = require("desks")
local helpdesk = require("helpdesk")
local livechat = require("livechat")
local S = require("schema")
local rules = { list = {}, by_name = {} }

local DEFAULT_BUDGET_MS = 50     -- CPU a rule's conditions or actions function may use per event
local DEFAULT_MAX_DEPTH = 2      -- rule-caused events that may cause rules again
local function settings() return type(config.rules) == "table" and config.rules or {} end

-- ---------------------------------------------------------------- events

-- The engine's events a rule may name, and the ones rules derive from them.
local BUS_EVENTS = {
  ["conversation.created"] = true, ["message.created"] = true, ["conversation.state_changed"] = true,
  ["conversation.assigned"] = true, ["livechat.requested"] = true, ["livechat.started"] = true,
  ["livechat.ended"] = true, ["tag.added"] = true, ["tag.removed"] = true, ["agent.status_changed"] = true,
}
-- case.new: a conversation of a channel that hands off to the built-in
-- desk was created; case.updated: anything happened to one since.
local DERIVED = { ["case.new"] = true, ["case.updated"] = true, ["schedule"] = true }
rules.EVENTS = BUS_EVENTS

local function desk_of_channel(name)
  local ch = channels.instance(name)
  return ch and ch.desk
end

-- The names a bus event goes by for rules: its own, and case.* when it is about a desk case.
function rules.names_of(ev, conv_view)
  local names = { ev.name }
  local desk = conv_view and (conv_view.desk or desk_of_channel(conv_view.channel))
  if desk and helpdesk.is_builtin(desk) then
    names[#names + 1] = ev.name == "conversation.created" and "case.new" or "case.updated"
  end
  return names
end

-- ---------------------------------------------------------------- conditions

local function lower(s) return type(s) == "string" and desks.fold(s) or s end

local function one_of(value, wanted)
  if type(wanted) == "table" then
    for _, w in ipairs(wanted) do if value == w then return true end end
    return false
  end
  return value == wanted
end

-- text conditions: "word" (contains), { contains =, matches = <Lua pattern>, case_insensitive = }
local function text_matches(text, spec)
  if type(text) ~= "string" then return false end
  if type(spec) == "string" then spec = { contains = spec, case_insensitive = true } end
  local t = spec.case_insensitive and lower(text) or text
  if spec.contains then
    local needle = spec.case_insensitive and lower(spec.contains) or spec.contains
    if not t:find(needle, 1, true) then return false end
  end
  if spec.matches then
    local pattern = spec.case_insensitive and lower(spec.matches) or spec.matches
    if not t:find(pattern) then return false end
  end
  return true
end

local function seconds_since_author(ctx, kinds)
  local msgs = ctx.messages()
  for i = #msgs, 1, -1 do
    if kinds[msgs[i].author.kind] then return ctx.now() - (msgs[i].created or 0) end
  end
  return math.huge
end

local function compare_seconds(value, spec)
  if type(spec) == "number" then spec = { more_than = spec } end
  if spec.more_than and not (value > spec.more_than) then return false end
  if spec.less_than and not (value < spec.less_than) then return false end
  return true
end

local DAYS = { mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6, sun = 7 }

-- "mon-fri 09:00-18:00, sat 10:00-14:00" at a local time {wday, hour, min}
function rules.in_hours(spec, lt)
  if type(spec) ~= "string" then return false end
  local minute = lt.hour * 60 + lt.min
  for part in spec:gmatch("[^,]+") do
    local days, from_h, from_m, to_h, to_m = part:match("^%s*([%a%-,]*)%s*(%d%d?):(%d%d)%-(%d%d?):(%d%d)%s*$")
    if not days then error("working hours: cannot read '" .. part .. "' (like \"mon-fri 09:00-18:00\")", 0) end
    local day_ok = days == "" or days == "daily" or days == "*"
    if not day_ok then
      local a, b = days:match("^(%a+)%-(%a+)$")
      if a then
        local x, y = DAYS[a], DAYS[b]
        if not x or not y then error("working hours: unknown day in '" .. part .. "'", 0) end
        day_ok = (x <= y and lt.wday >= x and lt.wday <= y) or (x > y and (lt.wday >= x or lt.wday <= y))
      else
        if not DAYS[days] then error("working hours: unknown day in '" .. part .. "'", 0) end
        day_ok = DAYS[days] == lt.wday
      end
    end
    local from, to = tonumber(from_h) * 60 + tonumber(from_m), tonumber(to_h) * 60 + tonumber(to_m)
    if day_ok and minute >= from and minute < to then return true end
  end
  return false
end

local function working_now(ctx, spec)
  local hours = spec
  if spec == true or spec == false or spec == nil then
    hours = ctx.working_hours(ctx.conv.desk, ctx.conv.group)
    if not hours then return true end           -- no hours configured: always open
  end
  return rules.in_hours(hours, ctx.local_time())
end

local COND = {}
local function field_cond(field)
  return function(ctx, wanted) return one_of(ctx.conv[field], wanted) end
end
-- state and status as they were when a message came (message.created
-- carries them), else as they are now
local function then_cond(field)
  return function(ctx, wanted)
    local d = ctx.event.data
    local v = d and d[field]
    if v == nil then v = ctx.conv[field] end
    return one_of(v, wanted)
  end
end
COND.channel = field_cond("channel")
COND.desk = field_cond("desk")
COND.group = field_cond("group")
COND.agent = field_cond("agent")
COND.state = then_cond("state")
COND.status = then_cond("status")
function COND.channel_type(ctx, wanted)
  local inst = channels.instance(ctx.conv.channel)
  return one_of(inst and inst.type, wanted)
end
function COND.channel_kind(ctx, wanted) return one_of(channels.kind(ctx.conv.channel), wanted) end
function COND.tags(ctx, wanted)
  local have = {}
  for _, t in ipairs(ctx.conv.tags or {}) do have[t] = true end
  for _, t in ipairs(type(wanted) == "table" and wanted or { wanted }) do
    if not have[t] then return false end
  end
  return true
end
function COND.no_tag(ctx, wanted)
  for _, t in ipairs(ctx.conv.tags or {}) do
    if one_of(t, wanted) then return false end
  end
  return true
end
function COND.author(ctx, wanted)
  local a = ctx.event.data and ctx.event.data.author
  return one_of(a and a.kind, wanted)
end
function COND.text(ctx, spec)
  local d = ctx.event.data or {}
  return text_matches(d.text, spec)
end
function COND.reason(ctx, wanted) return one_of(ctx.event.data and ctx.event.data.reason, wanted) end
function COND.page_url(ctx, pattern)
  local c = ctx.conv.client or {}
  local url_ = c.page_url or c.start_page
  return type(url_) == "string" and url_:find(pattern) ~= nil
end
function COND.client(ctx, spec)
  local c = ctx.conv.client or {}
  for k, want in pairs(spec) do
    local v = c[k]
    if type(want) == "string" and type(v) == "string" then
      if not v:find(want) then return false end
    elseif v ~= want then
      return false
    end
  end
  return true
end
function COND.custom(ctx, spec)
  local custom = (ctx.conv.client or {}).custom or {}
  for k, want in pairs(spec) do
    local v = custom[k]
    if type(v) == "table" then v = v.value end
    if not one_of(v, want) then return false end
  end
  return true
end
function COND.agents_online(ctx, spec)
  local group, want = ctx.conv.group, true
  if type(spec) == "table" then group, want = spec.group or group, spec.online ~= false
  else want = spec == true end
  return ctx.agents_online(ctx.conv.desk, group) == want
end
function COND.working_hours(ctx, spec)
  if spec == false then return not working_now(ctx, nil) end
  return working_now(ctx, spec)
end
function COND.outside_working_hours(ctx, spec)
  return not working_now(ctx, spec ~= true and spec or nil)
end
function COND.since_client(ctx, spec) return compare_seconds(seconds_since_author(ctx, { client = true }), spec) end
function COND.since_agent(ctx, spec) return compare_seconds(seconds_since_author(ctx, { agent = true }), spec) end
function COND.only_bot_messages(ctx, wanted)
  local only, any = true, false
  for _, m in ipairs(ctx.messages()) do
    local k = m.author.kind
    if k == "client" or k == "agent" then only = false end
    if k == "bot" then any = true end
  end
  return (only and any) == (wanted ~= false)
end
function COND.event(ctx, wanted) return one_of(ctx.event.name, wanted) end

local check_conditions
local function holds(ctx, cond)
  for key, want in pairs(cond) do
    if key == "any" then
      local ok = false
      for _, c in ipairs(want) do
        if holds(ctx, c) then ok = true break end
      end
      if not ok then return false end
    elseif key == "not" then
      if holds(ctx, want) then return false end
    elseif not COND[key](ctx, want) then
      return false
    end
  end
  return true
end

-- Every key known, at declaration: a typo fails the load at the rule.
function check_conditions(cond, where)
  if type(cond) ~= "table" then error(where .. ": when must be a table of conditions or a function", 0) end
  for key, want in pairs(cond) do
    if key == "any" then
      if type(want) ~= "table" or #want == 0 then error(where .. ": any must be a list of condition tables", 0) end
      for i, c in ipairs(want) do check_conditions(c, where .. " any[" .. i .. "]") end
    elseif key == "not" then
      check_conditions(want, where .. " not")
    elseif not COND[key] then
      error(where .. ": unknown condition '" .. tostring(key) .. "'", 0)
    elseif key == "working_hours" or key == "outside_working_hours" then
      if type(want) == "string" then rules.in_hours(want, { wday = 1, hour = 0, min = 0 }) end
    end
  end
end

-- ---------------------------------------------------------------- actions

-- {key} placeholders in texts: {client.name}, {conversation.id}, {text}, {group}, {rule}.
local function fill(template, ctx, rule)
  if type(template) ~= "string" then return template end
  local c = ctx.conv or {}
  local values = {
    ["client.name"] = (c.client or {}).name or "", ["client.email"] = (c.client or {}).email or "",
    ["conversation.id"] = c.id or "", channel = c.channel or "", group = c.group or "", agent = c.agent or "",
    text = ctx.event.data and ctx.event.data.text or "", rule = rule.name,
  }
  return (template:gsub("{([%w_.]+)}", function(k) return values[k] end))
end

local ACTIONS = {
  reply = "string", note = "string", assign_group = "string", assign_agent = "string", set_status = "string",
  end_chat = "any", hand_to_bot = "any", add_tag = "string", remove_tag = "string", set_field = "table",
  notify = "table",
}
local CASE_STATUSES = { open = true, pending = true, solved = true, closed = true }

-- An action table names one action: { reply = "..." }, { end_chat = { status = "pending" } }.
local function action_of(a, where)
  if type(a) ~= "table" then error(where .. ": an action must be a table like { reply = \"...\" }", 0) end
  local name
  for k in pairs(a) do
    if ACTIONS[k] then
      if name then error(where .. ": one action per table, not " .. name .. " and " .. k, 0) end
      name = k
    elseif k ~= "text" then
      error(where .. ": unknown action '" .. tostring(k) .. "'", 0)
    end
  end
  if not name then error(where .. ": the table names no action", 0) end
  local kind = ACTIONS[name]
  if kind ~= "any" and type(a[name]) ~= kind then error(where .. ": " .. name .. " takes a " .. kind, 0) end
  if name == "set_status" and not CASE_STATUSES[a[name]] then
    error(where .. ": set_status is open, pending, solved or closed", 0)
  end
  if name == "notify" then
    local n = a.notify
    local target = n.to and type(config.notify) == "table" and config.notify[n.to]
    if n.url == nil and not target then
      error(where .. ": notify needs `to` (a target of config.notify) or `url`", 0)
    end
  end
  return name
end

local function check_actions(list, where)
  if type(list) ~= "table" then error(where .. ": actions must be a list of action tables or a function", 0) end
  for i, a in ipairs(list) do action_of(a, where .. " actions[" .. i .. "]") end
end

-- What a notify action sends: { url, headers, body } (the secret parts as ${notify.<to>.*} references).
function rules.notification(n, text)
  local target = n.to and config.notify and config.notify[n.to]
  if not target then return { url = n.url, body = n.body or { text = text } } end
  local kind = target.type or "webhook"
  if kind == "slack" then
    return { url = "${notify." .. n.to .. ".url}", body = { text = text } }
  elseif kind == "telegram" then
    local base = (target.api_base or "https://api.telegram.org"):gsub("/+$", "")
    return { url = base .. "/bot${notify." .. n.to .. ".token}/sendMessage",
             body = { chat_id = n.chat_id or target.chat_id, text = text } }
  end
  return { url = "${notify." .. n.to .. ".url}", body = n.body or { text = text } }
end

-- The live effects of actions on a conversation handle.
local LIVE = {}
function LIVE.reply(conv, text, rule)
  local m = conv:append{ author = { kind = "system", name = rule.name }, text = text }
  channels.send(conv, m)
end
function LIVE.note(conv, text, rule) conv:append{ author = { kind = "note", name = "rule " .. rule.name }, text = text } end
function LIVE.assign_group(conv, group)
  local data = conv.data
  if data.livechat then data.livechat.group = group end
  local fields = { group = group, data = data }
  if conv.state == "queued" then fields.agent = false end   -- a waiting chat is offered in its new group
  conv:set(fields)
  if conv.desk and helpdesk.is_builtin(conv.desk) then helpdesk.offer_soon(conv.desk, conv) end
end
function LIVE.assign_agent(conv, agent) conv:set{ agent = agent } end
function LIVE.set_status(conv, status) conv:set{ status = status } end
function LIVE.end_chat(conv, spec)
  local desk = conv.desk
  if not livechat.finish(conv, "rule") then error("no live chat to end", 0) end
  if type(spec) == "table" and spec.status then conv:set{ status = spec.status } end
  if desk and helpdesk.is_builtin(desk) then helpdesk.ended(desk, conv, "rule") end
end
function LIVE.hand_to_bot(conv)
  if not livechat.finish(conv, "rule") then error("no live chat to end", 0) end
  conv:set_state("bot", "handed to the bot")
end
function LIVE.add_tag(conv, tag) conv:tag(tag) end
function LIVE.remove_tag(conv, tag) conv:untag(tag) end
function LIVE.set_field(conv, f)
  local client = conv.client
  client.custom = client.custom or {}
  client.custom[f.key] = { value = f.value, label = f.label }
  conv:set{ client = client }
end
function LIVE.notify(conv, n, rule, text)
  local call = rules.notification(n, text)
  outbox.send{ conversation = conv, target = "notify:" .. (n.to or "url"), url = call.url, body = call.body,
               lane = "rules:notify:" .. (n.to or "url") }
end

-- ---------------------------------------------------------------- declaring rules

local function caller_position()
  -- error's level 3 from here: the line of the `rule "..." {}` in the rule file
  local _, where = pcall(error, "", 4)
  return (where or ""):gsub(":%s*$", "")
end

local function check_on(on, where)
  local list = type(on) == "table" and on or { on }
  if #list == 0 then error(where .. ": on names no event", 0) end
  local set = {}
  for _, name in ipairs(list) do
    if not (BUS_EVENTS[name] or DERIVED[name]) then
      error(where .. ": unknown event '" .. tostring(name) .. "' (docs/rules.md lists them)", 0)
    end
    set[name] = true
  end
  return set
end

-- rules.declare(spec, position, registry): checks and registers one rule.
function rules.declare(name, spec, where, registry)
  registry = registry or rules
  if type(name) ~= "string" or not name:match("^[%w_.:%-]+$") or #name > 100 then
    error(where .. ": a rule's name is 1-100 letters, digits, _ . : -", 0)
  end
  if registry.by_name[name] then
    error(where .. ": a rule named '" .. name .. "' is already declared at " .. registry.by_name[name].where, 0)
  end
  if type(spec) ~= "table" then error(where .. ": rule \"" .. name .. "\" takes a table { on =, when =, actions = }", 0) end
  for k in pairs(spec) do
    if not ({ on = true, when = true, actions = true, stop = true, every = true, at = true, tz = true, scope = true,
              description = true })[k] then
      error(where .. ": unknown field '" .. tostring(k) .. "' in rule " .. name, 0)
    end
  end
  local r = { name = name, where = where, stop = spec.stop == true, when = spec.when, actions = spec.actions,
              description = spec.description }
  if spec.every or spec.at then
    if spec.on then error(where .. ": a rule has on (events) or every/at (a schedule), not both", 0) end
    r.schedule = { every = spec.every, at = spec.at, tz = spec.tz }
    r.scope = spec.scope or {}
    if type(r.scope) ~= "table" then error(where .. ": scope must be a table of store filters", 0) end
    for k in pairs(r.scope) do
      if not ({ desk = true, group = true, agent = true, state = true, status = true, channel = true })[k] then
        error(where .. ": scope: unknown filter '" .. tostring(k) .. "' (desk, group, agent, state, status, channel)", 0)
      end
    end
    r.on = { schedule = true }
  else
    r.on = check_on(spec.on, where)
  end
  if type(r.when) ~= "function" and r.when ~= nil then check_conditions(r.when, where) end
  if type(r.actions) ~= "function" then check_actions(r.actions, where) end
  registry.list[#registry.list + 1] = r
  registry.listens = registry.listens or {}
  for n in pairs(r.on) do registry.listens[n] = true end
  registry.by_name[name] = r
  return r
end

-- rule "name" { ... } in rules/*.lua. The bus subscription comes with the
-- first rule on events: a load without such rules costs no job per event.
function rule(name)
  local where = caller_position()
  return function(spec)
    local r = rules.declare(name, spec, where)
    if r.schedule then rules.schedule(r) end
    if not r.schedule and not rules.subscribed then
      events.on("*", "rules.on_event", { id = "rules" })
      rules.subscribed = true
    end
    return r
  end
end

-- "5m", "30s", "2h", or a number of seconds
local function interval_of(v)
  if type(v) == "number" then return v end
  local n, unit = tostring(v):match("^(%d+)%s*([smhd]?)$")
  if not n then return nil end
  return tonumber(n) * (({ s = 1, m = 60, h = 3600, d = 86400 })[unit] or 1)
end

function rules.schedule(r)
  local s = r.schedule
  if s.every then
    local seconds = interval_of(s.every)
    if not seconds or seconds < 1 then error(r.where .. ": every is a duration like \"5m\" (at least 1 s)", 0) end
    timer.every(seconds, "rules.tick", { rule = r.name })
  else
    -- a bad calendar or zone is the rule's mistake: said at its line
    local ok, err = pcall(timer.every, s.tz and { at = s.at, tz = s.tz } or s.at, "rules.tick", { rule = r.name })
    if not ok then
      err = tostring(err)
      error(r.where .. ": at: " .. (err:match("%((.*)%)%s*$") or err), 0)
    end
  end
end

-- ---------------------------------------------------------------- evaluating

-- The context a rule is worked out in. live: a conversation handle and the
-- real clock; specs and dry runs give their own (rules_spec.lua).
function rules.live_context(ev, conv)
  local cached
  return {
    event = ev, conv = conv or {},     -- agent.status_changed has no conversation
    now = now,
    messages = function()
      if not cached then cached = conv and conv:messages(50) or {} end
      return cached
    end,
    local_time = function() return timer.local_time(now()) end,
    working_hours = function(desk, group) return rules.working_hours(desk, group) end,
    agents_online = function(desk, group) return desk and group and desks.has_online(desk, group) or false end,
  }
end

function rules.working_hours(desk, group)
  local inst = desk and desks.instance(desk)
  local g = inst and type(inst.groups) == "table" and inst.groups[group]
  return g and g.working_hours or (inst and inst.working_hours) or nil
end

local function run_bounded(fn, ...)
  return bounded(tonumber(settings().budget_ms) or DEFAULT_BUDGET_MS, fn, ...)
end

-- What the rules of `registry` do on one event: a list of
-- { rule =, actions = { {name, arg, text} }, error = } in order, stopping
-- after a rule with stop = true that fired.
function rules.evaluate(registry, names, ctx)
  local fired = {}
  for _, r in ipairs(registry.list) do
    local wanted = false
    for _, n in ipairs(names) do if r.on[n] then wanted = true break end end
    if wanted then
      local ok, yes
      if type(r.when) == "function" then
        ok, yes = run_bounded(r.when, ctx.event, ctx.conv)
      elseif r.when then
        ok, yes = run_bounded(holds, ctx, r.when)
      else
        ok, yes = true, true
      end
      if not ok then
        fired[#fired + 1] = { rule = r, error = tostring(yes) }
      elseif yes then
        local list = r.actions
        if type(list) == "function" then
          local ok2, out = run_bounded(list, ctx.event, ctx.conv)
          if not ok2 then list = nil; fired[#fired + 1] = { rule = r, error = tostring(out) }
          else
            list = out
            local valid, why = pcall(check_actions, list or {}, r.where)
            if not valid then fired[#fired + 1] = { rule = r, error = tostring(why) }; list = nil end
          end
        end
        if list then
          local planned = {}
          for _, a in ipairs(list) do
            local name = action_of(a, r.where)
            local arg = a[name]
            local text = name == "notify" and fill(arg.text or a.text, ctx, r) or nil
            if type(arg) == "string" then arg = fill(arg, ctx, r) end
            planned[#planned + 1] = { name = name, arg = arg, text = text }
          end
          fired[#fired + 1] = { rule = r, actions = planned }
          if r.stop then break end
        end
      end
    end
  end
  return fired
end

-- Carries out what fired on a live conversation and journals each rule
-- that fired: its name, the runtime generation, each action done or failed.
local function apply(conv, ev, fired)
  for _, f in ipairs(fired) do
    if f.error then
      log.error("rule failed and was skipped", { rule = f.rule.name, where = f.rule.where, error = f.error,
                                                 event = ev.name, conversation = conv and conv.id })
      if conv then
        conv:journal("rule_failed", { rule = f.rule.name, where = f.rule.where, error = f.error,
                                      event = ev.name, event_id = ev.id, generation = generation() })
      end
    else
      local done = {}
      for _, a in ipairs(f.actions) do
        local ok, err = true, nil
        if conv or a.name == "notify" then
          ok, err = pcall(LIVE[a.name], conv, a.arg, f.rule, a.text)
        else
          ok, err = false, "no conversation"   -- an agent's status change: notify only
        end
        done[#done + 1] = { action = a.name, ok = ok, error = not ok and tostring(err) or nil }
        if not ok then
          log.warn("rule action failed", { rule = f.rule.name, action = a.name, error = tostring(err),
                                           conversation = conv and conv.id })
        end
      end
      if conv then
        conv:journal("rule", { rule = f.rule.name, event = ev.name, event_id = ev.id,
                               generation = generation(), actions = done })
      end
    end
  end
end

local function seen_key(id) return "rules:seen:" .. tostring(id) end

-- The bus's handler: every event, each rule once per event.
function rules.on_event(ev)
  -- an event no rule names (nor a case event it may stand for) costs no
  -- look-up of its conversation
  local listens = rules.listens or {}
  if not (listens[ev.name] or listens["case.new"] or listens["case.updated"]) then return end
  local max_depth = tonumber(settings().max_depth) or DEFAULT_MAX_DEPTH
  if (ev.depth or 0) > max_depth then
    log.warn("rules skipped an event caused by rules too many times over (loop guard)",
             { event = ev.name, depth = ev.depth, conversation = ev.conversation })
    return
  end
  -- rules act on what is happening: a backlog (rules back after a while
  -- without, a long stop) is not replayed into auto-replies
  local max_age = tonumber(settings().max_event_age) or 300
  if ev.at and now() - ev.at > max_age then return end
  if state.get(seen_key(ev.id)) then return end    -- delivered again after a crash
  local conv = ev.conversation and ev.conversation ~= "" and conversations.get(ev.conversation) or nil
  local fired = rules.evaluate(rules, rules.names_of(ev, conv), rules.live_context(ev, conv))
  if #fired == 0 then return end
  apply(conv, ev, fired)
  state.set(seen_key(ev.id), true, (config.conversations and config.conversations.dedupe_window) or 86400)
end

-- A registry of one rule: a schedule runs only its own rule.
function rules.only(r) return { list = { r }, by_name = { [r.name] = r } } end

-- A scheduled rule: its `when` over the conversations its scope selects
-- (store filters: desk, group, agent, state, status, channel).
function rules.tick(data)
  local r = rules.by_name[data.rule]
  if not r then return end
  local scope = {}
  for k, v in pairs(r.scope or {}) do scope[k] = v end
  scope.limit = 200
  local text = conversations.read("conversations", scope)
  local page = text and json.decode(text) or {}
  for _, c in ipairs(page.conversations or {}) do
    local conv = conversations.get(c.id)
    if conv then
      local ev = { name = "schedule", at = now(), data = { rule = r.name } }
      local fired = rules.evaluate(rules.only(r), { "schedule" },
                                   rules.live_context(ev, conv))
      apply(conv, ev, fired)
    end
  end
end

return rules
