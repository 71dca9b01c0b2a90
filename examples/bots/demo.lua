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
  elseif text:find("human") or text:find("agent") then
    return { replies = {
      { type = "text", text = "Connecting you with an agent. Type /bot to come back to me." },
      handoff{ close_chat_phrases = { "/bot" }, append_close_chat_button = true,
               last_message = "The agent left the chat. I am back!",
               send_messages_to_operator = true, send_message_history_amount = 10 },
    } }
  end
  return { replies = { { type = "text", text = "You said: " .. msg.text } } }
end

-- Events: no agent online for a switch, or the agent chat ended.
function demo.on_event(conv, event, data)
  if event == "noLivechatOperatorsOnline" then
    return { replies = { { type = "text", text = "Sorry, no agent is available right now." } } }
  elseif event == "livechatFinished" then
    return { replies = { { type = "text", text = "Anything else I can help with?" } } }
  end
end

return demo
