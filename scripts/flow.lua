-- Conversation flow: what happens to a client message, and how bot replies
-- become messages to the client.
local bots = require("bots")
local channels = require("channels")
local desks = require("desks")
local livechat = require("livechat")
local flow = {}

local profile_fields = {
  name = true, email = true, phone = true, page_url = true, start_page = true, ip = true,
  language = true, browser = true, os = true, location = true, last_visit = true, custom = true,
  group = true,   -- the platform's group/department id, for routing (docs/handoff.md)
}
flow.profile_fields = profile_fields

-- Merges new profile values into the stored profile; writes only on change.
local function merge_profile(conv, incoming)
  if type(incoming) ~= "table" then return end
  local profile, changed = conv.client, false
  for k, v in pairs(incoming) do
    if type(v) == "table" then
      if json.encode(v) ~= json.encode(profile[k] or json.null) then profile[k] = v; changed = true end
    elseif profile[k] ~= v then
      profile[k] = v; changed = true
    end
  end
  if changed then conv:set{ client = profile } end
end

-- An inbound client message from a channel adapter.
-- msg = { text =, attachments =, client = profile, dedupe_key =, provider_ids = }
-- Returns conv, message; message.duplicate is true for a repeated dedupe_key
-- (remembered per conversation for conversations.dedupe_window).
function flow.client_message(channel, client_id, msg)
  -- Held by this job from here on: a retry of the same message waits for
  -- this one to end, then sees its key (or, if this one failed, nothing).
  local conv, created = conversations.find_or_create(channel, client_id, msg.client)
  if msg.dedupe_key and not created then
    local mid = conv:seen(msg.dedupe_key)
    if mid then return conv, { id = mid, duplicate = true } end
  end
  if not created then merge_profile(conv, msg.client) end
  local reopened = conv.state == "closed"
  if reopened then conv:set_state("bot", "client message") end
  local profile = msg.client or {}
  local m = conv:append{
    author = { kind = "client", name = profile.name, id = client_id },
    text = msg.text,
    attachments = msg.attachments,
    provider_ids = msg.provider_ids,
    dedupe_key = msg.dedupe_key,
  }
  -- events a desk held back for the client's next message (livechat.finish
  -- with defer_event) go first; only a closed conversation can have them
  if reopened then livechat.flush_deferred_events(conv) end
  flow.route_client_message(conv, m)
  return conv, m
end

-- Where a client message goes: the bot while the bot has the conversation;
-- the desk while it is queued for or with an agent.
function flow.route_client_message(conv, m)
  if conv.state == "bot" then
    if not bots.for_channel(conv.channel) and desks.for_channel(conv.channel) then
      livechat.direct(conv)   -- no bot: the chat goes straight to the channel's desk
      return
    end
    bots.deliver(conv, m)
  elseif desks and desks.client_message then
    desks.client_message(conv, m)
  else
    log.warn("client message while no desk is configured", { conversation = conv.id, state = conv.state })
    conv:journal("undelivered", { message = m.id, reason = "no desk" })
  end
end

local function normalize_buttons(list)
  local out = {}
  if type(list) ~= "table" then return out end
  for _, b in ipairs(list) do
    if type(b) == "string" then
      out[#out + 1] = { text = b }
    elseif type(b) == "table" and type(b.text) == "string" then
      out[#out + 1] = { text = b.text, payload = type(b.payload) == "string" and b.payload or nil,
                        url = type(b.url) == "string" and b.url or nil }
    end
  end
  return out
end

-- Bot replies in the JAICP format -> stored bot messages sent to the client.
-- A `switch` reply is planned first (destination, availability), so that the
-- close-chat button lands on the message that announces the transfer; it is
-- carried out after the bot's messages went out. Returns the ids of the
-- messages created.
function flow.bot_replies(conv, replies, bot_name)
  if type(replies) ~= "table" then return {} end
  local out, last, switch = {}, nil, nil
  for _, r in ipairs(replies) do
    local t = type(r) == "table" and r.type or nil
    if t == "text" and type(r.text) == "string" then
      last = { text = r.text }
      out[#out + 1] = last
    elseif t == "buttons" then
      local buttons = normalize_buttons(r.buttons)
      if last and not last.buttons then
        last.buttons = buttons
      else
        last = { text = type(r.text) == "string" and r.text or "", buttons = buttons }
        out[#out + 1] = last
      end
    elseif t == "image" and type(r.imageUrl) == "string" then
      last = { text = type(r.text) == "string" and r.text or "",
               attachments = { { url = r.imageUrl, type = "image" } } }
      out[#out + 1] = last
    elseif t == "switch" then
      switch = livechat.normalize(r)
    else
      conv:journal("reply_skipped", { type = t or type(r), bot = bot_name })
    end
  end

  local plan
  if switch then
    plan = livechat.plan(conv, switch)
    local phrase = switch.close_chat_phrases[1]
    if plan.action == "switch" and switch.append_close_chat_button and phrase then
      local target
      for i = #out, 1, -1 do
        if out[i].text ~= "" then target = out[i] break end
      end
      if not target then
        local desk = desks.instance(plan.desk) or {}
        target = { text = desk.transfer_message or "Connecting you with an agent.", system = true }
        out[#out + 1] = target
      end
      target.buttons = target.buttons or {}
      table.insert(target.buttons, { text = phrase, payload = phrase })
    end
  end

  local ids = {}
  for _, o in ipairs(out) do
    local m = conv:append{
      author = o.system and { kind = "system" } or { kind = "bot", name = bot_name },
      text = o.text,
      buttons = o.buttons and #o.buttons > 0 and o.buttons or nil,
      attachments = o.attachments,
    }
    ids[#ids + 1] = m.id
    channels.send(conv, m)
  end
  if plan then livechat.execute(conv, plan, bot_name) end
  return ids
end

return flow
