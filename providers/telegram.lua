-- Telegram Bot API channel (the subset it uses: docs/conversations.md).
--   in:  POST /v1/channels/{instance}/telegram, the Update as Telegram posts
--        it to a webhook; X-Telegram-Bot-Api-Secret-Token must equal the
--        instance's secret_token.
--   out: sendMessage (with an inline keyboard for buttons) and
--        answerCallbackQuery, through the outbox.
-- Instance config: { type = "telegram", token =, secret_token =, api_base = "https://api.telegram.org", bot = }
local channels = require("channels")
local flow = require("flow")
local telegram = {}

local MAX_TEXT = 4096   -- characters per sendMessage

-- The token stays out of the stored call: the outbox fills it in.
local function method_url(name, inst, method)
  return (inst.api_base or "https://api.telegram.org") .. "/bot" .. channels.secret_ref("channels", name, "token") .. "/" .. method
end

-- A string we can store: valid UTF-8 without NUL (the store refuses NUL).
-- Anything else counts as absent.
local function str(v)
  if type(v) ~= "string" or utf8.len(v) == nil or v:find("\0", 1, true) then return nil end
  return v
end

local function profile_of(from)
  if type(from) ~= "table" then return nil end
  local name = str(from.first_name)
  if str(from.last_name) then name = (name and name .. " " or "") .. from.last_name end
  local p = { name = name, language = str(from.language_code) }
  if str(from.username) then
    p.custom = { username = { value = from.username, label = "Telegram username" } }
  end
  return p
end

-- JSON numbers arrive as Lua floats: ids are integers that fit a double.
local function int_of(v)
  return type(v) == "number" and math.tointeger(v) or nil
end

local function chat_id_of(v)
  local i = int_of(v)
  if i then return string.format("%d", i) end
  v = str(v)
  if v and v ~= "" and #v <= 128 then return v end
  return nil
end

-- Updates we do not handle, and those we cannot store (a text with a NUL
-- character, invalid UTF-8), are acknowledged with 200: Telegram repeats an
-- update for as long as it gets anything else, and no repeat would succeed.
local IGNORED = { ok = true, ignored = true }

function telegram.receive(req)
  local name = req.params.instance
  local inst = channels.instance(name)
  local secret = inst and inst.type == "telegram" and inst.secret_token or nil
  channels.authenticate(req.headers["x-telegram-bot-api-secret-token"], secret,
                        "X-Telegram-Bot-Api-Secret-Token")
  local u = req:json()
  local update_id = type(u) == "table" and int_of(u.update_id)
  if not update_id then
    http_error(422, "invalid_field", "update_id must be an integer")
  end
  local key = string.format("update:%d", update_id)

  if type(u.message) == "table" and type(u.message.chat) == "table" then
    local m = u.message
    local client_id = chat_id_of(m.chat.id)
    if not client_id or not str(m.text) then
      return 200, IGNORED      -- stickers, photos, ...: not handled yet
    end
    flow.client_message(name, client_id, {
      text = m.text, client = profile_of(m.from), dedupe_key = key,
      provider_ids = { telegram = int_of(m.message_id) },
    })
  elseif type(u.callback_query) == "table" then
    local q = u.callback_query
    local chat = type(q.message) == "table" and type(q.message.chat) == "table" and q.message.chat.id
                 or (type(q.from) == "table" and q.from.id)
    local client_id = chat_id_of(chat)
    if not client_id or not str(q.data) then
      return 200, IGNORED
    end
    local conv, msg = flow.client_message(name, client_id, {
      text = q.data, client = profile_of(q.from), dedupe_key = key,
    })
    if not msg.duplicate and type(q.id) == "string" then
      outbox.send{
        conversation = conv, target = name, url = method_url(name, inst, "answerCallbackQuery"),
        body = { callback_query_id = q.id },
        retry_after = { json = "parameters.retry_after" }, error_text = { json = "description" },
      }
    end
  end
  return 200, { ok = true }
end

-- The longest prefix of s of at most n bytes that ends on a character
-- boundary (callback_data is 1-64 bytes of UTF-8).
local function utf8_prefix(s, n)
  if #s <= n then return s end
  if not utf8.len(s) then return s:sub(1, n) end
  local cut = 0
  for pos in utf8.codes(s) do
    if pos - 1 > n then break end
    cut = pos - 1
  end
  return s:sub(1, cut)
end

-- Splits text into pieces of at most MAX_TEXT characters (UTF-8 aware).
local function pieces(text)
  local out, n = {}, utf8.len(text) or #text
  if n <= MAX_TEXT then return { text } end
  local i = 1
  while i <= n do
    local from = utf8.offset(text, i)
    local to = utf8.offset(text, i + MAX_TEXT)
    out[#out + 1] = text:sub(from, to and to - 1 or #text)
    i = i + MAX_TEXT
  end
  return out
end

function telegram.send(name, inst, conv, m)
  local chat = math.tointeger(tonumber(conv.client_id)) or conv.client_id
  local text = m.text ~= "" and m.text or nil
  if not text and m.attachments and m.attachments[1] then text = m.attachments[1].url end
  if not text then return end
  local parts = pieces(text)
  for i, part in ipairs(parts) do
    local body = { chat_id = chat, text = part }
    if i == #parts and m.buttons and #m.buttons > 0 then
      local rows = {}
      for _, b in ipairs(m.buttons) do
        if b.url then
          rows[#rows + 1] = { { text = b.text, url = b.url } }
        else
          rows[#rows + 1] = { { text = b.text, callback_data = utf8_prefix(b.payload or b.text, 64) } }
        end
      end
      body.reply_markup = { inline_keyboard = rows }
    end
    outbox.send{
      conversation = conv, target = name, url = method_url(name, inst, "sendMessage"), body = body,
      on_result = "telegram.on_sent", context = { conversation = conv.id, message = m.id },
      retry_after = { json = "parameters.retry_after" }, error_text = { json = "description" },
    }
  end
end

-- Keeps Telegram's message_id with the stored message.
function telegram.on_sent(result, ctx)
  local ok, r = pcall(json.decode, result.body)
  if not ok or type(r) ~= "table" or r.ok ~= true or type(r.result) ~= "table" then return end
  local conv = conversations.get(ctx.conversation)
  if conv then conv:set_provider_ids(ctx.message, { telegram = int_of(r.result.message_id) }) end
end

channels.adapters.telegram = telegram
route("POST", "/v1/channels/{instance}/telegram", "telegram.receive")

return telegram
