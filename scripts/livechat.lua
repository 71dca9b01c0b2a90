-- Bot switch handling: a bot's `switch` reply hands the conversation to an
-- agent group on the channel's desk; the chat ends on a close phrase, when
-- the agent ends it, after inactivity, or by the API/a rule, and the bot gets
-- the conversation back. Field reference: docs/handoff.md.
local bots = require("bots")
local channels = require("channels")
local desks = require("desks")
local routing = require("routing")
local livechat = {}

local FIELDS = {
  destination = "destination", firstMessage = "first_message", lastMessage = "last_message",
  closeChatPhrases = "close_chat_phrases", appendCloseChatButton = "append_close_chat_button",
  ignoreOffline = "ignore_offline", oneTimeMessage = "one_time_message", theme = "theme",
  sendMessagesToOperator = "send_messages_to_operator",
  sendMessageHistoryAmount = "send_message_history_amount", attributes = "attributes",
  hiddenAttributes = "hidden_attributes", customData = "custom_data",
}

local MAX_HISTORY = 50

local function str(v) return type(v) == "string" and v or nil end
local function tbl(v) return type(v) == "table" and v or nil end

-- A switch reply with JAICP's camelCase fields or their snake_case forms,
-- as the engine uses them (snake_case, checked types).
function livechat.normalize(r)
  local s = {}
  for camel, snake in pairs(FIELDS) do
    local v = r[camel]
    if v == nil then v = r[snake] end
    if v == json.null then v = nil end
    s[snake] = v
  end
  s.destination = routing.id_of(s.destination)
  s.first_message = str(s.first_message)
  s.last_message = str(s.last_message)
  s.theme = str(s.theme)
  local phrases = {}
  for _, p in ipairs(tbl(s.close_chat_phrases) or {}) do
    if type(p) == "string" and p ~= "" then phrases[#phrases + 1] = p end
  end
  s.close_chat_phrases = phrases
  for _, k in ipairs({ "append_close_chat_button", "ignore_offline", "one_time_message",
                       "send_messages_to_operator" }) do
    s[k] = s[k] == true
  end
  local n = tonumber(s.send_message_history_amount)
  s.send_message_history_amount = n and math.max(0, math.min(MAX_HISTORY, math.floor(n))) or 0
  s.attributes = tbl(s.attributes)
  s.hidden_attributes = tbl(s.hidden_attributes)
  s.custom_data = tbl(s.custom_data)
  return s
end

-- What a Lua bot returns to switch: handoff{destination = "15", close_chat_phrases = {...}, ...}
function handoff(fields)
  local r = { type = "switch" }
  for k, v in pairs(fields or {}) do r[k] = v end
  return r
end

-- Decides what a switch does, before the bot's messages are stored:
-- { action = "switch" | "one_time" | "offline" | "error", desk, group, rule, reason, sw }
function livechat.plan(conv, sw)
  local name, desk, adapter = desks.for_channel(conv.channel)
  if not adapter then
    return { action = "error", sw = sw, reason = "no desk configured for channel " .. conv.channel }
  end
  local known, err = desks.destinations(name)
  if not known then
    log.warn("desk destinations unavailable", { desk = name, error = tostring(err) })
  end
  local requested = sw.destination
  local mapped_why
  if not requested then
    -- no destination in the switch: the desk may map the client's platform
    -- group or the page the chat started on to a group (then rule 1 applies)
    local client, page = conv.client, conv.client.start_page or conv.client.page_url
    requested, mapped_why = routing.map_group(channels.instance(conv.channel), client.group, page)
    if not requested then requested, mapped_why = routing.map_group(desk, client.group, page) end
  end
  -- a desk without an admin_recipient of its own may have a default one
  -- (Chat2Desk's: the account's administrator, no transfer)
  local group, rule, reason = routing.resolve(requested, {
    default_group = desk.default_group, admin_recipient = desk.admin_recipient or adapter.default_recipient,
  }, known)
  if mapped_why and rule == 1 then reason = "mapped from " .. mapped_why end
  -- a desk that knows a group by name and by id gives its id: the group
  -- is kept and sent as the desk's id whichever the bot named
  if group and known and known[group] and known[group].id then group = known[group].id end
  local plan = { desk = name, group = group, rule = rule, reason = reason, sw = sw }
  if not group then
    plan.action, plan.reason = "error", reason
  elseif sw.one_time_message then
    plan.action = "one_time"
  elseif not sw.ignore_offline and not (known and known[group] and known[group].online) then
    plan.action = "offline"
  else
    plan.action = "switch"
  end
  return plan
end

local function last_client_text(conv)
  local recent = conv:messages()
  for i = #recent, 1, -1 do
    if recent[i].author.kind == "client" then return recent[i].text end
  end
  return ""
end

-- The last n client and bot messages, oldest first, marked by author.
local function history(conv, n)
  if n <= 0 then return nil end
  local out, recent = {}, conv:messages()
  for i = #recent, 1, -1 do
    local kind = recent[i].author.kind
    if kind == "client" or kind == "bot" then
      table.insert(out, 1, { author = kind, name = recent[i].author.name, text = recent[i].text })
      if #out == n then break end
    end
  end
  return out
end

function livechat.timeout_for(desk_name, group)
  local adapter, desk = desks.resolve(desk_name)
  desk = desk or {}
  if adapter and adapter.inactivity_timeout then
    local t = adapter.inactivity_timeout(desk_name, desk, group)
    if t then return t end
  end
  local per_group = tbl(desk.group_inactivity)
  return (per_group and tonumber(per_group[group])) or tonumber(desk.inactivity_timeout) or 600
end

-- Carries out a plan after the bot's messages went out.
function livechat.execute(conv, plan, bot_name)
  local sw = plan.sw
  -- Planning asked the desk (an HTTP call that yields), and meanwhile
  -- another reply path may have switched: this switch was meant for a
  -- conversation the bot has, and carrying it out would open a second desk
  -- session and overwrite the live chat's data.
  if conv.state ~= "bot" then
    conv:journal("switch_skipped", {
      action = plan.action, desk = plan.desk, group = plan.group, bot = bot_name, state = conv.state,
      reason = "the conversation is no longer with the bot",
    })
    log.info("switch skipped: the conversation is no longer with the bot",
             { conversation = conv.id, state = conv.state })
    return
  end
  conv:journal("switch", {
    action = plan.action, desk = plan.desk, group = plan.group, rule = plan.rule,
    reason = plan.reason, destination = sw.destination, bot = bot_name, theme = sw.theme,
  })
  if plan.action == "error" then
    log.error("switch failed", { conversation = conv.id, reason = plan.reason })
    bots.event(conv, "noLivechatOperatorsOnline", { reason = plan.reason })
    return
  end
  if plan.action == "offline" then
    bots.event(conv, "noLivechatOperatorsOnline", { group = plan.group, desk = plan.desk })
    return
  end
  local opts = {
    first_message = sw.first_message or last_client_text(conv),
    -- a desk whose agents already see the chat (Jivo) sends only what the bot chose
    first_message_explicit = sw.first_message ~= nil,
    history = sw.send_messages_to_operator and history(conv, sw.send_message_history_amount) or nil,
    attributes = sw.attributes, hidden_attributes = sw.hidden_attributes,
    custom_data = sw.custom_data, theme = sw.theme,
  }
  if plan.action == "one_time" then
    desks.one_time(plan.desk, conv, plan.group, opts)
    return
  end
  local data = conv.data
  data.livechat = {
    desk = plan.desk, group = plan.group, close_phrases = sw.close_chat_phrases,
    last_message = sw.last_message, bot = bot_name, started = now(), last_activity = now(),
    ignore_offline = sw.ignore_offline or nil,
  }
  conv:set{ desk = plan.desk, group = plan.group, data = data, agent = false }   -- a new chat has no agent yet
  conv:set_state("queued", "switch")
  desks.open(plan.desk, conv, plan.group, opts)
  livechat.arm_inactivity(conv, livechat.timeout_for(plan.desk, plan.group))
end

-- Inactivity: one timer per live chat; it re-arms itself for what is left
-- when something happened meanwhile, so activity costs no timer writes.
function livechat.arm_inactivity(conv, delay)
  local data = conv.data
  if not data.livechat then return end
  data.livechat.timer = timer.after(delay, "livechat.inactivity", { conversation = conv.id })
  conv:set{ data = data }
end

function livechat.touch(conv)
  local data = conv.data
  if not data.livechat then return end
  data.livechat.last_activity = now()
  conv:set{ data = data }
end

function livechat.inactivity(data, id)
  local conv = conversations.get(data.conversation)
  if not conv then return end
  local lc = conv.data.livechat
  if not lc or lc.timer ~= id then return end          -- ended, or an older timer
  local limit = livechat.timeout_for(lc.desk, lc.group)
  local idle = now() - (lc.last_activity or lc.started or 0)
  if idle + 0.001 < limit then
    livechat.arm_inactivity(conv, limit - idle)
    return
  end
  livechat.finish(conv, "inactivity")
end

-- Ends the live chat: tells the desk (unless the agent ended it), sends
-- lastMessage to the client, journals the reason, and gives the
-- conversation back to the bot (with livechatFinished, except when the
-- client's close phrase is itself passed to the bot).
-- reason: "client" | "agent" | "inactivity" | "api" | "rule". Returns true if a chat ended.
local END_REASONS = { client = true, agent = true, inactivity = true, api = true, rule = true }

function livechat.finish(conv, reason, opts)
  if not END_REASONS[reason] then
    error("livechat.finish: reason must be client, agent, inactivity, api or rule, got " .. tostring(reason), 2)
  end
  opts = opts or {}
  local data = conv.data
  local lc = data.livechat
  if not lc or (conv.state ~= "queued" and conv.state ~= "agent") then return false end
  if reason ~= "agent" or opts.tell_desk then
    desks.close(lc.desk, conv, reason == "client" and "The user closed the chat"
                               or ("The chat was closed: " .. reason), reason)
  end
  if lc.timer then timer.cancel(lc.timer) end
  data.livechat = nil
  data.last_livechat = { desk = lc.desk, group = lc.group, ended = now(), reason = reason }
  -- a desk whose ended chats are cases keeps the agent on the case
  local adapter = desks.resolve(lc.desk)
  local fields = { data = data }
  if not (adapter and adapter.keeps_agent) then fields.agent = false end
  conv:set(fields)
  conv:set_state("closed", reason)
  conv:journal("livechat_finished", { reason = reason, desk = lc.desk, group = lc.group })
  if lc.last_message and lc.last_message ~= "" then
    local m = conv:append{ author = { kind = "system" }, text = lc.last_message }
    channels.send(conv, m)
  end
  if opts.defer_event then
    -- a platform where the chat is over until the client writes again
    -- (Jivo): the bot gets the event just before that message
    data = conv.data
    data.deferred_bot_events = { { event = "livechatFinished", data = { reason = reason } } }
    conv:set{ data = data }
  elseif not opts.quiet then
    bots.event(conv, "livechatFinished", { reason = reason })
  end
  return true
end

-- Bot events held back by finish{defer_event}: sent now, before the
-- client message that follows, in the bot's lane (so in that order).
function livechat.flush_deferred_events(conv)
  local data = conv.data
  local pending = data.deferred_bot_events
  if not pending then return end
  data.deferred_bot_events = nil
  conv:set{ data = data }
  for _, e in ipairs(pending) do bots.event(conv, e.event, e.data) end
end

-- The desk could not give the chat to an agent (Jivo's AGENT_UNAVAILABLE)
-- while it was queued: a switch with ignoreOffline keeps waiting; any
-- other goes back to the bot with noLivechatOperatorsOnline, as when no
-- agent was online at the switch. Returns what was done: "waiting" or "returned".
function livechat.unavailable(conv)
  local data = conv.data
  local lc = data.livechat
  if lc.ignore_offline then
    conv:journal("livechat_unavailable", { desk = lc.desk, group = lc.group, action = "waiting" })
    return "waiting"
  end
  if lc.timer then timer.cancel(lc.timer) end
  data.livechat = nil
  conv:set{ data = data, agent = false }
  conv:set_state("bot", "no agent available")
  conv:journal("livechat_unavailable", { desk = lc.desk, group = lc.group, action = "returned" })
  bots.event(conv, "noLivechatOperatorsOnline", { group = lc.group, desk = lc.desk })
  return "returned"
end

-- A channel without a bot whose chats go to its desk (a website live chat
-- into the built-in desk): the message the bot would have got opens a live
-- chat, as a switch with ignoreOffline and no destination (the channel's or
-- the desk's group_map and page_routes, else the desk's default group).
function livechat.direct(conv)
  local plan = livechat.plan(conv, livechat.normalize({ ignoreOffline = true }))
  livechat.execute(conv, plan, nil)
end

-- The client typed a close phrase: end the chat, then the phrase goes to
-- the bot as a normal message (JAICP behaviour).
function livechat.closed_by_client(conv, m)
  livechat.finish(conv, "client", { quiet = true })
  conv:set_state("bot", "close phrase")
  bots.deliver(conv, m)
end

return livechat
