-- A small demo bot (a Lua bot: config.bots.<name> = { type = "lua", module = "bots.demo" }).
-- on_message(conv, msg) returns replies in the JAICP reply format.
local demo = {}

function demo.on_message(conv, msg)
  local text = msg.text:lower()
  if text:find("hello") or text:find("hi") == 1 or text == "/start" then
    return { replies = {
      { type = "text", text = "Hello! I am the demo bot. Ask me anything, or pick one:" },
      { type = "buttons", buttons = { { text = "Opening hours" }, { text = "Talk to a human" } } },
    } }
  elseif text:find("hours") then
    return { replies = { { type = "text", text = "We are open 9:00-18:00, Monday to Friday." } } }
  end
  return { replies = { { type = "text", text = "You said: " .. msg.text } } }
end

return demo
