-- Example 1: a new live-chat case gets an auto-reply, goes to the Support
-- group, and the ops chat on Telegram hears of it.
rule "welcome-new-live-chat" {
  on = "case.new",
  when = { channel_kind = "live_chat" },
  actions = {
    { reply = "Thanks for writing, {client.name}! An agent will be with you shortly." },
    { assign_group = "support" },
    { notify = { to = "telegram_ops", text = "New live chat on {channel} from {client.name}" } },
  },
}
