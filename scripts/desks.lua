-- Desk instances (config.desks) and their adapters. A desk adapter
-- (providers/<type>.lua) registers with `desks.adapters[type] = adapter` and
-- implements:
--   adapter.destinations(name, inst)            -> { [group] = { name =, online = bool } } | nil, err   (may yield)
--   adapter.open(name, inst, conv, group, opts)  -- opts: first_message, history, attributes,
--                                                --       hidden_attributes, custom_data, theme
--   adapter.send_client_message(name, inst, conv, message)
--   adapter.close(name, inst, conv, text)        -- the engine or the client ended the chat
-- and calls desks.agent_message / desks.agent_closed / desks.group_changed for
-- what the desk's webhooks report.
desks = adapter_registry("desks")

-- The desk a channel hands conversations to: name, config, adapter.
function desks.for_channel(channel)
  local ch = channels.instance(channel)
  local name = ch and ch.desk
  if not name then return nil end
  local adapter, inst = desks.resolve(name)
  return name, inst, adapter
end

-- Known destinations of a desk (groups), or nil when the desk cannot tell.
function desks.destinations(name)
  local adapter, inst = desks.resolve(name)
  if not adapter or not adapter.destinations then return nil, "no such desk" end
  return adapter.destinations(name, inst)
end

-- Would a switch to `group` on desk `name` find an agent now?
function desks.has_online(name, group)
  local known = desks.destinations(name)
  local d = known and group and known[tostring(group)]
  return d ~= nil and d.online == true
end

-- JAICP's hasOperatorsOnline(); the desk defaults to the first configured one.
function hasOperatorsOnline(group, desk)
  if not desk and config.desks then
    for name in pairs(config.desks) do desk = name break end
  end
  return desk ~= nil and desks.has_online(desk, group)
end

local function call(name, fn, ...)
  local adapter, inst = desks.resolve(name)
  if not adapter or not adapter[fn] then
    log.error("desk cannot do this", { desk = tostring(name), action = fn })
    return false
  end
  adapter[fn](name, inst, ...)
  return true
end

function desks.open(name, conv, group, opts) return call(name, "open", conv, group, opts) end
function desks.close(name, conv, text) return call(name, "close", conv, text) end

-- Lower case for the scripts close phrases are usually written in: ASCII,
-- Latin-1, Latin Extended-A, Greek and Cyrillic (string.lower knows ASCII only).
local function lower_codepoint(c)
  if c < 0x80 then
    if c >= 0x41 and c <= 0x5A then return c + 32 end
  elseif (c >= 0xC0 and c <= 0xDE and c ~= 0xD7) then return c + 32
  elseif c >= 0x100 and c <= 0x17F then
    if (c >= 0x139 and c <= 0x148) or (c >= 0x179 and c <= 0x17E) then
      if c % 2 == 1 then return c + 1 end
    elseif c % 2 == 0 and c ~= 0x138 then return c + 1 end
  elseif c >= 0x391 and c <= 0x3AB and c ~= 0x3A2 then return c + 32
  elseif c >= 0x410 and c <= 0x42F then return c + 32
  elseif c >= 0x400 and c <= 0x40F then return c + 80
  end
  return c
end

local function fold(s)
  if not utf8.len(s) then return s:lower() end
  local out = {}
  for _, c in utf8.codes(s) do out[#out + 1] = utf8.char(lower_codepoint(c)) end
  return table.concat(out)
end
desks.fold = fold

local function trim_lower(s)
  return fold((s:gsub("^%s+", ""):gsub("%s+$", "")))
end

-- A client message while the conversation is queued for or with an agent.
function desks.client_message(conv, m)
  local lc = conv.data.livechat
  if not lc then
    log.warn("client message in an agent state without a live chat", { conversation = conv.id })
    conv:journal("undelivered", { message = m.id, reason = "no live chat" })
    return
  end
  local said = trim_lower(m.text or "")
  for _, phrase in ipairs(lc.close_phrases or {}) do
    if said ~= "" and said == trim_lower(phrase) then
      livechat.closed_by_client(conv, m)
      return
    end
  end
  livechat.touch(conv)
  call(lc.desk, "send_client_message", conv, m)
end

-- An agent's message from the desk: the first one makes a queued chat the agent's.
-- msg = { text =, attachments =, employee = { id =, name = }, dedupe_key = }
function desks.agent_message(conv, msg)
  local employee = msg.employee or {}
  local m = conv:append{
    author = { kind = "agent", name = employee.name, id = employee.id },
    text = msg.text or "", attachments = msg.attachments, dedupe_key = msg.dedupe_key,
  }
  if m.duplicate then return m end
  if conv.state == "queued" then
    conv:set_state("agent", "agent answered")
  end
  if employee.name or employee.id then
    conv:set{ agent = employee.name or employee.id }
  end
  if conv.data.livechat then livechat.touch(conv) end
  channels.send(conv, m)
  return m
end

-- The agent ended the chat on the desk.
function desks.agent_closed(conv)
  livechat.finish(conv, "agent")
end

-- The desk moved the chat to another group.
function desks.group_changed(conv, group)
  conv:set{ group = group }
  local data = conv.data
  if data.livechat then
    data.livechat.group = group
    conv:set{ data = data }
  end
end
