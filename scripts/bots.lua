-- Bots: which bot serves a channel (config.channels[name].bot), and how a
-- client message reaches it. Every bot call goes through the outbox, so it
-- survives a restart and is retried like any delivery, in order per
-- conversation.
bots = {}

function bots.for_channel(channel)
  local inst = channels.instance(channel)
  local name = inst and inst.bot
  return name, name and config.bots and config.bots[name]
end

function bots.deliver(conv, m)
  local name, bot = bots.for_channel(conv.channel)
  if not bot then
    log.warn("no bot configured for channel", { channel = conv.channel, conversation = conv.id })
    conv:journal("undelivered", { message = m.id, reason = "no bot" })
    return
  end
  if bot.type == "http" then
    local headers = {}
    if bot.secret then headers.Authorization = "Bearer " .. bot.secret end
    outbox.send{
      conversation = conv, target = "bot:" .. name, url = bot.url, headers = headers,
      body = {
        conversation_id = conv.id, client_id = conv.client_id, channel = conv.channel,
        text = m.text, client = conv.client, event = "message", message_id = m.id,
      },
      on_result = "bots.on_http_result",
      context = { conversation = conv.id, bot = name },
    }
  elseif bot.type == "lua" then
    -- the message travels with the job: a bot that lags far behind still
    -- sees it after it left the in-memory window
    outbox.call{
      conversation = conv, target = "bots.run_lua", lane = conv.id .. "|bot:" .. name,
      data = { conversation = conv.id, bot = name,
               message = { id = m.id, seq = m.seq, author = m.author, text = m.text,
                           attachments = m.attachments, created = m.created } },
    }
  else
    log.error("unknown bot type", { bot = name, type = tostring(bot.type) })
  end
end

-- An event for the channel's bot (JAICP's noLivechatOperatorsOnline,
-- livechatFinished): external bots get {"event": name, "data": {...}, ...}
-- like a message; Lua bots get module.on_event(conv, name, data). Both may
-- answer with replies.
function bots.event(conv, event, data)
  local name, bot = bots.for_channel(conv.channel)
  if not bot then return end
  if bot.type == "http" then
    local headers = {}
    if bot.secret then headers.Authorization = "Bearer " .. bot.secret end
    outbox.send{
      conversation = conv, target = "bot:" .. name, url = bot.url, headers = headers,
      body = {
        conversation_id = conv.id, client_id = conv.client_id, channel = conv.channel,
        client = conv.client, event = event, data = data or {},
      },
      on_result = "bots.on_http_result",
      context = { conversation = conv.id, bot = name },
    }
  elseif bot.type == "lua" then
    outbox.call{
      conversation = conv, target = "bots.run_lua_event", lane = conv.id .. "|bot:" .. name,
      data = { conversation = conv.id, bot = name, event = event, data = data or {} },
    }
  end
end

function bots.run_lua_event(d)
  local conv = conversations.get(d.conversation)
  local bot = config.bots and config.bots[d.bot]
  if not conv or not bot then return end
  local module = require(bot.module)
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
  local module = require(bot.module)
  local out = module.on_message(conv, data.message)
  if type(out) == "table" then
    flow.bot_replies(conv, out.replies or out, data.bot)
  end
end
