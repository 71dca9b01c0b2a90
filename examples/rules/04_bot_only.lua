-- Example 3: chats in which only bots have written so far are ended with
-- status pending, so agents are not distracted: one rule for new cases,
-- one for cases that change.
rule "park-bot-only-new-case" {
  on = "case.new",
  when = { only_bot_messages = true },
  actions = { { end_chat = { status = "pending" } } },
}

rule "park-bot-only-updated-case" {
  on = "case.updated",
  when = { only_bot_messages = true, state = { "queued", "agent" } },
  actions = { { end_chat = { status = "pending" } } },
}
