-- Example 2: the client writes again on a case that was left pending:
-- Slack hears of it.
rule "client-resumed-pending-case" {
  on = "message.created",
  when = { author = "client", status = "pending" },
  actions = {
    { notify = { to = "slack_support", text = "{client.name} wrote again on a pending case: {text}" } },
  },
}
