-- Bots: which bot serves a channel (config.channels[name].bot), and how a
-- client message reaches it. Every bot call goes through the outbox, so it
-- survives a restart and is retried like any delivery, in order per
-- conversation.
local channels = require("channels")
local flow = require("flow")
local bots = {}

function bots.for_channel(channel)
  local inst = channels.instance(channel)
  local name = inst and inst.bot
  return name, name and config.bots and config.bots[name]
end

-- Calls the bot through the outbox: a POST for an external bot (`body` plus
-- the conversation's ids), a job running `lua_handler` for a Lua bot. Both
-- use the lane of the conversation and the bot, so calls stay in order.
local function call_bot(conv, name, bot, body, lua_handler, lua_data)
  if bot.type == "http" then
    local headers = {}
    if bot.secret then headers.Authorization = "Bearer " .. channels.secret_ref("bots", name, "secret") end
    body.conversation_id, body.client_id, body.channel = conv.id, conv.client_id, conv.channel
    body.client = conv.client
    outbox.send{
      conversation = conv, target = "bot:" .. name, url = bot.url, headers = headers, body = body,
      on_result = "bots.on_http_result", context = { conversation = conv.id, bot = name },
    }
  elseif bot.type == "lua" then
    lua_data.conversation, lua_data.bot = conv.id, name
    outbox.call{ conversation = conv, target = lua_handler, lane = conv.id .. "|bot:" .. name, data = lua_data }
  else
    log.error("unknown bot type", { bot = name, type = tostring(bot.type) })
  end
end

function bots.deliver(conv, m)
  local name, bot = bots.for_channel(conv.channel)
  if not bot then
    log.warn("no bot configured for channel", { channel = conv.channel, conversation = conv.id })
    conv:journal("undelivered", { message = m.id, reason = "no bot" })
    return
  end
  -- the message travels with a Lua bot's job: a bot that lags far behind
  -- still sees it after it left the in-memory window
  call_bot(conv, name, bot,
    { text = m.text, event = "message", message_id = m.id },
    "bots.run_lua",
    { message = { id = m.id, seq = m.seq, author = m.author, text = m.text,
                  attachments = m.attachments, created = m.created } })
end

-- An event for the channel's bot (JAICP's noLivechatOperatorsOnline,
-- livechatFinished): external bots get {"event": name, "data": {...}, ...}
-- like a message; Lua bots get module.on_event(conv, name, data). Both may
-- answer with replies.
function bots.event(conv, event, data)
  local name, bot = bots.for_channel(conv.channel)
  if not bot then return end
  call_bot(conv, name, bot, { event = event, data = data or {} },
           "bots.run_lua_event", { event = event, data = data or {} })
end

function bots.run_lua_event(d)
  local conv = conversations.get(d.conversation)
  local bot = config.bots and config.bots[d.bot]
  if not conv or not bot then return end
  local module = require(bot.module or ("bots." .. d.bot))
  if type(module.on_event) ~= "function" then return end
  local out = module.on_event(conv, d.event, d.data)
  if type(out) == "table" then
    flow.bot_replies(conv, out.replies or out, d.bot)
  end
end

-- The external bot's synchronous answer: {"replies": [...]} or nothing.
function bots.on_http_result(result, ctx)
  local conv = conversations.get(ctx.conversation)
  if not conv or result.body == "" then return end
  local ok, reply = pcall(json.decode, result.body)
  if not ok or type(reply) ~= "table" then
    log.warn("bot answered with something that is not JSON", { bot = ctx.bot, conversation = conv.id })
    conv:journal("bot_reply_invalid", { bot = ctx.bot })
    return
  end
  if type(reply.replies) == "table" then
    flow.bot_replies(conv, reply.replies, ctx.bot)
  end
end

-- A Lua bot: module.on_message(conv, msg) returns {replies = {...}} or the array.
function bots.run_lua(data)
  local conv = conversations.get(data.conversation)
  if not conv then return end
  local bot = config.bots and config.bots[data.bot]
  if not bot then
    log.error("bot is no longer configured", { bot = data.bot })
    return
  end
  local module = require(bot.module or ("bots." .. data.bot))
  local out = module.on_message(conv, data.message)
  if type(out) == "table" then
    flow.bot_replies(conv, out.replies or out, data.bot)
  end
end

return bots
