"""Chat2Desk as a desk (issue 9, topology 1: bot first, agents in Chat2Desk),
end to end through the real binary against the strict fake of
fake_chat2desk.py, as the contract between providers/chat2desk.lua and
these tests says: the switch (client found or created, history and first
message injected in order with POST /v1/messages/inbox, then
transfer_to_group to the resolved group's id), agent messages back to the
client, every way a chat ends, availability, signed webhooks, repeats and
foreign events, and failing calls (retries, then a dead letter naming the
call and Chat2Desk's text).

Client side: the webhook channel ``web`` (CallbackReceiver as callback_url).
Bot: HandoffBot (test_handoff.py). Desk: ``c2d`` of type ``chat2desk``.
"""

from __future__ import annotations

import hashlib
import itertools
import time

import pytest

from conftest import assert_json_error, wait_until
from convkit import (Api, ClientSide, close_fakes,
                     http_bot, install_lua_tree, webhook_channel, write_conv_config)
from fake_chat2desk import TOKEN_ERROR, FakeChat2Desk, md5_hex
from fakes import CallbackReceiver
from test_events import RECORDER, wait_seen
from test_handoff import HandoffBot, switch

C2D_TOKEN = "tok-123"
HOOK_SECRET = "hook-secret"
DESK = "c2d"
SIGNATURE = {"header": "X-Signature", "timestamp_header": "X-Timestamp"}
OLGA = "Olga Petrova"  # operator 101 of the fake, online, in groups Support (1)
SAM = "Sam Seller"     # operator 201, online, in Sales (2); Billing (3) has nobody online
NOT_AT_THE_DESK = ("find", "create", "inbox", "transfer", "close")


def phone(conv_id):
    return f"switchboard:{conv_id}"


def settle(seconds=0.4):
    """A moment for the engine to do something it must not do."""
    time.sleep(seconds)


class C2DEnv(ClientSide):
    """Daemon + callback + bot + Chat2Desk of one test, and conversation helpers."""

    def __init__(self, daemon, callback, bot, fake):
        self.d = daemon
        self.cb = callback
        self.bot = bot
        self.fake = fake
        self.api = Api(daemon)

    def has_end_reason(self, conv_id, reason) -> bool:
        return any(e["type"] == "livechat_finished" and e["data"].get("reason") == reason
                   for e in self.events(conv_id))

    def written(self, conv_id):
        """What the engine holds of a conversation: compared before and after
        something that must write nothing."""
        return (self.api.messages_all(conv_id), self.events(conv_id), self.conv(conv_id))

    # ---- Chat2Desk ---------------------------------------------------------

    def client_id(self, conv_id, timeout=15.0) -> int:
        return self.fake.wait_client(phone(conv_id), timeout=timeout)["id"]

    def desk_calls(self, conv_id) -> list:
        """The calls that reached Chat2Desk for this conversation's client."""
        c = self.fake.client_by_phone(phone(conv_id))
        return self.fake.sequence(c["id"]) if c else []

    def agent_says(self, conv_id, text, operator_id=101, name=OLGA) -> dict:
        resp = self.fake.operator_message(self.client_id(conv_id), text, operator_id=operator_id)
        assert resp.status == 200, f"webhook answered {resp!r}"
        assert resp.json().get("ok") is True, resp
        m = self.wait_callback(conv_id, lambda m: m.get("text") == text and m["author"]["kind"] == "agent",
                               f"agent text {text!r}")
        assert m["author"].get("name") == name, m
        return m

    def open_agent_chat(self, client_id, trigger="agent please", client=None, **switch_fields):
        """bot conversation -> switch -> an operator's first message.
        Returns (conversation id, Chat2Desk client id)."""
        fields = {"closeChatPhrases": ["Back to bot", "/bot"], "lastMessage": "The agent left the chat.",
                  "destination": "Support"}
        fields.update(switch_fields)
        self.bot.text_replies[trigger] = [switch(**fields)]
        conv_id = self.chat(client_id, "hi", client=client)
        self.send(client_id, trigger, client=client)
        cid = self.client_id(conv_id)
        self.fake.wait_inbox_text(cid, fields.get("firstMessage", trigger))
        if fields.get("destination") is not None:
            self.fake.wait_calls("transfer", 1, cid)
        self.wait_state(conv_id, "queued")
        self.agent_says(conv_id, "Hello, I am Olga. How can I help?")
        self.wait_state(conv_id, "agent")
        return conv_id, cid

    def post_hook(self, event, **kw):
        return self.fake.post_event(event, **kw)


def desk_config(api_url, **over):
    cfg = {
        "type": "chat2desk",
        "api_url": api_url,
        "api_token": C2D_TOKEN,
        "channel_id": 17,
        "webhook_secret": HOOK_SECRET,
        "availability_ttl": 0,
        "inactivity_timeout": 600,
    }
    cfg.update(over)
    return {k: v for k, v in cfg.items() if v is not None}


@pytest.fixture
def c2d_env(daemon, request):
    """Factory: ``c2d_env(groups=None, operators=None, signed=False, rules=None,
    outbox=None, start=True, **desk_overrides)`` -> C2DEnv (desk_overrides:
    keys of desks.c2d; None removes one)."""
    made = []

    def make(groups=None, operators=None, signed=False, rules=None, outbox=None, start=True, **desk_over):
        cb = CallbackReceiver()
        bot = HandoffBot()
        fake = FakeChat2Desk(token=C2D_TOKEN, groups=groups, operators=operators,
                             signature=SIGNATURE if signed else None)
        made.extend([cb, bot, fake])
        env = C2DEnv(daemon, cb, bot, fake)
        install_lua_tree(daemon)
        web = webhook_channel(cb.callback_url, bot="ext")
        web["desk"] = DESK
        if signed:
            desk_over.setdefault("signature", dict(SIGNATURE))
        write_conv_config(daemon, channels={"web": web}, bots={"ext": http_bot(bot.bot_url)}, outbox=outbox,
                          desks={DESK: desk_config(fake.url, **desk_over)})
        if rules is not None:
            daemon.write_script("rules/test_c2d.lua", rules)
        if start:
            daemon.start()
            fake.webhook_url = daemon.url(f"/v1/providers/{DESK}/chat2desk/{HOOK_SECRET}")
        return env

    yield make
    close_fakes(request, made, last=30)


def assert_clean(env):
    env.fake.assert_no_violations()
    env.cb.assert_no_violations()
    env.bot.assert_no_violations()


def _check_switch_event(sw, group, rule):
    assert sw.get("action") == "switch", sw
    assert sw.get("desk") == DESK, sw
    assert str(sw.get("group")) == group, sw
    assert str(sw.get("rule")) == str(rule), sw
    assert isinstance(sw.get("reason"), str) and sw["reason"], sw


# --------------------------------------------------------------------------
# the switch and the destination rules
# --------------------------------------------------------------------------


def test_switch_to_a_named_group_history_in_order_then_transfer(c2d_env):
    env = c2d_env(default_group="Support")
    client = {"name": "Ann Lee"}
    conv_id = env.chat("c-1", "hi", client=client)
    env.chat("c-1", "my order is late", client=client)
    env.bot.text_replies["agent please"] = [switch(
        destination="Sales", sendMessagesToOperator=True, sendMessageHistoryAmount=4,
        closeChatPhrases=["Back to bot"], lastMessage="The agent left the chat.",
    )]
    assert env.send("c-1", "agent please", client=client) == conv_id

    cid = env.client_id(conv_id)
    env.fake.wait_calls("transfer", 1, cid)
    created = env.fake.calls("create", cid)
    assert [r.json for r in created] == [{"phone": phone(conv_id), "transport": "external", "channel_id": 17,
                                          "nickname": "Ann Lee"}]
    # found or created, then the history oldest first, then the first message, then the transfer
    assert env.desk_calls(conv_id) == [
        ("find",), ("create",),
        ("inbox", "Bot: you said: hi"),
        ("inbox", "Client: my order is late"),
        ("inbox", "Bot: you said: my order is late"),
        ("inbox", "Client: agent please"),
        ("inbox", "agent please"),
        ("transfer", 2, "false"),   # "Sales" resolved to its id; force_assign defaults to false
    ], env.fake.calls()
    # every inbox call carries an id of ours; the transfer names a message of that dialog
    inbox = env.fake.calls("inbox", cid)
    assert all(r.json["external_id"] for r in inbox)
    assert len({r.json["external_id"] for r in inbox}) == len(inbox)
    dialog = env.fake.dialog_of(cid)
    assert dialog["group_id"] == 2 and dialog["state"] == "open" and len(env.fake.dialogs_of(cid)) == 1
    # the switch was planned with the groups and the operators (availability) before any write
    first_find = env.fake.calls("find")[0]
    assert env.fake.calls("groups") and env.fake.calls("groups")[0].t < first_find.t
    assert env.fake.calls("operators") and env.fake.calls("operators")[0].t < first_find.t

    c = env.wait_state(conv_id, "queued")
    assert c["desk"] == DESK and c["group"] == "2", c
    _check_switch_event(env.wait_switch_events(conv_id)[-1], "2", 1)
    # the bot got the switching message once and nothing more
    assert [m["text"] for m in env.bot.messages(conv_id)] == ["hi", "my order is late", "agent please"]
    assert_clean(env)


def test_switch_without_destination_goes_to_the_default_group_by_name(c2d_env):
    env = c2d_env(default_group="Support", force_assign=True)
    env.bot.text_replies["agent please"] = [switch()]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    cid = env.client_id(conv_id)
    env.fake.wait_calls("transfer", 1, cid)
    assert env.desk_calls(conv_id) == [("find",), ("create",), ("inbox", "agent please"), ("transfer", 1, "true")]
    _check_switch_event(env.wait_switch_events(conv_id)[-1], "1", 2)
    assert env.wait_state(conv_id, "queued")["group"] == "1"
    assert_clean(env)


def test_switch_with_a_group_id_and_no_default_group(c2d_env):
    env = c2d_env(default_group=None)
    env.bot.text_replies["agent please"] = [switch(destination=3, ignoreOffline=True)]
    conv_id = env.chat("c-9", "hi")   # no client name: the nickname is "<channel> <client id>"
    env.send("c-9", "agent please")
    cid = env.client_id(conv_id)
    env.fake.wait_calls("transfer", 1, cid)
    assert env.fake.calls("create", cid)[0].json["nickname"] == "web c-9"
    assert env.desk_calls(conv_id)[-1] == ("transfer", 3, "false")
    _check_switch_event(env.wait_switch_events(conv_id)[-1], "3", 1)
    assert_clean(env)


def test_switch_without_destination_or_default_group_goes_to_the_administrator(c2d_env):
    env = c2d_env(default_group=None)
    env.bot.text_replies["agent please"] = [switch(firstMessage="The client asks for a human")]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    cid = env.client_id(conv_id)
    env.fake.wait_inbox_text(cid, "The client asks for a human")
    sw = env.wait_switch_events(conv_id)[-1]
    _check_switch_event(sw, "administrator", 3)
    env.wait_state(conv_id, "queued")
    settle()
    # the account's default recipient: no transfer
    assert env.desk_calls(conv_id) == [("find",), ("create",), ("inbox", "The client asks for a human")]
    assert env.fake.calls("transfer") == []
    # an operator answers from there like from any group
    env.agent_says(conv_id, "Administrator here", operator_id=201, name=SAM)
    assert env.wait_state(conv_id, "agent")["agent"] == SAM
    assert_clean(env)


def test_a_second_switch_finds_the_client_instead_of_creating_it(c2d_env):
    env = c2d_env(default_group="Support")
    conv_id, cid = env.open_agent_chat("c-1")
    assert env.fake.close_request(cid).status == 200
    env.bot.wait_event(conv_id, "livechatFinished")
    env.bot.text_replies["again please"] = [switch(destination="Sales")]
    env.chat("c-1", "thanks")
    env.send("c-1", "again please")
    env.fake.wait_calls("transfer", 2, cid)
    assert [s[0] for s in env.desk_calls(conv_id)].count("create") == 1
    dialogs = env.fake.dialogs_of(cid)
    assert [(d["state"], d["group_id"]) for d in dialogs] == [("closed", 1), ("open", 2)], dialogs
    assert env.fake.inbox_texts(cid)[-1] == "again please"
    assert_clean(env)


# --------------------------------------------------------------------------
# the agent chat
# --------------------------------------------------------------------------


def test_agent_reply_with_name_client_messages_in_order_and_agent_closes(c2d_env):
    env = c2d_env()
    conv_id, cid = env.open_agent_chat("c-1", client={"name": "Ann"})
    c = env.conv(conv_id)
    assert c["state"] == "agent" and c["agent"] == OLGA, c

    # client messages go to Chat2Desk, one inbox call each, in order; not to the bot
    for text in ("it is order 42", "and it is late", "three days now"):
        env.send("c-1", text, client={"name": "Ann"})
    env.fake.wait_inbox_text(cid, "three days now")
    assert env.fake.inbox_texts(cid)[-3:] == ["it is order 42", "and it is late", "three days now"]
    settle()
    assert [m["text"] for m in env.bot.messages(conv_id)] == ["hi", "agent please"]

    m = env.agent_says(conv_id, "Let me check.")
    assert m["author"]["kind"] == "agent"

    # the operator closes the request: the client gets lastMessage, the bot livechatFinished
    resp = env.fake.close_request(cid)
    assert resp.status == 200 and resp.json().get("ok") is True, resp
    last = env.wait_callback_text(conv_id, "The agent left the chat.")
    assert last["author"]["kind"] == "system"
    ev = env.bot.wait_event(conv_id, "livechatFinished")
    assert ev["data"] == {"reason": "agent"}, ev
    env.wait_state(conv_id, "closed")
    wait_until(lambda: env.has_end_reason(conv_id, "agent"), message="journal: chat ended, reason agent")
    settle()
    assert env.fake.calls("close") == [], "the agent ended it: nothing to close at Chat2Desk"

    # the bot has the conversation again
    env.chat("c-1", "back with the bot?")
    assert env.conv(conv_id)["state"] == "bot"
    assert "back with the bot?" not in env.fake.inbox_texts(cid)
    assert_clean(env)


def test_close_dialog_event_ends_the_chat(c2d_env):
    env = c2d_env()
    conv_id, cid = env.open_agent_chat("c-1")
    resp = env.fake.close_dialog(cid)
    assert resp.status == 200 and resp.json().get("ok") is True, resp
    env.wait_callback_text(conv_id, "The agent left the chat.")
    assert env.bot.wait_event(conv_id, "livechatFinished")["data"] == {"reason": "agent"}
    env.wait_state(conv_id, "closed")
    settle()
    assert env.fake.calls("close") == []
    assert_clean(env)


def test_files_both_ways(c2d_env):
    env = c2d_env()
    conv_id, cid = env.open_agent_chat("c-1")
    env.send("c-1", "", attachments=[{"url": "http://files.example/photo.jpg", "name": "photo.jpg"}])
    r = env.fake.wait_calls("inbox", 1, cid, where=lambda r: "attachment" in r.json)[0]
    assert r.json["attachment"] == "http://files.example/photo.jpg", r.json
    assert r.json["attachment_filename"] == "photo.jpg", r.json

    resp = env.fake.operator_message(cid, "your invoice", operator_id=101,
                                     attachments=[{"name": "invoice.pdf", "link": "http://files.example/invoice.pdf"}])
    assert resp.status == 200, resp
    m = env.wait_callback(conv_id, lambda m: m.get("attachments"), "agent attachment")
    assert m["author"]["kind"] == "agent" and m["author"].get("name") == OLGA, m
    assert m["attachments"][0]["url"] == "http://files.example/invoice.pdf", m
    assert m["attachments"][0].get("name") == "invoice.pdf", m
    assert m.get("text") == "your invoice", m
    assert_clean(env)


def test_autoreply_and_system_messages_as_configured_comments_never(c2d_env):
    env = c2d_env()   # forward defaults: autoreply yes, system no
    conv_id, cid = env.open_agent_chat("c-1")
    for typ, text in (("autoreply", "We answer within 5 minutes"), ("system", "Dialog assigned to Olga"),
                      ("comment", "internal: VIP client")):
        resp = env.fake.operator_message(cid, text, operator_id=101, type=typ)
        assert resp.status == 200, resp
    env.agent_says(conv_id, "after the others")   # the client's lane has passed the ones before
    texts = [m.get("text") for m in env.callbacks(conv_id)]
    assert "We answer within 5 minutes" in texts, texts
    assert "Dialog assigned to Olga" not in texts and "internal: VIP client" not in texts, texts
    stored = [m.get("text") for m in env.api.messages_all(conv_id)]
    assert "internal: VIP client" not in stored and "Dialog assigned to Olga" not in stored, stored
    assert_clean(env)


def test_system_messages_reach_the_client_when_forwarded(c2d_env):
    env = c2d_env(forward={"autoreply": False, "system": True})
    conv_id, cid = env.open_agent_chat("c-1")
    env.fake.operator_message(cid, "We answer within 5 minutes", operator_id=101, type="autoreply")
    env.fake.operator_message(cid, "Dialog assigned to Olga", operator_id=101, type="system")
    env.wait_callback_text(conv_id, "Dialog assigned to Olga")
    env.agent_says(conv_id, "after the others")
    assert "We answer within 5 minutes" not in [m.get("text") for m in env.callbacks(conv_id)]
    assert_clean(env)


def test_dialog_transferred_is_journaled_and_sets_the_agent_and_group(c2d_env):
    env = c2d_env()
    conv_id, cid = env.open_agent_chat("c-1")
    resp = env.fake.dialog_transferred(cid, operator_id=201, group_id=2)
    assert resp.status == 200 and resp.json().get("ok") is True, resp
    ev = wait_until(lambda: next((e for e in env.events(conv_id) if e["type"] == "chat2desk_dialog_transferred"),
                                 None), message="chat2desk_dialog_transferred in the journal")
    assert str(ev["data"].get("operator_id", ev["data"].get("operator"))) == "201", ev
    c = wait_until(lambda: (lambda c: c if c["agent"] != OLGA else None)(env.conv(conv_id)),
                   message="the agent after the transfer")
    assert c["agent"] in (SAM, "201"), c
    assert c["group"] == "2", c
    assert c["state"] == "agent"
    # still the agent's chat: client messages go on to Chat2Desk
    env.send("c-1", "still here")
    env.fake.wait_inbox_text(cid, "still here")
    env.agent_says(conv_id, "Sam here", operator_id=201, name=SAM)
    assert_clean(env)


# --------------------------------------------------------------------------
# ending the chat from our side: PUT /v1/dialogs/{id} {"state": "closed"}
# --------------------------------------------------------------------------


def test_close_phrase_closes_the_dialog_and_again_on_a_closed_one(c2d_env):
    env = c2d_env(outbox={"max_attempts": 2})
    conv_id, cid = env.open_agent_chat("c-1")
    dialog_id = env.fake.dialog_of(cid)["id"]

    env.send("c-1", "  BACK TO BOT ")
    close = env.fake.wait_calls("close", 1, cid)[0]
    assert close.path == f"/v1/dialogs/{dialog_id}" and close.json == {"state": "closed"}, close
    assert env.fake.dialog_of(cid)["state"] == "closed"
    last = env.wait_callback_text(conv_id, "The agent left the chat.")
    assert last["author"]["kind"] == "system"
    phrase = env.bot.wait_message(conv_id, lambda b: b["text"].strip().lower() == "back to bot")
    env.wait_callback_text(conv_id, f"you said: {phrase['text']}")
    assert env.bot.events(conv_id) == [], "a close phrase goes to the bot as a message"
    wait_until(lambda: env.has_end_reason(conv_id, "client"), message="journal: chat ended, reason client")
    assert all(t.strip().lower() != "back to bot" for t in env.fake.inbox_texts(cid))

    # a second chat, whose dialog an operator closed in Chat2Desk without a
    # webhook telling us: closing it answers "already has state closed", which is done
    env.send("c-1", "agent please")
    env.fake.wait_calls("transfer", 2, cid)
    second = env.fake.dialog_of(cid)
    assert second["id"] != dialog_id
    env.wait_state(conv_id, "queued")
    env.fake.close_dialog(cid, notify=False)
    env.send("c-1", "/bot")
    env.fake.wait_attempts("close", 2)
    refused = env.fake.attempts("close")[-1]
    assert refused.status == 400 and refused.path == f"/v1/dialogs/{second['id']}", refused
    env.wait_callback_text(conv_id, "you said: /bot")
    wait_until(lambda: [e["data"].get("reason") for e in env.events(conv_id)
                        if e["type"] == "livechat_finished"] == ["client", "client"],
               message="the second chat ended too")
    settle(1.0)   # longer than the outbox's backoff: a retry would have come
    assert len(env.fake.attempts("close")) == 2, "the already-closed answer was retried"
    assert env.api.dead_all() == [], "an already-closed dialog is not an error"
    assert env.conv(conv_id)["state"] == "bot"
    assert_clean(env)


def test_inactivity_closes_the_dialog(c2d_env):
    env = c2d_env(inactivity_timeout=1.5)
    conv_id, cid = env.open_agent_chat("c-1")
    close = env.fake.wait_calls("close", 1, cid, timeout=20)[0]
    assert close.json == {"state": "closed"} and close.path == f"/v1/dialogs/{env.fake.dialog_of(cid)['id']}"
    env.wait_callback_text(conv_id, "The agent left the chat.")
    assert env.bot.wait_event(conv_id, "livechatFinished")["data"] == {"reason": "inactivity"}
    env.wait_state(conv_id, "closed")
    env.chat("c-1", "still there?")
    settle(2.0)   # longer than the timeout: the ended chat's timer does not fire again
    assert len(env.fake.calls("close")) == 1
    assert_clean(env)


def test_api_end_closes_the_dialog(c2d_env):
    env = c2d_env()
    conv_id, cid = env.open_agent_chat("c-1")
    resp = env.api.post(f"/v1/conversations/{conv_id}/end")
    assert resp.status == 200, resp
    close = env.fake.wait_calls("close", 1, cid)[0]
    assert close.json == {"state": "closed"}
    assert env.bot.wait_event(conv_id, "livechatFinished")["data"] == {"reason": "api"}
    assert env.fake.dialog_of(cid)["state"] == "closed"
    assert_clean(env)


# --------------------------------------------------------------------------
# availability
# --------------------------------------------------------------------------


def test_nobody_online_in_the_group_without_ignore_offline(c2d_env):
    env = c2d_env(default_group="Support")
    env.bot.text_replies["billing please"] = [switch(destination="Billing")]   # ignoreOffline: false
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "billing please")
    ev = env.bot.wait_event(conv_id, "noLivechatOperatorsOnline")
    assert str(ev["data"].get("group")) in ("3", "Billing") and ev["data"].get("desk") == DESK, ev
    settle()
    assert env.conv(conv_id)["state"] == "bot"
    asked = {r.call for r in env.fake.calls()}
    assert {"groups", "operators"} <= asked, asked
    assert not asked & set(NOT_AT_THE_DESK), f"no Chat2Desk call but groups and operators: {env.fake.calls()}"
    assert env.fake.clients == {}

    # with ignoreOffline the chat is queued for the group anyway
    env.bot.text_replies["billing anyway"] = [switch(destination="Billing", ignoreOffline=True)]
    env.send("c-1", "billing anyway")
    cid = env.client_id(conv_id)
    env.fake.wait_calls("transfer", 1, cid)
    assert env.desk_calls(conv_id)[-1] == ("transfer", 3, "false")
    env.wait_state(conv_id, "queued")
    assert_clean(env)


def test_nobody_online_at_all_for_the_administrator(c2d_env):
    ops = [{"id": 101, "first_name": "Olga", "last_name": "Petrova", "online": 0},
           {"id": 201, "first_name": "Sam", "last_name": "Seller", "online": 0}]
    env = c2d_env(default_group=None, operators=ops)
    env.bot.text_replies["agent please"] = [switch()]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    env.bot.wait_event(conv_id, "noLivechatOperatorsOnline")
    settle()
    assert not {r.call for r in env.fake.calls()} & set(NOT_AT_THE_DESK), env.fake.calls()
    assert env.conv(conv_id)["state"] == "bot"
    assert_clean(env)


def test_operators_are_read_page_by_page(c2d_env):
    """The one online operator of the group is on the second page of GET /v1/operators."""
    ops = [{"id": 1000 + i, "first_name": f"Op{i}", "last_name": "X", "online": 0} for i in range(250)]
    ops[240]["online"] = 1
    groups = [{"id": 7, "name": "Late", "operator_ids": [1240]}]
    env = c2d_env(default_group=None, groups=groups, operators=ops)
    env.bot.text_replies["agent please"] = [switch(destination="Late")]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    cid = env.client_id(conv_id)
    env.fake.wait_calls("transfer", 1, cid)
    pages = [(int(r.query["offset"]), int(r.query["limit"])) for r in env.fake.calls("operators")]
    assert (0, 200) in pages and (200, 200) in pages, pages
    env.agent_says(conv_id, "found on page two", operator_id=1240, name="Op240 X")
    assert_clean(env)


STATUS_RULES = RECORDER + """
events.on("agent.status_changed", function(ev) record("status", ev) end, { id = "status" })
"""


def test_operator_status_updated_reaches_the_bus_and_availability(c2d_env):
    env = c2d_env(rules=STATUS_RULES, availability_ttl=300)   # cached: only the webhook can refresh it
    env.bot.text_replies["billing please"] = [switch(destination="Billing")]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "billing please")
    env.bot.wait_event(conv_id, "noLivechatOperatorsOnline")

    resp = env.fake.operator_status(301, online=True)
    assert resp.status == 200 and resp.json().get("ok") is True, resp
    evs = wait_seen(env.d, lambda e: len(e) >= 1, sub="status")
    assert evs[0]["name"] == "agent.status_changed" and "conversation" not in evs[0], evs
    data = evs[0]["data"]
    assert data["desk"] == DESK and str(data["agent"]) == "301" and data["status"] == "online", data

    # the cached "nobody online in Billing" is gone: the next switch finds Bill
    env.send("c-1", "billing please")
    cid = env.client_id(conv_id)
    env.fake.wait_calls("transfer", 1, cid)
    assert env.desk_calls(conv_id)[-1] == ("transfer", 3, "false")

    # the other spelling of the event, going offline with a reason
    resp = env.fake.operator_status(301, online=False, offline_type="busy", hook_type="operator_status_changed")
    assert resp.status == 200, resp
    evs = wait_seen(env.d, lambda e: len(e) >= 2, sub="status")
    assert evs[1]["data"]["status"] == "busy" and str(evs[1]["data"]["agent"]) == "301", evs
    resp = env.fake.operator_status(301, online=False)
    evs = wait_seen(env.d, lambda e: len(e) >= 3, sub="status")
    assert evs[2]["data"]["status"] == "offline", evs
    assert_clean(env)


# --------------------------------------------------------------------------
# the webhook: signature, secret, repeats, foreign events
# --------------------------------------------------------------------------


def test_signed_webhooks_good_and_bad(c2d_env):
    env = c2d_env(signed=True)
    conv_id, cid = env.open_agent_chat("c-1")   # its events were signed with hex(md5(token))
    before = env.written(conv_id)
    n_callbacks = len(env.callbacks(conv_id))

    ids = itertools.count(990001)

    def agent_event(text):
        return {"message_id": next(ids), "type": "to_client", "text": text, "client_id": cid,
                "operator_id": 101, "dialog_id": env.fake.dialog_of(cid)["id"],
                "request_id": env.fake.dialog_of(cid)["request_id"], "channel_id": 17, "transport": "external",
                "attachments": [], "hook_type": "outbox", "event_time": env.fake.event_time()}

    refused = [
        env.post_hook(agent_event("bad signature"), bad_signature=True),
        env.post_hook(agent_event("no signature"), signed=False),
        env.post_hook(agent_event("other key"), key=md5_hex("another-token")),
        env.post_hook(agent_event("no timestamp"), headers={SIGNATURE["timestamp_header"]: ""}),
        env.post_hook(agent_event("wrong secret"),
                      url=env.d.url(f"/v1/providers/{DESK}/chat2desk/not-the-secret")),
        env.post_hook({"hook_type": "close_request", "event_time": env.fake.event_time(),
                       "request_id": env.fake.dialog_of(cid)["request_id"]}, bad_signature=True),
    ]
    for resp in refused:
        assert_json_error(resp, 401)
    settle()
    assert env.written(conv_id) == before, "a refused webhook wrote something"
    assert len(env.callbacks(conv_id)) == n_callbacks
    assert env.conv(conv_id)["state"] == "agent"

    # signed right: with the key as hex MD5 (above) and as the raw 16 MD5 bytes
    raw_key = hashlib.md5(C2D_TOKEN.encode()).digest()
    resp = env.post_hook(agent_event("raw md5 key"), key=raw_key)
    assert resp.status == 200, resp
    env.wait_callback_text(conv_id, "raw md5 key")
    env.agent_says(conv_id, "signed and delivered")
    assert_clean(env)


def test_repeated_webhooks_are_applied_once(c2d_env):
    env = c2d_env(rules=STATUS_RULES)
    conv_id, cid = env.open_agent_chat("c-1")
    first = env.fake.operator_message(cid, "only once")
    assert first.status == 200, first
    env.wait_callback_text(conv_id, "only once")
    again = env.fake.repeat()
    assert again.status == 200 and again.json().get("duplicate") is True, again
    env.agent_says(conv_id, "a later one")   # the client's lane has passed the repeat
    assert [m.get("text") for m in env.callbacks(conv_id)].count("only once") == 1
    assert [m.get("text") for m in env.api.messages_all(conv_id)].count("only once") == 1

    assert env.fake.dialog_transferred(cid, operator_id=201).status == 200
    again = env.fake.repeat()
    assert again.status == 200 and again.json().get("duplicate") is True, again
    settle()
    assert [e["type"] for e in env.events(conv_id)].count("chat2desk_dialog_transferred") == 1

    assert env.fake.operator_status(102, online=True).status == 200
    again = env.fake.repeat()
    assert again.status == 200 and again.json().get("duplicate") is True, again
    wait_seen(env.d, lambda e: len(e) >= 1, sub="status")
    assert env.fake.operator_status(102, online=False).status == 200   # a later, different event
    evs = wait_seen(env.d, lambda e: len(e) >= 2, sub="status")
    assert [e["data"]["status"] for e in evs] == ["online", "offline"], evs
    assert_clean(env)


def test_a_repeated_close_is_a_duplicate_after_the_chat_ended(c2d_env):
    """The contract: a repeat is answered {"ok": true, "duplicate": true} and
    applied once; a close is repeated after the chat it ended is over."""
    env = c2d_env()
    conv_id, cid = env.open_agent_chat("c-1")
    closed = env.fake.close_request(cid)
    assert closed.status == 200, closed
    env.bot.wait_event(conv_id, "livechatFinished")
    env.wait_state(conv_id, "closed")
    before = env.written(conv_id)
    again = env.fake.repeat()
    assert again.status == 200 and again.json().get("ok") is True, again
    settle()
    assert env.written(conv_id) == before
    assert [e["event"] for e in env.bot.events(conv_id)] == ["livechatFinished"]
    assert [m.get("text") for m in env.callbacks(conv_id)].count("The agent left the chat.") == 1
    assert again.json().get("duplicate") is True, again
    assert_clean(env)


def test_events_we_did_not_hand_over_are_acknowledged_and_ignored(c2d_env):
    env = c2d_env()
    conv_id, cid = env.open_agent_chat("c-1")
    other = env.fake.seed_client("+79990001122", "walked in on WhatsApp")
    before = env.written(conv_id)
    n_conversations = len(env.api.conversations_all())
    n_callbacks = len(env.cb.accepted())
    other_dialog = env.fake.dialog_of(other)

    answers = [
        env.fake.operator_message(other, "hello stranger", operator_id=101),
        env.fake.client_inbox(other, "I wrote on WhatsApp"),
        env.fake.dialog_transferred(other, operator_id=201, group_id=2),
        env.fake.close_dialog(other),
        env.fake.close_request(request_id=other_dialog["request_id"]),
        env.fake.close_request(request_id=424242),
        env.post_hook({"hook_type": "new_request", "event_time": env.fake.event_time(), "request_id": 1,
                       "client_id": other, "dialog_id": other_dialog["id"], "channel_id": 17,
                       "transport": "external", "type": "common", "by_client": True}),
        env.post_hook({"hook_type": "comment", "event_time": env.fake.event_time(), "message_id": 1,
                       "request_id": 7, "type": "comment", "operator_id": 101}),
        env.post_hook({"hook_type": "new_qr_code", "event_time": env.fake.event_time()}),
        # the client of our live chat writing on Chat2Desk's side is not news to us
        env.fake.client_inbox(cid, "echo of what we injected"),
    ]
    for resp in answers:
        assert resp.status == 200, resp
        assert resp.json().get("ok") is True and resp.json().get("ignored") is True, resp
    settle()
    assert env.written(conv_id) == before, "an ignored event wrote something"
    assert len(env.api.conversations_all()) == n_conversations
    assert len(env.cb.accepted()) == n_callbacks
    assert env.fake.calls("close") == []

    # an event for a chat that has ended: ignored as well
    env.fake.close_request(cid)
    env.bot.wait_event(conv_id, "livechatFinished")
    env.wait_callback_text(conv_id, "The agent left the chat.")
    before = env.written(conv_id)
    late = env.fake.operator_message(cid, "too late")
    assert late.status == 200 and late.json().get("ignored") is True, late
    settle()
    assert env.written(conv_id) == before
    assert "too late" not in [m.get("text") for m in env.callbacks(conv_id)]
    assert_clean(env)


def test_malformed_webhooks_write_nothing(c2d_env):
    """Not JSON is refused; a field of the wrong type is left out (Chat2Desk
    would retry an error answer and turn the webhook off): without its text
    an operator message is ignored."""
    env = c2d_env()
    conv_id, cid = env.open_agent_chat("c-1")
    before = env.written(conv_id)
    resp = env.post_hook(None, raw=b"{not json")
    assert_json_error(resp, 400)
    resp = env.post_hook({"hook_type": "outbox", "message_id": 1, "type": "to_client", "text": 5, "client_id": cid,
                          "dialog_id": env.fake.dialog_of(cid)["id"], "event_time": env.fake.event_time()})
    assert resp.status == 200 and resp.json().get("ignored") is True, resp
    settle()
    assert env.written(conv_id) == before
    assert_clean(env)


# --------------------------------------------------------------------------
# failing calls: retries in order, then dead letters with Chat2Desk's text
# --------------------------------------------------------------------------


def test_5xx_answers_are_retried_in_order(c2d_env):
    env = c2d_env(default_group="Support")
    env.fake.fail_next("inbox", 2, 500)
    env.fake.fail_next("transfer", 1, 503)
    env.bot.text_replies["agent please"] = [switch(sendMessagesToOperator=True, sendMessageHistoryAmount=2)]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    cid = env.client_id(conv_id)
    env.fake.wait_calls("transfer", 1, cid)
    assert env.desk_calls(conv_id) == [("find",), ("create",), ("inbox", "Bot: you said: hi"),
                                       ("inbox", "Client: agent please"), ("inbox", "agent please"),
                                       ("transfer", 1, "false")]
    assert len(env.fake.attempts("inbox")) == 5 and len(env.fake.attempts("transfer")) == 2
    assert env.api.dead_all() == []
    assert_clean(env)


def _wait_dead(env, timeout=20.0):
    return wait_until(lambda: env.api.dead_all() or None, timeout=timeout,
                      message=f"a dead letter (Chat2Desk attempts: {env.fake.attempts()!r})")


def test_always_5xx_ends_in_a_dead_letter_naming_the_call(c2d_env):
    env = c2d_env(outbox={"max_attempts": 3})
    conv_id, cid = env.open_agent_chat("c-1")
    env.fake.always_fail(502, call="inbox", message="Bad Gateway")
    env.send("c-1", "are you there?")
    dead = _wait_dead(env)
    assert len(dead) == 1, dead
    d = dead[0]
    assert d["conversation_id"] == conv_id and d["attempts"] == 3, d
    assert "Chat2Desk inbox" in d["reason"] and "502" in d["reason"], d
    assert len([r for r in env.fake.attempts("inbox") if r.status == 502]) == 3
    assert env.d.metric("chat2desk_api_errors_total", desk=DESK, error="server") == 3
    rec = env.d.wait_for_log(msg="chat2desk call failed", desk=DESK)
    assert rec.get("call") == "inbox" and rec.get("status") == "502", rec
    # the platform healed: the next message goes through, the conversation goes on
    env.fake.heal()
    env.send("c-1", "hello again")
    env.fake.wait_inbox_text(cid, "hello again")
    assert_clean(env)


def test_a_revoked_token_ends_in_a_dead_letter_with_chat2desks_text(c2d_env):
    env = c2d_env(outbox={"max_attempts": 3})
    conv_id, cid = env.open_agent_chat("c-1")
    env.fake.reject_token(TOKEN_ERROR)
    env.send("c-1", "hello?")
    dead = _wait_dead(env)
    assert len(dead) == 1 and dead[0]["attempts"] == 3, dead
    assert "Chat2Desk inbox: HTTP 401: Token is not correct" in dead[0]["reason"], dead
    # docs/providers/chat2desk.md: the line of a refused token says what to check
    rec = env.d.wait_for_log(level="error", desk=DESK, call="inbox", status="401")
    assert "Token is not correct" in rec.get("error", "") and rec.get("kind") == "token", rec
    assert rec["msg"] == "chat2desk call failed" and "check api_token" in rec.get("advice", ""), rec
    assert env.conv(conv_id)["state"] == "agent", "a failed call does not end the chat"
    assert env.d.metric("chat2desk_api_errors_total", desk=DESK, error="token") == 3
    assert_clean(env)


def test_a_wrong_token_in_the_config_dead_letters_the_switch(c2d_env):
    env = c2d_env(outbox={"max_attempts": 3}, api_token="not-the-token")
    env.bot.text_replies["agent please"] = [switch(destination=1, ignoreOffline=True)]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    dead = _wait_dead(env)
    assert all(d["conversation_id"] == conv_id for d in dead), dead
    assert "Chat2Desk" in dead[0]["reason"] and "HTTP 401" in dead[0]["reason"], dead
    assert "Token is not correct" in dead[0]["reason"], dead
    assert env.fake.calls() == [], "nothing was accepted with a wrong token"
    assert all(r.header("Authorization") == "not-the-token" for r in env.fake.snapshot())
    env.d.wait_for_log(level="error", desk=DESK, status="401", kind="token")
    assert_clean(env)


def test_quota_answers_are_clear_dead_letters(c2d_env):
    env = c2d_env(outbox={"max_attempts": 2})
    conv_id, cid = env.open_agent_chat("c-1")
    env.fake.fail_quota("Number of API requests exceeded", status=429, call="inbox")
    env.send("c-1", "hello?")
    dead = _wait_dead(env)
    assert "Number of API requests exceeded" in dead[0]["reason"], dead
    assert "Chat2Desk inbox" in dead[0]["reason"], dead
    assert env.d.metric("chat2desk_api_errors_total", desk=DESK, error="quota") == 2
    rec = env.d.wait_for_log(level="error", desk=DESK, call="inbox", kind="quota")
    assert "quota" in rec.get("advice", "") and rec.get("status") == "429", rec
    assert_clean(env)
