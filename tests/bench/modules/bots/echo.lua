-- Benchmark echo bot: answers every client message with its own text.
local echo = {}
function echo.on_message(conv, msg)
  return { replies = { { type = "text", text = "echo: " .. msg.text } } }
end
return echo
