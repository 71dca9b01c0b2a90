-- Example 5: a queued chat nobody answered for 5 minutes goes to the
-- fallback group, once. Checked every minute over the desk's queued chats.
rule "reassign-unanswered-to-fallback" {
  every = "1m",
  scope = { desk = "helpdesk", state = "queued" },
  when = { since_client = { more_than = 300 }, no_tag = "reassigned", ["not"] = { group = "fallback" } },
  actions = {
    { assign_group = "fallback" },
    { add_tag = "reassigned" },
    { note = "No agent answered for 5 minutes: moved to the fallback group." },
  },
}
