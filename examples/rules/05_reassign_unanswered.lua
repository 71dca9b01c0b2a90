-- Example 5: a queued chat nobody answered for 5 minutes goes to the
-- fallback group, once. Checked every minute over the desk's queued chats.
-- Rules read the config: ops tune the wait without touching the rule
-- (config.examples = { unanswered_after = 300, check_every = "1m" }).
local tuning = type(config.examples) == "table" and config.examples or {}

rule "reassign-unanswered-to-fallback" {
  every = tuning.check_every or "1m",
  scope = { desk = "helpdesk", state = "queued" },
  when = { since_client = { more_than = tuning.unanswered_after or 300 }, no_tag = "reassigned",
           ["not"] = { group = "fallback" } },
  actions = {
    { assign_group = "fallback" },
    { add_tag = "reassigned" },
    { note = "No agent answered in time: moved to the fallback group." },
  },
}
