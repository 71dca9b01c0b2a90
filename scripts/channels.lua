-- Channel instances (config.channels) and the adapters that serve them.
-- A provider adapter registers itself with `channels.adapters[type] = adapter`;
-- an adapter sends with adapter.send(instance_name, instance_config, conv, message).

-- Instances configured under config[key], served by adapters registered by
-- type: the shape shared by channels and desks (scripts/desks.lua).
function adapter_registry(key)
  local r = { adapters = {} }
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

channels = adapter_registry("channels")

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

-- Bearer token check shared by adapters and the API. Raises 401/403.
function channels.require_bearer(req, expected, what)
  if not expected then
    http_error(403, "forbidden", "no " .. what .. " is configured")
  end
  local token = (req.headers.authorization or ""):match("^[Bb]earer%s+(.+)$")
  if not token or not secure_equal(token, expected) then
    http_error(401, "unauthorized", "missing or wrong " .. what)
  end
end
