-- Telegram Bot API channel (docs/providers/telegram.md): Updates in at
-- POST /v1/channels/{instance}/telegram, sendMessage and answerCallbackQuery
-- out through the outbox, setWebhook at every load.
local channels = require("channels")
local flow = require("flow")
local inbound = require("inbound")
local S = require("schema")
local telegram = {}

local MAX_TEXT = 4096   -- characters per sendMessage
-- Where Telegram's error answers say when to try again and why (outbox.send).
local RETRY_AFTER, ERROR_TEXT = { json = "parameters.retry_after" }, { json = "description" }
-- The token: a reference the outbox fills in, except in a call never stored.
local function method_url(name, inst, method, token)
  return ((inst.api_base or "https://api.telegram.org"):gsub("/+$", "")) .. "/bot"
         .. (token or channels.secret_ref("channels", name, "token")) .. "/" .. method
end

-- Telegram repeats an update for as long as it is not acknowledged with 200,
-- so what we cannot store (a text with NUL, invalid UTF-8) must not fail
-- the request: all but update_id is lenient, a value that fails is absent.
local User = S.object{ id = S.id{}, first_name = S.string{}, last_name = S.string{}, username = S.string{}, language_code = S.string{} }
local Chat = S.object{ id = S.id{} }
local Update = S.object{
  update_id = S.integer{ required = true },
  message = S.object({ message_id = S.integer{}, chat = Chat, from = User, text = S.string{} }, { lenient = true }),
  callback_query = S.object({ id = S.string{}, from = User, data = S.string{}, message = S.object{ chat = Chat } },
                            { lenient = true }),
}
local Answer = S.object({ ok = S.boolean{}, description = S.string{}, result = S.object{ message_id = S.integer{} } },
                        { lenient = true })

local function profile_of(from)
  if not from then return nil end
  local full = from.last_name and ((from.first_name and from.first_name .. " " or "") .. from.last_name)
  return { name = full or from.first_name, language = from.language_code,
           custom = from.username and { username = { value = from.username, label = "Telegram username" } } or nil }
end

inbound.endpoint{
  method = "POST", path = "/v1/channels/{instance}/telegram",
  registry = channels, type = "telegram", auth = { header = "X-Telegram-Bot-Api-Secret-Token", secret = "secret_token" },
  schema = Update,
  handler = function(ctx)
    local u, key = ctx.body, string.format("update:%d", ctx.body.update_id)
    local m, q = u.message, u.callback_query
    local chat = q and (q.message and q.message.chat and q.message.chat.id or q.from and q.from.id)
    if m and m.chat and m.chat.id and m.text then
      flow.client_message(ctx.name, m.chat.id, { text = m.text, client = profile_of(m.from), dedupe_key = key,
                                                  provider_ids = { telegram = m.message_id } })
    elseif chat and q.data then
      local conv, msg = flow.client_message(ctx.name, chat, { text = q.data, client = profile_of(q.from), dedupe_key = key })
      if not msg.duplicate and q.id then
        outbox.send{ conversation = conv, target = ctx.name, url = method_url(ctx.name, ctx.inst, "answerCallbackQuery"),
                     body = { callback_query_id = q.id }, retry_after = RETRY_AFTER, error_text = ERROR_TEXT }
      end
    else
      return 200, { ok = true, ignored = true }   -- edits, stickers, photos, members ...: not handled
    end
    return 200, { ok = true }
  end,
}

inbound.register_at_load{
  name = "telegram_webhook", registry = channels, type = "telegram",
  https_ports = { 443, 80, 88, 8443 },   -- the only ones Telegram posts to
  request = function(name, inst, public_url)
    if not (inst.token and inst.secret_token) then return nil, "token and secret_token are required" end
    return { url = method_url(name, inst, "setWebhook", inst.token), body = {
      url = public_url .. "/v1/channels/" .. url.encode(name) .. "/telegram", secret_token = inst.secret_token,
      allowed_updates = { "message", "callback_query" } } }
  end,
  accept = function(status, _, body)
    local r = S.decode(Answer, body) or {}
    return status == 200 and r.ok == true, r.description
  end,
}

function telegram.send(name, inst, conv, m)
  local text = m.text ~= "" and m.text or (m.attachments and m.attachments[1] and m.attachments[1].url)
  if not text then return end
  local parts, rows = channels.split_text(channels.agent_prefix(inst, m) .. text, MAX_TEXT), {}
  for i, b in ipairs(m.buttons or {}) do     -- callback_data: 1-64 bytes
    rows[i] = { b.url and { text = b.text, url = b.url }
                or { text = b.text, callback_data = channels.utf8_prefix(b.payload or b.text, 64) } }
  end
  for i, part in ipairs(parts) do            -- the buttons go with the last piece
    local body = { chat_id = math.tointeger(tonumber(conv.client_id)) or conv.client_id, text = part }
    if i == #parts and #rows > 0 then body.reply_markup = { inline_keyboard = rows } end
    outbox.send{
      conversation = conv, target = name, url = method_url(name, inst, "sendMessage"), body = body,
      on_result = "telegram.on_sent", context = { conversation = conv.id, message = m.id },
      retry_after = RETRY_AFTER, error_text = ERROR_TEXT,
    }
  end
end
-- Keeps Telegram's message_id with the stored message.
function telegram.on_sent(result, ctx)
  local r = S.decode(Answer, result.body)
  local conv = r and r.ok and r.result and conversations.get(ctx.conversation)
  if conv then conv:set_provider_ids(ctx.message, { telegram = r.result.message_id }) end
end

channels.adapters.telegram = telegram

return telegram
