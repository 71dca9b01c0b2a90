-- Channel instances (config.channels) and the adapters that serve them.
-- A provider adapter registers itself with `channels.adapters[type] = adapter`;
-- an adapter sends with adapter.send(instance_name, instance_config, conv, message).

-- Instances configured under config[key], served by adapters registered by
-- type: the shape shared by channels and desks (scripts/desks.lua).
local function registry(key)
  local r = { adapters = {}, key = key }
  function r.instance(name)
    local all = config[key]
    return all and all[name]
  end
  -- The adapter and config of an instance, or nil.
  function r.resolve(name)
    local inst = r.instance(name)
    if not inst then return nil end
    return r.adapters[inst.type], inst
  end
  return r
end

local channels = registry("channels")
channels.registry = registry

-- A reference to a secret of the config for an outbound call: the outbox
-- stores "${section.name.key}" and fills the value in when it makes the
-- call, so a token never sits in the store, a dead letter or a log line
-- (docs/security.md). section is "channels", "desks", "bots" or "notify".
function channels.secret_ref(section, name, key)
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
    error("instance name '" .. tostring(name) .. "' cannot name a secret: use letters, digits, _ and -", 2)
  end
  return "${" .. section .. "." .. name .. "." .. key .. "}"
end

-- The kind of an instance's channel, for rules and filters: the instance's
-- own `kind` (a generic webhook channel behind a site's chat widget is a
-- live chat too), else what its adapter says (`adapter.kind`: website live
-- chats are "live_chat"), else "messaging".
function channels.kind(name)
  local adapter, inst = channels.resolve(name)
  if inst and type(inst.kind) == "string" then return inst.kind end
  return adapter and adapter.kind or "messaging"
end

-- Sends a stored message (as returned by conv:append) to the conversation's client.
function channels.send(conv, message)
  local adapter, inst = channels.resolve(conv.channel)
  if not adapter or not adapter.send then
    log.error("no adapter can send to this channel", { channel = conv.channel, conversation = conv.id })
    conv:journal("send_failed", { message = message.id, reason = "no adapter for channel" })
    return
  end
  adapter.send(conv.channel, inst, conv, message)
end

-- The text that names an agent on a channel that cannot show a message's
-- author: the instance's agent_prefix ("{name}: " unless set; false or ""
-- turns it off) with the agent's name. "" for other authors and nameless agents.
function channels.agent_prefix(inst, m)
  local template, author = inst.agent_prefix, m.author or {}
  if template == nil then template = "{name}: " end
  local name = author.kind == "agent" and author.name
  if type(template) ~= "string" or template == "" or type(name) ~= "string" or name == "" then return "" end
  return (template:gsub("{name}", function() return name end))
end

-- The longest prefix of s of at most n bytes that ends on a character
-- boundary (a platform's byte limit must not cut a character in two).
function channels.utf8_prefix(s, n)
  if #s <= n or not utf8.len(s) then return s:sub(1, n) end
  local cut = 0
  for pos in utf8.codes(s) do
    if pos - 1 > n then break end
    cut = pos - 1
  end
  return s:sub(1, cut)
end

-- text in pieces of at most max_chars characters (UTF-8 aware), for
-- platforms that bound a message's length; { text } when it fits.
function channels.split_text(text, max_chars)
  local n = utf8.len(text) or #text
  if n <= max_chars then return { text } end
  local out = {}
  for i = 1, n, max_chars do
    local from, to = utf8.offset(text, i), utf8.offset(text, i + max_chars)
    out[#out + 1] = text:sub(from, to and to - 1 or #text)
  end
  return out
end

-- Checks a webhook's credential. `expected` is nil for an unknown instance
-- (or one of another type, or one without a secret): it gets the very same
-- 401 as a wrong secret, after a comparison of the same cost, so that
-- instance names cannot be found out by asking. `what` names the credential
-- in the message and must not depend on the instance. A credential derived
-- from the secret (a signature) is made from channels.STAND_IN for an
-- unknown instance and passed with known = false.
local STAND_IN = "switchboard: no such instance, compared so that it costs the same time"
channels.STAND_IN = STAND_IN
function channels.authenticate(given, expected, what, known)
  if known == nil then known = expected ~= nil end
  local ok = secure_equal(type(given) == "string" and given or "", expected or STAND_IN)
  if not ok or not known then
    http_error(401, "unauthorized", "missing or wrong " .. what)
  end
end

-- The token of an `Authorization: Bearer <token>` header, or nil.
function channels.bearer(req)
  return (req.headers.authorization or ""):match("^[Bb]earer%s+(.+)$")
end

-- Bearer token check for a script's own routes. Raises 401/403.
function channels.require_bearer(req, expected, what)
  if not expected then
    http_error(403, "forbidden", "no " .. what .. " is configured")
  end
  local token = (req.headers.authorization or ""):match("^[Bb]earer%s+(.+)$")
  if not token or not secure_equal(token, expected) then
    http_error(401, "unauthorized", "missing or wrong " .. what)
  end
end

-- The example config's channel secret is public: say so at every load
-- while a channel still uses it. A webhook channel without a secret takes
-- nothing (every request is 401): say that too.
local EXAMPLE_SECRET = "change-me"
for name, inst in pairs(config.channels or {}) do
  if type(inst) == "table" then
    if inst.secret == EXAMPLE_SECRET or inst.secret_token == EXAMPLE_SECRET then
      log.warn("channel uses the example's default secret: anyone can post as its clients; set a secret of your own",
               { channel = name })
    elseif inst.type == "webhook" and (inst.secret == nil or inst.secret == "") then
      log.warn("webhook channel has no secret: every request to it is refused", { channel = name })
    elseif inst.type == "telegram" and (inst.secret_token == nil or inst.secret_token == "") then
      log.warn("telegram channel has no secret_token: every update is refused", { channel = name })
    end
  end
end

return channels
