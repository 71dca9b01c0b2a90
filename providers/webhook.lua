-- Generic HTTP channel.
--   in:  POST /v1/channels/{instance}/messages  (Authorization: Bearer <secret>)
--        {"client_id","text","client":{profile},"message_id":"idempotency key","attachments":[...]}
--   out: POST <callback_url> through the outbox
--        {"conversation_id","client_id","message":{"id","author":{"kind","name"},"text","buttons"?,"attachments"?}}
-- Schema and errors: docs/conversations.md.
local channels = require("channels")
local flow = require("flow")
local webhook = {}

local v = require("validate")

local MAX_ID = 256
local MAX_CUSTOM_FIELDS = 50
local MAX_ATTACHMENTS = 20

local invalid, is_null = v.invalid, v.is_null

-- Clients of this channel have been told: invalid UTF-8 is 400 invalid_utf8.
local function check_string(x, field, max, required)
  return v.string(x, field, { max = max, required = required, utf8_status = 400 })
end

-- The client profile: known string fields, and custom = {key = {value=, label=}}.
local function check_profile(p)
  if is_null(p) then return nil end
  if not v.is_object(p) then invalid("client", "must be an object") end
  local out = {}
  for k, val in pairs(p) do
    if type(k) ~= "string" or not flow.profile_fields[k] then
      invalid("client." .. tostring(k), "is not a known profile field")
    end
    if k == "custom" then
      if not v.is_object(val) then invalid("client.custom", "must be an object") end
      local custom, count = {}, 0
      for ck, cv in pairs(val) do
        count = count + 1
        if count > MAX_CUSTOM_FIELDS then invalid("client.custom", "has more than " .. MAX_CUSTOM_FIELDS .. " fields") end
        if type(ck) ~= "string" or #ck > 64 or utf8.len(ck) == nil or ck:find("\0", 1, true) then
          invalid("client.custom", "keys must be UTF-8 strings of at most 64 bytes without NUL")
        end
        if type(cv) ~= "table" then cv = { value = cv } end
        local value = cv.value
        if type(value) ~= "string" and type(value) ~= "number" and type(value) ~= "boolean" then
          invalid("client.custom." .. ck .. ".value", "must be a string, number or boolean")
        end
        if type(value) == "string" then check_string(value, "client.custom." .. ck .. ".value", 1024) end
        custom[ck] = { value = value, label = check_string(cv.label, "client.custom." .. ck .. ".label", 256) }
      end
      out.custom = custom
    else
      out[k] = check_string(val, "client." .. k, 1024)
    end
  end
  return out
end

local function check_attachments(a)
  if is_null(a) then return nil end
  if not v.is_array(a) then invalid("attachments", "must be an array") end
  if #a > MAX_ATTACHMENTS then invalid("attachments", "has more than " .. MAX_ATTACHMENTS .. " items") end
  local out = {}
  for i, item in ipairs(a) do
    local f = "attachments[" .. i .. "]"
    if not v.is_object(item) then invalid(f, "must be an object") end
    check_string(item.url, f .. ".url", 2048, true)
    out[i] = {
      url = v.url(item.url, f .. ".url", true),
      name = check_string(item.name, f .. ".name", 256),
      type = check_string(item.type, f .. ".type", 64),
    }
  end
  return #out > 0 and out or nil
end

function webhook.receive(req)
  local name = req.params.instance
  local inst = channels.instance(name)
  local secret = inst and inst.type == "webhook" and inst.secret or nil
  channels.authenticate(channels.bearer(req), secret, "channel secret")
  local body = req:json()
  if not v.is_object(body) then
    http_error(422, "invalid_field", "the body must be a JSON object")
  end
  local client_id = check_string(body.client_id, "client_id", MAX_ID, true)
  if client_id == "" then invalid("client_id", "must not be empty") end
  local text = v.text(body.text, "text", { required = true, utf8_status = 400, too_long = { 413, "text_too_long" } })
  local attachments = check_attachments(body.attachments)
  if text == "" and not attachments then invalid("text", "must not be empty") end
  local message_id = check_string(body.message_id, "message_id", 128)
  if message_id == "" then invalid("message_id", "must not be empty") end
  local profile = check_profile(body.client)

  local conv, m = flow.client_message(name, client_id, {
    text = text, attachments = attachments, client = profile,
    -- the channel's keys share the conversation store's dedupe space with
    -- the desks' event ids (desks.lua): the prefix keeps a client from
    -- claiming an agent's message in advance
    dedupe_key = message_id and ("client:" .. message_id) or nil,
  })
  local out = { conversation_id = conv.id, message_id = m.id }
  if m.duplicate then out.duplicate = true end
  return 202, out
end

function webhook.send(name, inst, conv, m)
  if not inst.callback_url then
    log.error("webhook channel has no callback_url", { channel = name })
    return
  end
  local message = { id = m.id, author = { kind = m.author.kind, name = m.author.name }, text = m.text }
  if m.buttons and #m.buttons > 0 then message.buttons = m.buttons end
  if m.attachments and #m.attachments > 0 then message.attachments = m.attachments end
  local headers = {}
  if inst.callback_secret then headers.Authorization = "Bearer " .. channels.secret_ref("channels", name, "callback_secret") end
  outbox.send{
    conversation = conv, target = name, url = inst.callback_url, headers = headers,
    body = { conversation_id = conv.id, client_id = conv.client_id, message = message },
  }
end

channels.adapters.webhook = webhook
route("POST", "/v1/channels/{instance}/messages", "webhook.receive")

return webhook
