-- Example 4: outside the group's working hours, the client gets the
-- offline message and is asked for an email; the chat is tagged, and the
-- rules after this one do not run for it (stop).
rule "offline-outside-working-hours" {
  on = "case.new",
  when = { channel_kind = "live_chat", outside_working_hours = true },
  actions = {
    { reply = "We are offline now (Mon-Fri 09:00-18:00). Leave your email and we will write back." },
    { add_tag = "after-hours" },
  },
  stop = true,
}
