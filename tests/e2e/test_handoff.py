"""Bot switch handling end to end (docs/handoff.md): a bot's `switch` reply
hands the conversation to agents on an Operator API desk (the strict fake of
fake_operator_api.py), agents' messages reach the client through the webhook
channel's callback, the chat ends in the four documented ways, and the bot
gets the conversation back.

Client side: the webhook channel ``web`` (CallbackReceiver as callback_url).
Bot: the external ``HandoffBot`` (FakeBot that also accepts bot events) or a
Lua bot module. Desk: ``support`` of type ``operator_api``.
"""

from __future__ import annotations

import json
import signal
import time

import pytest

import conftest
from conftest import assert_json_error, free_port, http_request, wait_until
from convkit import (Api, ClientSide, close_fakes, http_bot,
                     install_lua_tree, lua_bot, webhook_channel, write_conv_config)
from fake_operator_api import DEFAULT_EMPLOYEE, FakeOperatorApi
from fakes import CallbackReceiver, FakeBot, post_json_problems

API_KEY = "k3y"
AGENT_NAME = f"{DEFAULT_EMPLOYEE['firstName']} {DEFAULT_EMPLOYEE['lastName']}"
BOT_EVENTS = ("livechatFinished", "noLivechatOperatorsOnline")


def _is_str(v):
    return isinstance(v, str)


# --------------------------------------------------------------------------
# the external bot, with events
# --------------------------------------------------------------------------


class HandoffBot(FakeBot):
    """An external bot that also takes the bot events of docs/handoff.md
    ("Bot events"): ``{"event", "data", "conversation_id", "client_id",
    "channel", "client"}``. Messages are checked by FakeBot's rules.

    Replies: ``text_replies[text]`` (a list of replies) for a client text,
    else an echo (``you said: <text>``); ``event_replies[event]`` for an event,
    else an empty body.
    """

    name = "bot"

    def __init__(self, **kw):
        self.text_replies: dict[str, list] = {}
        self.event_replies: dict[str, list] = {}
        super().__init__(reply=self._reply, **kw)

    def _reply(self, body):
        event = body.get("event")
        if event != "message":
            r = self.event_replies.get(event)
            return {"replies": r} if r else None
        r = self.text_replies.get(body.get("text"))
        if r is not None:
            return {"replies": r}
        return {"replies": [{"type": "text", "text": f"you said: {body.get('text')}"}]}

    def validate(self, req):
        body = req.json
        if not (isinstance(body, dict) and body.get("event", "message") != "message"):
            return super().validate(req)
        p = []
        p.extend(post_json_problems(req, self.expected_path))
        for k in ("conversation_id", "client_id", "channel"):
            if not _is_str(body.get(k)) or not body.get(k):
                p.append(f"{k} is {body.get(k)!r}, expected a non-empty string")
        if body["event"] not in BOT_EVENTS:
            p.append(f"event is {body['event']!r}, expected one of {BOT_EVENTS}")
        if not isinstance(body.get("data"), dict):
            p.append(f"data is {body.get('data')!r}, expected an object")
        if "client" in body and not isinstance(body["client"], dict):
            p.append(f"client is {body['client']!r}, expected an object")
        return p

    def answered(self) -> list:
        """Valid requests already answered (the fake records them on arrival)."""
        return [r for r in self.calls() if r.status is not None]

    def messages(self, conv_id=None) -> list[dict]:
        return [r.json for r in self.answered()
                if r.json.get("event") == "message" and conv_id in (None, r.json["conversation_id"])]

    def events(self, conv_id=None) -> list[dict]:
        return [r.json for r in self.answered()
                if r.json.get("event") != "message" and conv_id in (None, r.json["conversation_id"])]

    def wait_event(self, conv_id, event, timeout=15.0) -> dict:
        def pred():
            for e in self.events(conv_id):
                if e["event"] == event:
                    return e
            return None

        return wait_until(pred, timeout=timeout,
                          message=f"bot event {event} for {conv_id} (events so far: {self.events()!r}; "
                                  f"violations: {self.violations!r})")

    def wait_message(self, conv_id, pred, timeout=15.0) -> dict:
        return wait_until(lambda: next((m for m in self.messages(conv_id) if pred(m)), None), timeout=timeout,
                          message=f"bot message for {conv_id} (messages so far: {[m['text'] for m in self.messages()]!r})")


# --------------------------------------------------------------------------
# the environment of one test
# --------------------------------------------------------------------------


def switch(**fields):
    """A JAICP switch reply (camelCase fields)."""
    return {"type": "switch", **fields}


class Env(ClientSide):
    """Daemon + callback + bot + desk of one test, and conversation helpers."""

    def __init__(self, daemon, callback, bot, desk, port):
        self.d = daemon
        self.cb = callback
        self.bot = bot
        self.desk = desk
        self.port = port
        self.api = Api(daemon)
        self.public_url = f"http://127.0.0.1:{port}"
        self.webhook_path = f"/v1/providers/support/operatorapi/{API_KEY}"

    def has_end_reason(self, conv_id, reason) -> bool:
        """The journal records the end of the live chat with this reason."""
        return any(isinstance(e.get("data"), dict) and e["data"].get("reason") == reason and e["type"] != "switch"
                   for e in self.events(conv_id))

    # ---- the agent -------------------------------------------------------

    def agent_says(self, conv_id, text, **kw) -> dict:
        resp = self.desk.agent_text(conv_id, text, **kw)
        assert resp.status == 200, f"desk webhook answered {resp!r}"
        assert resp.json() == {"ok": True}, resp
        return self.wait_callback(conv_id, lambda m: m.get("text") == text and m["author"]["kind"] == "agent",
                                  f"agent text {text!r}")

    # ---- the whole way to an agent chat ------------------------------------

    def open_agent_chat(self, client_id, trigger="agent please", client=None, **switch_fields) -> str:
        """bot conversation -> switch -> agent's first message; returns the conversation id."""
        fields = {"closeChatPhrases": ["Back to bot", "/bot"], "lastMessage": "The agent left the chat."}
        fields.update(switch_fields)
        self.bot.text_replies[trigger] = [switch(**fields)]
        conv_id = self.chat(client_id, "hi", client=client)
        self.send(client_id, trigger, client=client)
        self.desk.wait_calls("selectDestination", 1, conv_id)
        # the desk has the first message before an agent acts (a Closed
        # event before it would make the desk refuse that sendText)
        self.desk.wait_text(conv_id, fields.get("firstMessage", trigger))
        self.wait_state(conv_id, "queued")
        self.agent_says(conv_id, "Hello, I am Olga. How can I help?")
        self.wait_state(conv_id, "agent")
        return conv_id


def desk_config(desk_url, public_url, **over):
    cfg = {
        "type": "operator_api",
        "api_url": desk_url,
        "api_key": API_KEY,
        "public_url": public_url,
        "default_group": "15",
        "admin_recipient": "1",
        "inactivity_timeout": 600,
        "availability_ttl": 0.05,
    }
    cfg.update(over)
    return {k: v for k, v in cfg.items() if v is not None}


DEFAULT_GROUPS = {"15": ("Support", True), "20": ("Sales", True), "30": ("Billing", False)}


@pytest.fixture
def handoff(daemon, monkeypatch, request):
    """Factory: ``handoff(groups=None, lua_bot_source=None, start=True, extra_channels=None,
    **desk_overrides)`` -> Env (desk_overrides: keys of desks.support; None removes one).

    The daemon's port is chosen before the config is written (public_url must
    name it) and stays the same across restarts.
    """
    made = []

    def make(groups=None, lua_bot_source=None, start=True, extra_channels=None, **desk_over):
        cb = CallbackReceiver()
        bot = HandoffBot()
        desk = FakeOperatorApi(destinations=DEFAULT_GROUPS if groups is None else groups, extra_destinations=("1",))
        made.extend([cb, bot, desk])
        port = free_port()  # after the fakes took theirs
        monkeypatch.setattr(conftest, "free_port", lambda: port)
        env = Env(daemon, cb, bot, desk, port)
        install_lua_tree(daemon)
        web = webhook_channel(cb.callback_url, bot="ext")
        web["desk"] = "support"
        bots = {"ext": http_bot(bot.bot_url)}
        if lua_bot_source is not None:
            daemon.write_script("scripts/bots/x.lua", lua_bot_source)
            web["bot"] = "x"
            bots["x"] = lua_bot("bots.x")
        channels = {"web": web}
        channels.update(extra_channels or {})
        write_conv_config(daemon, channels=channels, bots=bots,
                          desks={"support": desk_config(desk.base_url, env.public_url, **desk_over)})
        if start:
            daemon.start()
            assert daemon.port == port
        return env

    yield make
    close_fakes(request, made, last=25)


def assert_clean(env):
    env.desk.assert_no_violations()
    env.cb.assert_no_violations()
    env.bot.assert_no_violations()


def settle(seconds=0.4):
    """A moment for the engine to do something it must not do."""
    time.sleep(seconds)


# --------------------------------------------------------------------------
# setWebhook
# --------------------------------------------------------------------------


def test_set_webhook_at_start(handoff):
    env = handoff()
    url = env.desk.wait_webhook()
    assert url == env.public_url + env.webhook_path
    calls = env.desk.calls("setWebhook")
    assert [c.json for c in calls] == [{"url": url}]
    # the URL works: an unknown user there is 404, not a missing route
    resp = env.desk.post_event({"id": "x1", "userId": "no-such-conversation", "type": "TextMessage",
                                "text": "hi", "employee": dict(DEFAULT_EMPLOYEE)})
    assert_json_error(resp, 404)
    assert_clean(env)


# --------------------------------------------------------------------------
# the whole way, and the four endings
# --------------------------------------------------------------------------


def test_switch_history_first_message_agent_and_close_phrase(handoff):
    env = handoff()
    env.desk.wait_webhook()
    client = {"name": "Ann Lee"}
    conv_id = env.chat("c-1", "hi", client=client)
    env.chat("c-1", "my order is late", client=client)
    env.bot.text_replies["agent please"] = [switch(
        destination="20", sendMessagesToOperator=True, sendMessageHistoryAmount=4,
        closeChatPhrases=["Back to bot", "/bot"], lastMessage="The agent left the chat.",
        attributes={"orderId": "42"}, hiddenAttributes={"vip": "yes"}, customData={"source": "test"},
    )]
    assert env.send("c-1", "agent please", client=client) == conv_id

    # the desk: selectDestination, the history (oldest first, labelled), then firstMessage
    env.desk.wait_text(conv_id, "agent please")
    ops = env.desk.ops(conv_id)
    assert ops[0] == ("selectDestination", {
        "userId": conv_id, "destinationId": "20", "userName": "Ann Lee",
        "attributes": {"orderId": "42"}, "hiddenAttributes": {"vip": "yes"}, "customData": {"source": "test"},
    }), ops
    assert [b["text"] for op, b in ops[1:]] == [
        "Bot: you said: hi",
        "Client: my order is late",
        "Bot: you said: my order is late",
        "Client: agent please",
        "agent please",
    ], ops
    assert all(op == "sendText" for op, _ in ops[1:]), ops
    c = env.wait_state(conv_id, "queued")
    assert c["desk"] == "support" and c["group"] == "20", c
    # the bot did not answer the switching message itself: it only got it once
    assert [m["text"] for m in env.bot.messages(conv_id)] == ["hi", "my order is late", "agent please"]

    # the agent answers: the client gets it with the agent's name; the chat is the agent's
    m = env.agent_says(conv_id, "Hello Ann, Olga here.")
    assert m["author"]["kind"] == "agent" and m["author"].get("name") == AGENT_NAME, m
    c = env.wait_state(conv_id, "agent")
    assert c["agent"] == AGENT_NAME, c

    # client messages go to the desk, not to the bot
    env.send("c-1", "it is order 42", client=client)
    env.desk.wait_text(conv_id, "it is order 42")
    settle()
    assert "it is order 42" not in [m["text"] for m in env.bot.messages(conv_id)]

    # ending (a): a close phrase, trimmed and in another case
    env.send("c-1", "  BACK TO BOT ", client=client)
    close = env.desk.wait_calls("closeChat", 1, conv_id)[0]
    assert close.json == {"userId": conv_id, "text": "The user closed the chat"}, close.json
    last = env.wait_callback_text(conv_id, "The agent left the chat.")
    assert last["author"]["kind"] == "system", last
    # the phrase goes to the bot as a normal message, and the bot answers it
    phrase = env.bot.wait_message(conv_id, lambda b: b["text"].strip().lower() == "back to bot")
    assert phrase["event"] == "message"
    env.wait_callback_text(conv_id, f"you said: {phrase['text']}")
    # not sent to the desk as a message
    assert all(t.strip().lower() != "back to bot" for t in env.desk.texts(conv_id))
    assert env.bot.events(conv_id) == [], "a close phrase goes to the bot as a message, not livechatFinished"
    wait_until(lambda: env.has_end_reason(conv_id, "client"), message="journal: chat ended, reason client")

    # the bot has the conversation again
    env.chat("c-1", "anything else?", client=client)
    assert env.conv(conv_id)["state"] == "bot"
    settle()
    assert "anything else?" not in env.desk.texts(conv_id)
    assert len(env.desk.calls("closeChat", conv_id)) == 1
    assert_clean(env)


def test_agent_closed_event_ends_chat(handoff):
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    resp = env.desk.agent_closed(conv_id)
    assert resp.status == 200 and resp.json() == {"ok": True}, resp

    last = env.wait_callback_text(conv_id, "The agent left the chat.")
    assert last["author"]["kind"] == "system"
    ev = env.bot.wait_event(conv_id, "livechatFinished")
    assert ev["data"] == {"reason": "agent"}, ev
    assert ev["client_id"] == "c-1" and ev["channel"] == "web", ev
    assert env.wait_state(conv_id, "closed")
    wait_until(lambda: env.has_end_reason(conv_id, "agent"), message="journal: chat ended, reason agent")
    settle()
    assert env.desk.calls("closeChat", conv_id) == [], "the agent ended it: no closeChat to the desk"

    env.chat("c-1", "back with the bot?")
    assert env.conv(conv_id)["state"] == "bot"
    assert "back with the bot?" not in env.desk.texts(conv_id)
    assert_clean(env)


def test_inactivity_ends_chat(handoff):
    env = handoff(inactivity_timeout=1.5)
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")

    close = env.desk.wait_calls("closeChat", 1, conv_id, timeout=20)[0]
    assert close.json["userId"] == conv_id and isinstance(close.json["text"], str)
    last = env.wait_callback_text(conv_id, "The agent left the chat.")
    assert last["author"]["kind"] == "system"
    ev = env.bot.wait_event(conv_id, "livechatFinished")
    assert ev["data"] == {"reason": "inactivity"}, ev
    env.wait_state(conv_id, "closed")
    wait_until(lambda: env.has_end_reason(conv_id, "inactivity"), message="journal: chat ended, reason inactivity")

    env.chat("c-1", "still there?")
    assert env.conv(conv_id)["state"] == "bot"
    settle(2.0)  # longer than the timeout: the ended chat's timer does not fire again
    assert len(env.desk.calls("closeChat", conv_id)) == 1
    assert [e["event"] for e in env.bot.events(conv_id)] == ["livechatFinished"]
    assert_clean(env)


def test_group_inactivity_overrides_desk_timeout(handoff):
    env = handoff(inactivity_timeout=600, group_inactivity={"20": 1.5})
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="20")
    env.desk.wait_calls("closeChat", 1, conv_id, timeout=20)
    ev = env.bot.wait_event(conv_id, "livechatFinished")
    assert ev["data"] == {"reason": "inactivity"}, ev
    assert_clean(env)


def test_api_end_chat(handoff):
    env = handoff()
    env.desk.wait_webhook()
    # not in a live chat yet: 409
    conv_id = env.chat("c-1", "hi")
    assert_json_error(env.api.post(f"/v1/conversations/{conv_id}/end"), 409)
    assert_json_error(env.api.post(f"/v1/conversations/{conv_id}/end", token=None), 401)
    assert_json_error(env.api.post(f"/v1/conversations/{conv_id}/end", token="wrong"), 401)
    assert_json_error(env.api.post("/v1/conversations/no-such-id/end"), 404)

    conv_id2 = env.open_agent_chat("c-1", destination="15")
    assert conv_id2 == conv_id
    assert_json_error(env.api.post(f"/v1/conversations/{conv_id}/end", token="wrong"), 401)
    resp = env.api.post(f"/v1/conversations/{conv_id}/end")
    assert resp.status == 200, resp

    close = env.desk.wait_calls("closeChat", 1, conv_id)[0]
    assert close.json["userId"] == conv_id and isinstance(close.json["text"], str)
    env.wait_callback_text(conv_id, "The agent left the chat.")
    ev = env.bot.wait_event(conv_id, "livechatFinished")
    assert ev["data"] == {"reason": "api"}, ev
    wait_until(lambda: env.has_end_reason(conv_id, "api"), message="journal: chat ended, reason api")
    # ended already: 409
    assert_json_error(env.api.post(f"/v1/conversations/{conv_id}/end"), 409)

    env.chat("c-1", "and now?")
    assert env.conv(conv_id)["state"] == "bot"
    assert len(env.desk.calls("closeChat", conv_id)) == 1
    assert_clean(env)


def test_api_end_while_queued(handoff):
    """A queued chat (no agent answered yet) is a live chat too."""
    env = handoff()
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch(destination="15", lastMessage="Bye from the queue")]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    env.wait_state(conv_id, "queued")
    env.desk.wait_text(conv_id, "agent please")
    resp = env.api.post(f"/v1/conversations/{conv_id}/end")
    assert resp.status == 200, resp
    env.desk.wait_calls("closeChat", 1, conv_id)
    env.wait_callback_text(conv_id, "Bye from the queue")
    assert env.bot.wait_event(conv_id, "livechatFinished")["data"] == {"reason": "api"}
    assert_clean(env)


# --------------------------------------------------------------------------
# attachments, group moves, userName
# --------------------------------------------------------------------------


def test_files_both_ways_and_default_user_name(handoff):
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-9", destination="15")  # no client name
    sel = env.desk.calls("selectDestination", conv_id)[0].json
    assert sel["userName"] == "web c-9", sel

    # the client sends a file: sendFile
    env.send("c-9", "", attachments=[{"url": "http://files.example/photo.jpg", "name": "photo.jpg"}])
    f = env.desk.wait_calls("sendFile", 1, conv_id)[0].json
    assert f["userId"] == conv_id and f["url"] == "http://files.example/photo.jpg", f
    assert f["fileName"] == "photo.jpg", f
    # the agent sends a file: the client gets an attachment
    resp = env.desk.agent_file(conv_id, "http://files.example/invoice.pdf", name="invoice.pdf", comment="your invoice")
    assert resp.status == 200, resp
    m = env.wait_callback(conv_id, lambda m: m.get("attachments"), "agent attachment")
    assert m["author"]["kind"] == "agent" and m["author"].get("name") == AGENT_NAME, m
    assert m["attachments"][0]["url"] == "http://files.example/invoice.pdf", m
    assert m["attachments"][0].get("name") == "invoice.pdf", m
    assert m.get("text") == "your invoice", m
    assert_clean(env)


def test_agent_moves_chat_to_another_group(handoff):
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    resp = env.desk.agent_moved(conv_id, "20", name="Sales")
    assert resp.status == 200 and resp.json() == {"ok": True}, resp
    wait_until(lambda: env.conv(conv_id)["group"] == "20", message="group 20 after SelectDestination")
    # still the agent's chat
    env.send("c-1", "still here")
    env.desk.wait_text(conv_id, "still here")
    assert env.conv(conv_id)["state"] == "agent"
    assert_clean(env)


# --------------------------------------------------------------------------
# destination rules
# --------------------------------------------------------------------------


def _switch_and_get_destination(env, client_id, **fields):
    fields.setdefault("ignoreOffline", True)  # the rules, not availability, are under test
    env.bot.text_replies["agent please"] = [switch(**fields)]
    conv_id = env.chat(client_id, "hi")
    env.send(client_id, "agent please")
    sel = env.desk.wait_calls("selectDestination", 1, conv_id)[0].json
    sw = env.wait_switch_events(conv_id)[-1]
    return conv_id, sel["destinationId"], sw


def _check_switch_event(sw, group, rule):
    assert sw.get("action") == "switch", sw
    assert sw.get("desk") == "support", sw
    assert sw.get("group") == group, sw
    assert str(sw.get("rule")) == str(rule), sw
    assert isinstance(sw.get("reason"), str) and sw["reason"], sw


def test_rule1_switch_destination_wins_over_default_group(handoff):
    env = handoff(default_group="15")
    env.desk.wait_webhook()
    conv_id, dest, sw = _switch_and_get_destination(env, "c-1", destination="20")
    assert dest == "20"
    _check_switch_event(sw, "20", 1)
    assert env.conv(conv_id)["group"] == "20"
    assert_clean(env)


def test_rule1_numeric_destination(handoff):
    env = handoff(default_group="15")
    env.desk.wait_webhook()
    conv_id, dest, sw = _switch_and_get_destination(env, "c-1", destination=20)
    assert dest == "20"
    _check_switch_event(sw, "20", 1)
    assert_clean(env)


def test_rule2_default_group(handoff):
    env = handoff(default_group="15")
    env.desk.wait_webhook()
    conv_id, dest, sw = _switch_and_get_destination(env, "c-1")
    assert dest == "15"
    _check_switch_event(sw, "15", 2)
    assert_clean(env)


def test_rule3_admin_recipient(handoff):
    env = handoff(default_group=None, admin_recipient="1")
    env.desk.wait_webhook()
    conv_id, dest, sw = _switch_and_get_destination(env, "c-1")
    assert dest == "1"
    _check_switch_event(sw, "1", 3)
    assert_clean(env)


def test_mapped_group_from_the_clients_platform_group(handoff):
    """No destination in the switch: the desk's group_map maps client.group
    to a group, treated like a named destination (rule 1)."""
    env = handoff(group_map={"dept-7": "20"})
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch(ignoreOffline=True)]
    client = {"name": "Ann", "group": "dept-7"}
    conv_id = env.chat("c-1", "hi", client=client)
    env.send("c-1", "agent please", client=client)
    assert env.desk.wait_calls("selectDestination", 1, conv_id)[0].json["destinationId"] == "20"
    _check_switch_event(env.wait_switch_events(conv_id)[-1], "20", 1)
    assert_clean(env)


@pytest.mark.parametrize("client", [
    {"start_page": "https://shop.example.com/cart", "page_url": "https://www.example.com/help/"},
    {"page_url": "https://shop.example.com/item/5"},
], ids=["start_page", "page_url"])
def test_mapped_group_from_the_start_page(handoff, client):
    env = handoff(page_routes=[{"pattern": "^https://shop%.", "group": "20"},
                               {"pattern": "/help/", "group": "30"}])
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch(ignoreOffline=True)]
    conv_id = env.chat("c-1", "hi", client=client)
    env.send("c-1", "agent please", client=client)
    assert env.desk.wait_calls("selectDestination", 1, conv_id)[0].json["destinationId"] == "20"
    _check_switch_event(env.wait_switch_events(conv_id)[-1], "20", 1)
    assert_clean(env)


def test_switch_destination_wins_over_group_mapping(handoff):
    env = handoff(group_map={"dept-7": "20"}, page_routes=[{"pattern": "shop", "group": "20"}])
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch(destination="30", ignoreOffline=True)]
    client = {"group": "dept-7", "start_page": "https://shop.example.com/"}
    conv_id = env.chat("c-1", "hi", client=client)
    env.send("c-1", "agent please", client=client)
    assert env.desk.wait_calls("selectDestination", 1, conv_id)[0].json["destinationId"] == "30"
    _check_switch_event(env.wait_switch_events(conv_id)[-1], "30", 1)
    assert_clean(env)


def test_mapped_group_unknown_to_the_desk_falls_back(handoff):
    env = handoff(default_group="15", group_map={"dept-9": "99"})
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch(ignoreOffline=True)]
    client = {"group": "dept-9"}
    conv_id = env.chat("c-1", "hi", client=client)
    env.send("c-1", "agent please", client=client)
    assert env.desk.wait_calls("selectDestination", 1, conv_id)[0].json["destinationId"] == "15"
    _check_switch_event(env.wait_switch_events(conv_id)[-1], "15", 2)
    assert_clean(env)


def test_unknown_destination_falls_back_to_default_group(handoff):
    env = handoff(default_group="15")
    env.desk.wait_webhook()
    conv_id, dest, sw = _switch_and_get_destination(env, "c-1", destination="99")
    assert dest == "15"
    _check_switch_event(sw, "15", 2)
    assert "99" in sw["reason"], sw  # why: the named destination is unknown
    errors = [r for r in env.d.find_logs(level="error") if any("99" in v for k, v in r.items() if k != "ts")]
    assert errors, "an unknown destination is an error in the log (naming it)"
    assert_clean(env)


def test_unknown_destination_and_unknown_default_fall_back_to_admin(handoff):
    env = handoff(default_group="77", admin_recipient="1")
    env.desk.wait_webhook()
    conv_id, dest, sw = _switch_and_get_destination(env, "c-1", destination="99")
    assert dest == "1"
    _check_switch_event(sw, "1", 3)
    assert_clean(env)


def test_no_desk_group_at_all_bot_gets_no_operators_event(handoff):
    env = handoff(default_group=None, admin_recipient=None)
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch(ignoreOffline=True)]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    ev = env.bot.wait_event(conv_id, "noLivechatOperatorsOnline")
    assert isinstance(ev["data"].get("reason"), str), ev
    settle()
    assert env.desk.calls("selectDestination", conv_id) == []
    assert env.conv(conv_id)["state"] == "bot"
    assert_clean(env)


def test_channel_without_desk_bot_gets_no_operators_event(handoff):
    cb2 = CallbackReceiver()
    try:
        env = handoff(extra_channels={"nodesk": {"type": "webhook", "secret": "nodesk-secret",
                                                 "callback_url": cb2.callback_url, "bot": "ext"}})
        env.bot.text_replies["agent please"] = [switch(destination="15", ignoreOffline=True)]
        resp = env.api.post_message({"client_id": "c-1", "text": "agent please"}, instance="nodesk",
                                    secret="nodesk-secret")
        assert resp.status == 202, resp
        conv_id = resp.json()["conversation_id"]
        ev = env.bot.wait_event(conv_id, "noLivechatOperatorsOnline")
        assert isinstance(ev["data"].get("reason"), str), ev
        assert env.conv(conv_id)["state"] == "bot"
        assert env.desk.calls("selectDestination", conv_id) == []
        assert_clean(env)
    finally:
        cb2.close()


def test_different_switches_open_chat_on_each_group(handoff):
    env = handoff()
    env.desk.wait_webhook()
    env.bot.text_replies["sales please"] = [switch(destination="20", lastMessage="bye sales")]
    env.bot.text_replies["support please"] = [switch(destination="15", lastMessage="bye support")]
    env.bot.text_replies["default please"] = [switch(lastMessage="bye default")]
    conv_id = env.chat("c-1", "hi")

    env.send("c-1", "sales please")
    env.desk.wait_text(conv_id, "sales please")
    env.agent_says(conv_id, "Sales here")
    env.desk.agent_closed(conv_id)
    env.wait_callback_text(conv_id, "bye sales")

    env.send("c-1", "support please")  # goes to the bot: closed -> bot
    env.desk.wait_calls("selectDestination", 2, conv_id)
    env.wait_state(conv_id, "queued")
    assert env.conv(conv_id)["group"] == "15"
    assert env.api.post(f"/v1/conversations/{conv_id}/end").status == 200
    env.wait_callback_text(conv_id, "bye support")

    env.send("c-1", "default please")
    env.desk.wait_calls("selectDestination", 3, conv_id)
    sels = [c.json["destinationId"] for c in env.desk.calls("selectDestination", conv_id)]
    assert sels == ["20", "15", "15"], sels
    groups = [s["group"] for s in env.wait_switch_events(conv_id, 3)]
    assert groups == ["20", "15", "15"], groups
    rules = [str(s["rule"]) for s in env.switch_events(conv_id)]
    assert rules == ["1", "1", "2"], rules
    assert_clean(env)


# --------------------------------------------------------------------------
# availability and ignoreOffline
# --------------------------------------------------------------------------


def test_offline_group_without_ignore_offline_no_switch(handoff):
    env = handoff()
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch(destination="30", ignoreOffline=False)]
    env.bot.event_replies["noLivechatOperatorsOnline"] = [{"type": "text", "text": "Nobody is there, sorry."}]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    ev = env.bot.wait_event(conv_id, "noLivechatOperatorsOnline")
    assert ev["data"] == {"group": "30", "desk": "support"}, ev
    # the bot's answer to the event reaches the client
    env.wait_callback_text(conv_id, "Nobody is there, sorry.")
    assert env.desk.calls("selectDestination", conv_id) == []
    assert env.desk.calls("sendText", conv_id) == []
    assert env.conv(conv_id)["state"] == "bot"
    sw = env.wait_switch_events(conv_id)[-1]  # the attempt is journaled too
    assert sw.get("group") == "30" and str(sw.get("rule")) == "1" and sw.get("action") != "switch", sw
    env.chat("c-1", "ok then")  # the bot still has it
    assert_clean(env)


def test_offline_default_ignore_offline_is_false(handoff):
    env = handoff(default_group="30")
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch()]  # no ignoreOffline: false
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    ev = env.bot.wait_event(conv_id, "noLivechatOperatorsOnline")
    assert ev["data"] == {"group": "30", "desk": "support"}, ev
    assert env.desk.calls("selectDestination", conv_id) == []
    assert env.conv(conv_id)["state"] == "bot"
    assert_clean(env)


def test_offline_group_with_ignore_offline_is_queued(handoff):
    env = handoff()
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch(destination="30", ignoreOffline=True)]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    sel = env.desk.wait_calls("selectDestination", 1, conv_id)[0].json
    assert sel["destinationId"] == "30"
    c = env.wait_state(conv_id, "queued")
    assert c["group"] == "30"
    env.desk.wait_text(conv_id, "agent please")
    # queued: client messages go to the desk
    env.send("c-1", "hello? anyone?")
    env.desk.wait_text(conv_id, "hello? anyone?")
    assert env.bot.events(conv_id) == []
    assert_clean(env)


def test_destinations_unavailable(handoff):
    """getDestinations fails: every destination counts as known, nobody as online."""
    env = handoff()
    env.desk.wait_webhook()
    env.desk.destinations_fail = 503
    env.bot.text_replies["try"] = [switch(destination="20")]
    env.bot.text_replies["force"] = [switch(destination="20", ignoreOffline=True)]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "try")
    ev = env.bot.wait_event(conv_id, "noLivechatOperatorsOnline")
    assert ev["data"].get("group") == "20", ev
    assert env.desk.calls("selectDestination", conv_id) == []
    env.send("c-1", "force")
    sel = env.desk.wait_calls("selectDestination", 1, conv_id)[0].json
    assert sel["destinationId"] == "20"
    sw = env.wait_switch_events(conv_id, 2)[-1]
    _check_switch_event(sw, "20", 1)
    assert_json_error(env.api.get("/v1/groups/15/availability"), 502, "desk_unavailable")
    assert_clean(env)


def test_availability_endpoint(handoff):
    env = handoff()
    env.desk.wait_webhook()
    resp = env.api.get("/v1/groups/15/availability")
    assert resp.status == 200, resp
    assert resp.json() == {"desk": "support", "group": "15", "name": "Support", "online": True}
    resp = env.api.get("/v1/groups/30/availability", desk="support")
    assert resp.status == 200, resp
    assert resp.json() == {"desk": "support", "group": "30", "name": "Billing", "online": False}
    assert_json_error(env.api.get("/v1/groups/nope/availability"), 404, "unknown_group")
    assert_json_error(env.api.get("/v1/groups/15/availability", token=None), 401)
    # the desk's answer changes: so does ours (availability_ttl is tiny here)
    env.desk.set_destinations({"15": ("Support", False), "30": ("Billing", True)})
    wait_until(lambda: env.api.get("/v1/groups/15/availability").json().get("online") is False,
               message="group 15 offline after the desk changed")
    assert env.api.get("/v1/groups/30/availability").json()["online"] is True
    assert_json_error(env.api.get("/v1/groups/20/availability"), 404, "unknown_group")
    assert_clean(env)


# --------------------------------------------------------------------------
# oneTimeMessage, appendCloseChatButton
# --------------------------------------------------------------------------


def test_one_time_message(handoff):
    env = handoff()
    env.desk.wait_webhook()
    env.bot.text_replies["tell them"] = [
        {"type": "text", "text": "I passed it on."},
        switch(destination="15", oneTimeMessage=True, firstMessage="FYI: the client asks about refunds"),
    ]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "tell them")
    env.wait_callback_text(conv_id, "I passed it on.")
    env.desk.wait_text(conv_id, "FYI: the client asks about refunds")
    env.desk.wait_calls("closeChat", 1, conv_id)  # the one-time session is closed at once
    ops = env.desk.ops(conv_id)
    assert [op for op, _ in ops] == ["selectDestination", "sendText", "closeChat"], ops
    assert ops[0][1]["destinationId"] == "15"
    assert env.conv(conv_id)["state"] == "bot"
    # the bot keeps the conversation
    env.chat("c-1", "what now?")
    settle()
    assert "what now?" not in env.desk.texts(conv_id)
    assert env.conv(conv_id)["state"] == "bot"
    sw = env.switch_events(conv_id)
    assert sw and sw[-1].get("group") == "15", sw
    assert_clean(env)


def test_append_close_chat_button_on_bot_text(handoff):
    env = handoff()
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [
        {"type": "text", "text": "One moment."},
        {"type": "text", "text": "Connecting you with Sales."},
        switch(destination="20", appendCloseChatButton=True, closeChatPhrases=["End chat", "/end"],
               lastMessage="Sales left."),
    ]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    m = env.wait_callback_text(conv_id, "Connecting you with Sales.")
    assert m["author"]["kind"] == "bot"
    assert m.get("buttons") == [{"text": "End chat", "payload": "End chat"}], m
    first = env.wait_callback_text(conv_id, "One moment.")
    assert not first.get("buttons"), f"the button goes to the last bot text only: {first!r}"
    env.desk.wait_calls("selectDestination", 1, conv_id)
    # pressing the button sends its payload: it closes the chat
    env.send("c-1", m["buttons"][0]["payload"])
    env.desk.wait_calls("closeChat", 1, conv_id)
    env.wait_callback_text(conv_id, "Sales left.")
    assert_clean(env)


def test_append_close_chat_button_without_bot_text(handoff):
    env = handoff(transfer_message="Please hold on.")
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [
        switch(destination="20", appendCloseChatButton=True, closeChatPhrases=["End chat"]),
    ]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    m = env.wait_callback_text(conv_id, "Please hold on.")
    assert m["author"]["kind"] == "system", m
    assert m.get("buttons") == [{"text": "End chat", "payload": "End chat"}], m
    env.desk.wait_calls("selectDestination", 1, conv_id)
    assert_clean(env)


# --------------------------------------------------------------------------
# a Lua bot
# --------------------------------------------------------------------------

LUA_BOT = """
local M = {}

function M.on_message(conv, msg)
  local t = msg.text or ""
  if t == "agent please" then
    return { replies = {
      { type = "text", text = "Handing you over." },
      handoff{ destination = 20, first_message = "Lua bot: client wants sales",
               close_chat_phrases = { "/bot" }, append_close_chat_button = true,
               last_message = "Lua: the agent chat is over.", ignore_offline = false,
               attributes = { plan = "gold" }, custom_data = { from = "lua" } },
    } }
  elseif t == "offline please" then
    return { handoff{ destination = "30" } }
  elseif t == "online?" then
    return { { type = "text", text = "15:" .. tostring(hasOperatorsOnline("15"))
                                    .. " 30:" .. tostring(hasOperatorsOnline("30", "support")) } }
  end
  return { replies = { { type = "text", text = "lua says: " .. t } } }
end

function M.on_event(conv, event, data)
  return { { type = "text", text = "lua event " .. event .. " " .. tostring(data.reason or data.group) } }
end

return M
"""


def test_lua_bot_handoff_and_events(handoff):
    env = handoff(lua_bot_source=LUA_BOT)
    env.desk.wait_webhook()
    conv_id = env.send("c-1", "hi")
    env.wait_callback_text(conv_id, "lua says: hi")

    env.send("c-1", "online?")
    env.wait_callback_text(conv_id, "15:true 30:false")

    env.send("c-1", "offline please")
    env.wait_callback_text(conv_id, "lua event noLivechatOperatorsOnline 30")
    assert env.conv(conv_id)["state"] == "bot"

    env.send("c-1", "agent please")
    m = env.wait_callback_text(conv_id, "Handing you over.")
    assert [b["text"] for b in m.get("buttons") or []] == ["/bot"], m
    env.desk.wait_text(conv_id, "Lua bot: client wants sales")
    ops = env.desk.ops(conv_id)
    assert ops[0][0] == "selectDestination", ops
    sel = ops[0][1]
    assert sel["destinationId"] == "20" and sel["attributes"] == {"plan": "gold"}, sel
    assert sel.get("customData") == {"from": "lua"}, sel
    assert [op for op, _ in ops] == ["selectDestination", "sendText"], ops
    env.wait_state(conv_id, "queued")

    env.agent_says(conv_id, "Sales, hello")
    env.wait_state(conv_id, "agent")
    env.send("c-1", "I want the gold plan")
    env.desk.wait_text(conv_id, "I want the gold plan")

    env.desk.agent_closed(conv_id)
    env.wait_callback_text(conv_id, "Lua: the agent chat is over.")
    env.wait_callback_text(conv_id, "lua event livechatFinished agent")

    env.send("c-1", "bye")
    env.wait_callback_text(conv_id, "lua says: bye")
    # the Lua bot gets the close phrase as a message too
    env.send("c-1", "agent please")
    env.desk.wait_calls("selectDestination", 2, conv_id)
    env.send("c-1", "/BOT ")
    env.desk.wait_calls("closeChat", 1, conv_id)
    env.wait_callback_text(conv_id, "lua says: /BOT ")
    assert_clean(env)


# --------------------------------------------------------------------------
# reload and restart in the middle of an agent chat
# --------------------------------------------------------------------------


def test_reload_during_agent_chat(handoff):
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    gen = env.d.generation()
    assert env.d.reload_ok() == gen + 1
    # setWebhook again at the new load, same URL
    env.desk.wait_calls("setWebhook", 2)
    assert {c.json["url"] for c in env.desk.calls("setWebhook")} == {env.public_url + env.webhook_path}

    assert env.conv(conv_id)["state"] == "agent"
    env.agent_says(conv_id, "Still here after the reload")
    env.send("c-1", "me too")
    env.desk.wait_text(conv_id, "me too")
    settle()
    assert "me too" not in [m["text"] for m in env.bot.messages(conv_id)]
    env.send("c-1", "/bot")
    env.desk.wait_calls("closeChat", 1, conv_id)
    env.wait_callback_text(conv_id, "The agent left the chat.")
    env.bot.wait_message(conv_id, lambda b: b["text"] == "/bot")
    env.wait_callback_text(conv_id, "you said: /bot")
    assert_clean(env)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_during_agent_chat_keeps_it_and_its_timer(handoff, sig):
    env = handoff(inactivity_timeout=5)
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    seen_id = env.desk.new_event_id()
    env.agent_says(conv_id, "said once", event_id=seen_id)
    env.send("c-1", "before the restart")
    env.desk.wait_text(conv_id, "before the restart")
    assert env.desk.calls("closeChat", conv_id) == [], "timed out before the restart: raise inactivity_timeout"
    webhooks_before = len(env.desk.calls("setWebhook"))

    code = env.d.restart(sig=sig)
    if sig == signal.SIGTERM:
        assert code == 0, f"daemon exited with {code} on SIGTERM"
    restarted = time.monotonic()
    assert env.d.port == env.port

    env.desk.wait_calls("setWebhook", webhooks_before + 1)
    c = env.conv(conv_id)
    assert c["state"] == "agent" and c["group"] == "15" and c["agent"] == AGENT_NAME, c
    env.send("c-1", "after the restart")
    env.desk.wait_text(conv_id, "after the restart")
    # an event id seen before the restart is still a repeat
    assert env.desk.agent_text(conv_id, "said once", event_id=seen_id).status == 200
    env.agent_says(conv_id, "Welcome back")
    assert [m.get("text") for m in env.callbacks(conv_id)].count("said once") == 1
    settle()
    assert "after the restart" not in [m["text"] for m in env.bot.messages(conv_id)]

    # the inactivity timer of the chat still fires
    close = env.desk.wait_calls("closeChat", 1, conv_id, timeout=30)[0]
    assert close.t > restarted
    ev = env.bot.wait_event(conv_id, "livechatFinished")
    assert ev["data"] == {"reason": "inactivity"}, ev
    env.wait_callback_text(conv_id, "The agent left the chat.")
    env.chat("c-1", "hello bot")
    settle()
    assert len(env.desk.calls("closeChat", conv_id)) == 1
    assert_clean(env)


# --------------------------------------------------------------------------
# the desk's webhook
# --------------------------------------------------------------------------


def test_desk_webhook_auth_unknown_user_and_repeated_event(handoff):
    env = handoff()
    url = env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")

    wrong = url[: -len(API_KEY)] + "wrong-key"
    resp = env.desk.agent_text(conv_id, "should not arrive", url=wrong)
    assert_json_error(resp, 401)
    resp = env.desk.agent_text("no-such-user", "nobody")
    assert_json_error(resp, 404)

    ev_id = env.desk.new_event_id()
    first = env.desk.agent_text(conv_id, "only once", event_id=ev_id)
    assert first.status == 200, first
    env.wait_callback_text(conv_id, "only once")
    again = env.desk.agent_text(conv_id, "only once", event_id=ev_id)
    assert again.status == 200, again
    env.agent_says(conv_id, "a later one")  # the callback lane has passed the repeat by now
    texts = [m.get("text") for m in env.callbacks(conv_id)]
    assert texts.count("only once") == 1, texts
    assert "should not arrive" not in texts and "nobody" not in texts
    stored = [m.get("text") for m in env.api.messages_all(conv_id)]
    assert stored.count("only once") == 1, stored
    assert_clean(env)


def test_repeated_closed_event_does_not_end_a_later_chat(handoff):
    """docs/handoff.md: "`id` makes a repeated event harmless" - a desk that
    re-posts a Closed event (e.g. it did not see our answer) must not end the
    chat that was opened after it."""
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    closed_id = env.desk.new_event_id()
    assert env.desk.agent_closed(conv_id, event_id=closed_id).status == 200
    env.bot.wait_event(conv_id, "livechatFinished")
    env.wait_state(conv_id, "closed")

    env.send("c-1", "agent please")  # a new switch, a new chat
    env.desk.wait_calls("selectDestination", 2, conv_id)
    env.wait_state(conv_id, "queued")
    again = env.desk.post_event({"id": closed_id, "userId": conv_id, "type": "Closed",
                                 "employee": dict(DEFAULT_EMPLOYEE)})
    assert again.status == 200, again
    settle()
    assert env.conv(conv_id)["state"] == "queued", "a repeated Closed event ended the next chat"
    assert len(env.bot.events(conv_id)) == 1, env.bot.events(conv_id)
    assert_clean(env)


def test_theme_kept_with_the_switch(handoff):
    env = handoff()
    env.desk.wait_webhook()
    conv_id, dest, sw = _switch_and_get_destination(env, "c-1", destination="15", theme="/billing/refund")
    assert dest == "15"
    assert sw.get("theme") == "/billing/refund", f"theme not journaled with the switch: {sw!r}"
    assert_clean(env)


def test_history_labels_from_desk_config(handoff):
    env = handoff(history_labels={"client": "Kunde", "bot": "Robot"})
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch(destination="15", sendMessagesToOperator=True,
                                                   sendMessageHistoryAmount=2, firstMessage="over to you")]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    env.desk.wait_text(conv_id, "over to you")
    assert env.desk.texts(conv_id) == ["Robot: you said: hi", "Kunde: agent please", "over to you"]
    assert_clean(env)


def test_history_only_with_send_messages_to_operator(handoff):
    env = handoff()
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch(destination="15", sendMessageHistoryAmount=5)]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    env.desk.wait_text(conv_id, "agent please")
    settle()
    assert env.desk.texts(conv_id) == ["agent please"]
    assert_clean(env)


def test_desk_calls_are_retried_in_order(handoff):
    """Desk calls go through the outbox: a failing call is retried and the
    calls after it wait for it (one lane per conversation and desk)."""
    env = handoff()
    env.desk.wait_webhook()
    env.desk.fail_next("selectDestination", 2, 503)
    env.desk.fail_next("sendText", 1, 500)
    env.bot.text_replies["agent please"] = [switch(destination="15", sendMessagesToOperator=True,
                                                   sendMessageHistoryAmount=3)]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    env.desk.wait_text(conv_id, "agent please")
    assert [(op, b.get("text")) for op, b in env.desk.ops(conv_id)] == [
        ("selectDestination", None),
        ("sendText", "Client: hi"),
        ("sendText", "Bot: you said: hi"),
        ("sendText", "Client: agent please"),
        ("sendText", "agent please"),
    ]
    attempts = [r for r in env.desk.snapshot() if getattr(r, "op", None) == "selectDestination"]
    assert len(attempts) == 3, attempts
    assert_clean(env)


def test_activity_keeps_the_chat_open(handoff):
    """Messages from the client or the agent restart the inactivity count."""
    env = handoff(inactivity_timeout=3)
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    start = time.monotonic()
    i = 0
    pending = []
    while time.monotonic() - start < 5:  # longer than the timeout, never idle for long
        i += 1
        if i % 2:
            env.send("c-1", f"client {i}")
        else:
            assert env.desk.agent_text(conv_id, f"agent {i}").status == 200
        pending.append(env.d.metric("switchboard_timers_pending"))
        time.sleep(0.3)
    assert env.desk.calls("closeChat", conv_id) == [], "the chat timed out although there was activity"
    # one timer per chat, not one per message
    assert max(pending) == 1, f"switchboard_timers_pending during the chat: {pending}"
    assert env.conv(conv_id)["state"] == "agent"
    env.desk.wait_calls("closeChat", 1, conv_id, timeout=20)
    assert env.bot.wait_event(conv_id, "livechatFinished")["data"] == {"reason": "inactivity"}
    assert_clean(env)


def test_close_phrase_while_queued(handoff):
    env = handoff()
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [switch(destination="15", closeChatPhrases=["never mind"],
                                                   lastMessage="OK, back to the bot.")]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    env.wait_state(conv_id, "queued")
    env.desk.wait_text(conv_id, "agent please")
    env.send("c-1", "Never Mind")
    close = env.desk.wait_calls("closeChat", 1, conv_id)[0]
    assert close.json == {"userId": conv_id, "text": "The user closed the chat"}
    env.wait_callback_text(conv_id, "OK, back to the bot.")
    env.wait_callback_text(conv_id, "you said: Never Mind")
    assert env.conv(conv_id)["state"] == "bot"
    assert_clean(env)


def test_external_bot_may_use_snake_case_fields(handoff):
    """docs/handoff.md: both spellings are accepted in both places."""
    env = handoff()
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = [{"type": "switch", "destination": "20",
                                             "first_message": "snake first", "close_chat_phrases": ["bye agent"],
                                             "last_message": "snake last", "ignore_offline": True}]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    env.desk.wait_text(conv_id, "snake first")
    assert env.desk.calls("selectDestination", conv_id)[0].json["destinationId"] == "20"
    env.wait_state(conv_id, "queued")
    env.send("c-1", "bye agent")
    env.desk.wait_calls("closeChat", 1, conv_id)
    env.wait_callback_text(conv_id, "snake last")
    assert_clean(env)


def test_two_agent_chats_at_once_stay_apart(handoff):
    env = handoff()
    env.desk.wait_webhook()
    a = env.open_agent_chat("client-a", destination="15", lastMessage="bye A")
    b = env.open_agent_chat("client-b", destination="20", lastMessage="bye B")
    assert a != b
    env.agent_says(a, "for A only")
    env.agent_says(b, "for B only")
    env.send("client-a", "from A")
    env.send("client-b", "from B")
    env.desk.wait_text(a, "from A")
    env.desk.wait_text(b, "from B")
    assert "from B" not in env.desk.texts(a) and "from A" not in env.desk.texts(b)
    assert "for B only" not in [m.get("text") for m in env.callbacks(a)]
    assert "for A only" not in [m.get("text") for m in env.callbacks(b)]
    for r in env.cb.accepted():
        cid = r.json["client_id"]
        assert r.json["conversation_id"] == {"client-a": a, "client-b": b}[cid], r.json
    # ending one leaves the other alone
    env.desk.agent_closed(a)
    env.wait_callback_text(a, "bye A")
    env.wait_state(a, "closed")
    assert env.conv(b)["state"] == "agent"
    env.send("client-b", "still with B's agent")
    env.desk.wait_text(b, "still with B's agent")
    assert [e["event"] for e in env.bot.events(b)] == []
    assert_clean(env)


def test_inactivity_timer_survives_reload(handoff):
    env = handoff(inactivity_timeout=2)
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    env.d.reload_ok()
    env.desk.wait_calls("closeChat", 1, conv_id, timeout=20)
    assert env.bot.wait_event(conv_id, "livechatFinished")["data"] == {"reason": "inactivity"}
    env.wait_callback_text(conv_id, "The agent left the chat.")
    assert_clean(env)


def test_switch_in_a_later_bot_answer(handoff):
    """A bot may answer later through POST /v1/conversations/{id}/replies
    (docs/conversations.md): a switch there hands off too."""
    env = handoff()
    env.desk.wait_webhook()
    env.bot.text_replies["agent please"] = []  # no answer now
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "agent please")
    env.bot.wait_message(conv_id, lambda b: b["text"] == "agent please")
    resp = env.api.replies(conv_id, [{"type": "text", "text": "Let me find someone."},
                                     switch(destination="20", lastMessage="later bye")])
    assert resp.status == 202, resp
    env.wait_callback_text(conv_id, "Let me find someone.")
    env.desk.wait_text(conv_id, "agent please")
    assert env.desk.calls("selectDestination", conv_id)[0].json["destinationId"] == "20"
    env.wait_state(conv_id, "queued")
    assert_clean(env)


@pytest.mark.parametrize("ttl", [0, 1])
def test_availability_cache_follows_availability_ttl(handoff, ttl):
    """getDestinations answers are cached `availability_ttl` seconds: a
    change at the desk shows once that time has passed (0: at once)."""
    env = handoff(availability_ttl=ttl)
    env.desk.wait_webhook()
    resp = env.api.get("/v1/groups/15/availability")
    assert resp.status == 200 and resp.json()["online"] is True, resp
    env.desk.set_destinations({"15": ("Support", False)})
    wait_until(lambda: env.api.get("/v1/groups/15/availability").json().get("online") is False,
               timeout=ttl + 8, message=f"availability to follow the desk with availability_ttl={ttl}")
    assert_clean(env)


def test_set_webhook_retried_until_the_desk_takes_it(handoff):
    """setWebhook goes through the outbox: a desk that is down at start gets it later."""
    env = handoff(start=False)
    env.desk.fail_next("setWebhook", 2, 503)
    env.d.start()
    env.desk.wait_calls("setWebhook", 1)
    attempts = [r for r in env.desk.snapshot() if getattr(r, "op", None) == "setWebhook"]
    assert len(attempts) == 3, attempts
    assert env.desk.webhook_url == env.public_url + env.webhook_path
    assert_clean(env)


def test_history_has_only_client_and_bot_messages(handoff):
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15", lastMessage="chat one over")
    env.send("c-1", "to the agent")
    env.desk.wait_text(conv_id, "to the agent")
    env.desk.agent_closed(conv_id)
    env.wait_callback_text(conv_id, "chat one over")
    env.bot.wait_event(conv_id, "livechatFinished")
    env.bot.text_replies["again please"] = [switch(destination="20", sendMessagesToOperator=True,
                                                   sendMessageHistoryAmount=3)]
    env.chat("c-1", "back")
    env.send("c-1", "again please")
    env.desk.wait_calls("selectDestination", 2, conv_id)
    env.desk.wait_text(conv_id, "again please")
    ops = env.desk.ops(conv_id)
    second = max(i for i, (op, _) in enumerate(ops) if op == "selectDestination")
    assert [b["text"] for _, b in ops[second + 1:]] == [
        "Client: back", "Bot: you said: back", "Client: again please", "again please",
    ], ops[second:]
    assert_clean(env)


# --------------------------------------------------------------------------
# the fake itself is strict (so that the tests above can fail)
# --------------------------------------------------------------------------


def test_fake_operator_api_rejects_what_breaks_the_contract():
    desk = FakeOperatorApi(destinations={"15": True})
    try:
        def call(method, op, body=None, raw=None, ctype="application/json"):
            data = raw if raw is not None else (None if body is None else json.dumps(body))
            headers = {"Content-Type": ctype} if data is not None else {}
            return http_request("127.0.0.1", desk.port, method, f"/operatorapi/{op}", body=data, headers=headers)

        assert call("GET", "getDestinations").json() == [
            {"destinationId": "15", "name": "Group 15", "hasOnline": "true"}]
        bad = [
            call("GET", "sendText"),                                          # wrong method
            call("POST", "sendMessage", {"userId": "u", "text": "x"}),        # unknown operation
            call("POST", "setWebhook", raw="not json"),                        # not JSON
            call("POST", "setWebhook", {"url": "/relative"}),                  # not an absolute URL
            call("POST", "selectDestination", {"userId": 5, "destinationId": "15"}),    # userId not a string
            call("POST", "selectDestination", {"userId": "u", "destinationId": 15}),    # id not a string
            call("POST", "selectDestination", {"userId": "u", "destinationId": "99"}),  # unknown group
            call("POST", "sendText", {"userId": "u", "text": "before any session"}),
            call("POST", "closeChat", {"userId": "u", "text": "no session"}),
            call("POST", "selectDestination", {"userId": "u", "destinationId": "15"}, ctype="text/plain"),
        ]
        assert all(400 <= r.status < 500 for r in bad), bad
        assert len(desk.violations) == len(bad), desk.violations
        ok = [
            call("POST", "selectDestination", {"userId": "u", "destinationId": "15", "userName": "web u",
                                               "attributes": {}, "hiddenAttributes": {}, "customData": {}}),
            call("POST", "sendText", {"userId": "u", "text": "hello"}),
            call("POST", "sendFile", {"userId": "u", "url": "http://x/y.png", "fileName": "y.png", "size": 1}),
            call("POST", "closeChat", {"userId": "u", "text": "The user closed the chat"}),
        ]
        assert [r.status for r in ok] == [200] * 4, ok
        assert call("POST", "sendFile", {"userId": "u", "url": "http://x/y", "fileName": "y", "size": "1"}).status == 400
        assert [op for op, _ in desk.ops("u")] == ["selectDestination", "sendText", "sendFile", "closeChat"]
        with pytest.raises(AssertionError):
            desk.assert_no_violations()
    finally:
        desk.close()


def test_close_phrase_case_insensitive_beyond_ascii(handoff):
    """JAICP scripts often use Cyrillic phrases ("Закрыть диалог")."""
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15", closeChatPhrases=["Закрыть диалог", "/closeChat"],
                                  lastMessage="Диалог с оператором завершен")
    env.send("c-1", " ЗАКРЫТЬ ДИАЛОГ ")
    close = env.desk.wait_calls("closeChat", 1, conv_id)[0]
    assert close.json == {"userId": conv_id, "text": "The user closed the chat"}
    env.wait_callback_text(conv_id, "Диалог с оператором завершен")
    env.wait_callback_text(conv_id, "you said:  ЗАКРЫТЬ ДИАЛОГ ")
    # a text that only contains the phrase is not a close phrase
    conv2 = env.open_agent_chat("c-2", destination="15", closeChatPhrases=["Закрыть диалог"])
    env.send("c-2", "не надо закрыть диалог")
    env.desk.wait_text(conv2, "не надо закрыть диалог")
    assert env.desk.calls("closeChat", conv2) == []
    assert_clean(env)
