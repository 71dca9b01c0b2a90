-- Specs of the shipped example rules: `switchboard test -c examples/rules.conf.lua examples/rules/spec`.
-- The clock starts on Monday 2026-01-05 at 10:00 in the config's time zone (UTC).

local function live_chat(t)
  t = t or {}
  return conversation{ channel = "site", desk = "helpdesk", group = t.group or "support", state = t.state or "queued",
                       status = t.status, client = { name = "Ann" }, messages = t.messages or { { "client", "hello" } },
                       tags = t.tags }
end

spec("1. a new live chat gets a reply, the Support group and a Telegram note", function()
  local done = event("case.new", live_chat())
  eq(fired(done), { "welcome-new-live-chat" })
  eq(actions(done, "welcome-new-live-chat"), {
    { reply = "Thanks for writing, Ann! An agent will be with you shortly." },
    { assign_group = "support" },
    { notify = { to = "telegram_ops", text = "New live chat on {channel} from {client.name}" } },
  })
  eq(done[1].actions[3].text, "New live chat on site from Ann", "the notification's text")
end)

spec("1. a chat on a channel that is no live chat is left alone", function()
  eq(fired(event("case.new", conversation{ channel = "web", desk = "helpdesk", state = "queued",
                                           messages = { { "client", "hi" } } })), {})
end)

spec("2. the client writing again on a pending case notifies Slack", function()
  local c = live_chat{ status = "pending" }
  local done = message(c, "client", "any news?")
  eq(fired(done), { "client-resumed-pending-case" })
  eq(done[1].actions[1].text, "Ann wrote again on a pending case: any news?")
  eq(fired(message(live_chat{ status = "open" }, "client", "hi")), {}, "an open case")
  eq(fired(message(c, "agent", "on it")), {}, "an agent's message")
end)

spec("3. a case with only bot messages is parked as pending, new or updated", function()
  local c = live_chat{ messages = { { "bot", "Hi! I am the site's bot." } } }
  local done = event("case.new", c)
  eq(fired(done), { "welcome-new-live-chat", "park-bot-only-new-case" })
  eq(actions(done, "park-bot-only-new-case"), { { end_chat = { status = "pending" } } })
  eq(fired(message(c, "bot", "Still there?")), { "park-bot-only-updated-case" })
  eq(fired(message(c, "client", "yes!")), {}, "once the client wrote it is a real chat")
end)

spec("4. outside working hours: the offline message, and the other rules do not run", function()
  clock(now() + 12 * 3600)          -- Monday 22:00
  local done = event("case.new", live_chat())
  eq(fired(done), { "offline-outside-working-hours" })
  eq(actions(done), {
    { reply = "We are offline now (Mon-Fri 09:00-18:00). Leave your email and we will write back." },
    { add_tag = "after-hours" },
  })
  clock(now() + 12 * 3600)          -- Tuesday 10:00
  eq(fired(event("case.new", live_chat())), { "welcome-new-live-chat" }, "inside working hours")
end)

spec("5. a queued chat nobody answered for 5 minutes goes to the fallback group", function()
  local waiting = live_chat{ messages = { { "client", "hello?", created = now() } } }
  local answered = live_chat{ state = "agent", messages = { { "client", "hi", created = now() } } }
  eq(tick("reassign-unanswered-to-fallback", { waiting, answered }), {}, "not yet")
  advance(301)
  local done = tick("reassign-unanswered-to-fallback", { waiting, answered })
  eq(#done, 1)
  eq(done[1].conversation, waiting.id)
  eq(actions(done), {
    { assign_group = "fallback" }, { add_tag = "reassigned" },
    { note = "No agent answered in time: moved to the fallback group." },
  })
  local moved = live_chat{ group = "fallback", messages = { { "client", "hello?", created = now() - 400 } } }
  eq(tick("reassign-unanswered-to-fallback", { moved }), {}, "once in the fallback group it stays")
end)
