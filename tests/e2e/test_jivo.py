"""JivoChat as a business channel end to end (docs/providers/jivo.md): Jivo is
the client's side and the agents' desk at once. The strict fake of
fake_jivo.py posts Jivo's events to the real binary and takes our
BOT_MESSAGE and INVITE_AGENT calls; the bot is test_handoff's external
HandoffBot (messages and bot events).

Config: channel ``jivo`` (type jivo, bot ``ext``, desk ``jivo_agents``) and
desk ``jivo_agents`` (type jivo).
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from conftest import REPO_ROOT, assert_json_error, http_request, run_cli, wait_until
from convkit import Api, close_fakes, http_bot, install_lua_tree, write_conv_config
from fake_jivo import FakeJivo
from test_handoff import HandoffBot, switch

PROVIDER_ID = "p-1"
BOT_TOKEN = "t-1"
SECRET = "s-1"
CHANNEL = "jivo"
DESK = "jivo_agents"
WEBHOOK_PATH = f"/v1/providers/{CHANNEL}/jivo/{SECRET}"


class Env:
    """Daemon + fake Jivo + bot of one test, and conversation helpers."""

    def __init__(self, daemon, jivo, bot):
        self.d = daemon
        self.jivo = jivo
        self.bot = bot
        self.api = Api(daemon)

    def say(self, client_id, text, **kw):
        """A CLIENT_MESSAGE Jivo must get 200 for."""
        resp = self.jivo.client_message(client_id, text, **kw)
        assert resp.status == 200, f"CLIENT_MESSAGE answered {resp!r}"
        return resp

    def chat(self, client_id, text, **kw) -> str:
        """A client message answered by the echoing bot; returns the conversation id."""
        self.say(client_id, text, **kw)
        self.jivo.wait_text(client_id, f"you said: {text}")
        return self.conv_id(client_id)

    def conv_id(self, client_id) -> str:
        convs = [c for c in self.api.conversations_all(channel=CHANNEL) if c["client_id"] == client_id]
        assert len(convs) == 1, convs
        return convs[0]["id"]

    def conv(self, conv_id) -> dict:
        return self.api.conversation(conv_id)

    def wait_state(self, conv_id, state) -> dict:
        return wait_until(lambda: (lambda c: c if c["state"] == state else None)(self.conv(conv_id)),
                          message=f"conversation {conv_id} in state {state!r}")

    def events(self, conv_id) -> list[dict]:
        return self.api.events_all(conv_id)

    def event_types(self, conv_id) -> list[str]:
        return [e["type"] for e in self.events(conv_id)]

    def invite(self, client_id, trigger="agent please", **switch_fields) -> str:
        """bot conversation -> switch -> INVITE_AGENT; returns the conversation id (queued)."""
        fields = {"lastMessage": "The agent left the chat."}
        fields.update(switch_fields)
        self.bot.text_replies[trigger] = [{"type": "text", "text": "Connecting you with an agent."}, switch(**fields)]
        conv_id = self.chat(client_id, "hi")
        self.say(client_id, trigger)
        self.jivo.wait_calls("INVITE_AGENT", 1, client_id)
        self.wait_state(conv_id, "queued")
        return conv_id

    def agent_chat(self, client_id, **switch_fields) -> str:
        conv_id = self.invite(client_id, **switch_fields)
        resp = self.jivo.agent_joined(client_id, agent={"id": "42", "name": "Olga"})
        assert resp.status == 200 and resp.json() == {"ok": True}, resp
        self.wait_state(conv_id, "agent")
        return conv_id


def jivo_channel(api_base, **over):
    ch = {"type": "jivo", "provider_id": PROVIDER_ID, "bot_token": BOT_TOKEN, "secret": SECRET,
          "api_base": api_base, "bot": "ext", "desk": DESK}
    ch.update(over)
    return {k: v for k, v in ch.items() if v is not None}


@pytest.fixture
def jivo_env(daemon, request):
    """Factory: ``jivo_env(desk=None, outbox=None, fake_invite_field="message", **channel_overrides)``
    -> Env (started); ``desk``: keys of the desk's config, ``channel_overrides``: of the channel's."""
    made = []

    def make(desk=None, outbox=None, fake_invite_field="message", **channel_over):
        jivo = FakeJivo(provider_id=PROVIDER_ID, token=BOT_TOKEN, invite_message_field=fake_invite_field)
        bot = HandoffBot()
        made.extend([jivo, bot])
        install_lua_tree(daemon)
        write_conv_config(daemon, channels={CHANNEL: jivo_channel(jivo.url, **channel_over)},
                          bots={"ext": http_bot(bot.bot_url)},
                          desks={DESK: {"type": "jivo", "inactivity_timeout": 600, **(desk or {})}},
                          outbox=outbox)
        daemon.start()
        jivo.engine_url = daemon.url(WEBHOOK_PATH)
        return Env(daemon, jivo, bot)

    yield make
    close_fakes(request, made, last=25)


def assert_clean(env):
    env.jivo.assert_no_violations()
    env.bot.assert_no_violations()


def settle(seconds=0.4):
    """A moment for the engine to do something it must not do."""
    time.sleep(seconds)


# --------------------------------------------------------------------------
# the bot's conversation
# --------------------------------------------------------------------------


def test_bot_conversation(jivo_env):
    env = jivo_env()
    resp = env.say("1233", "Can you help me?", name="John Smith", page_url="https://test.com/cart")
    assert resp.json() == {"ok": True}, resp
    call = env.jivo.wait_text("1233", "you said: Can you help me?")
    first_chat = env.jivo.chat_of("1233")
    assert call.json["chat_id"] == first_chat and call.json["client_id"] == "1233", call.json
    assert call.json["message"]["type"] == "TEXT"

    conv_id = env.conv_id("1233")
    c = env.conv(conv_id)
    assert c["state"] == "bot" and c["channel"] == CHANNEL
    assert c["client"]["name"] == "John Smith" and c["client"]["page_url"] == "https://test.com/cart", c
    assert [m["text"] for m in env.bot.messages(conv_id)] == ["Can you help me?"]

    # the same client in a new chat: replies go to the chat Jivo named last
    second_chat = env.jivo.new_chat("1233")
    assert env.chat("1233", "still there?") == conv_id
    assert env.jivo.wait_text("1233", "you said: still there?").json["chat_id"] == second_chat
    texts = [m["text"] for m in env.api.messages_all(conv_id)]
    assert texts == ["Can you help me?", "you said: Can you help me?", "still there?", "you said: still there?"]
    assert_clean(env)


def test_buttons(jivo_env):
    env = jivo_env()
    env.bot.text_replies["menu"] = [
        {"type": "text", "text": "Delivery in NY?"},
        {"type": "buttons", "buttons": [{"text": "Yes", "payload": "yes-ny"}, "No"]},
    ]
    env.say("c-1", "menu")
    call = env.jivo.wait_calls("BOT_MESSAGE", 1, "c-1", lambda b: b["message"]["type"] == "BUTTONS")[0]
    m = call.json["message"]
    assert m["title"] == "Delivery in NY?" and m["text"] == "Delivery in NY? Yes / No", m
    assert m["buttons"] == [{"text": "Yes", "id": "yes-ny"}, {"text": "No", "id": "2"}], m
    # a pressed button comes back as the client's message
    env.chat("c-1", "Yes")
    assert_clean(env)


def test_bot_messages_keep_their_order_per_chat(jivo_env):
    env = jivo_env()
    env.bot.text_replies["many"] = [{"type": "text", "text": f"part {i}"} for i in range(1, 6)]
    env.jivo.fail_next(2, status=503)   # the first ones are retried; the rest wait behind them
    env.say("c-1", "many")
    env.jivo.wait_text("c-1", "part 5")
    assert env.jivo.texts("c-1") == [f"part {i}" for i in range(1, 6)]
    assert_clean(env)


# --------------------------------------------------------------------------
# INVITE_AGENT
# --------------------------------------------------------------------------


def test_invite_agent_after_the_bots_messages(jivo_env):
    env = jivo_env()
    conv_id = env.invite("c-1")
    calls = env.jivo.calls(client_id="c-1")
    assert [(r.event, r.json.get("message", {}).get("text")) for r in calls] == [
        ("BOT_MESSAGE", "you said: hi"), ("BOT_MESSAGE", "Connecting you with an agent."), ("INVITE_AGENT", None)]
    invite = calls[-1].json
    # Jivo's agents see the chat: no default first message repeated to them
    assert set(invite) == {"event", "id", "client_id", "chat_id"}, invite
    assert invite["chat_id"] == env.jivo.chat_of("c-1")
    sw = [e["data"] for e in env.events(conv_id) if e["type"] == "switch"][-1]
    assert sw["desk"] == DESK and sw["group"] == "agents" and str(sw["rule"]) == "3", sw
    assert env.conv(conv_id)["desk"] == DESK
    assert_clean(env)


def test_invite_agent_with_history_and_first_message(jivo_env):
    env = jivo_env(desk={"history_labels": {"client": "Visitor", "bot": "Bot"}})
    env.chat("c-1", "my order is late")
    env.invite("c-1", firstMessage="Order 42 is late", sendMessagesToOperator=True, sendMessageHistoryAmount=4)
    invite = env.jivo.calls("INVITE_AGENT", "c-1")[-1].json
    # the last four client and bot messages, oldest first (the bot's words
    # of the switching answer included), then the first message
    assert invite["message"] == {"type": "TEXT", "text": "\n".join([
        "Visitor: hi", "Bot: you said: hi", "Visitor: agent please", "Bot: Connecting you with an agent.",
        "Order 42 is late"])}, invite
    assert_clean(env)


@pytest.mark.parametrize("field", ["message", "note", False])
def test_invite_message_field_is_configurable(jivo_env, field):
    """The field's name is not documented: a config value (the fake takes the same one)."""
    env = jivo_env(invite_message_field=field, fake_invite_field=field or "message")
    env.invite("c-1", firstMessage="VIP client", sendMessagesToOperator=True, sendMessageHistoryAmount=1)
    invite = env.jivo.calls("INVITE_AGENT", "c-1")[-1].json
    if field:
        assert invite[field] == {"type": "TEXT", "text": "Bot: Connecting you with an agent.\nVIP client"}, invite
    else:
        assert set(invite) == {"event", "id", "client_id", "chat_id"}, invite
    assert_clean(env)


def test_offline_at_the_switch(jivo_env):
    """agents_online false in the last CLIENT_MESSAGE: no INVITE_AGENT, the bot is told."""
    env = jivo_env()
    env.bot.text_replies["agent please"] = [switch()]
    env.bot.event_replies["noLivechatOperatorsOnline"] = [{"type": "text", "text": "Nobody is there."}]
    conv_id = env.chat("c-1", "hi", agents_online=False)
    resp = env.api.get("/v1/groups/agents/availability", desk=DESK)
    assert resp.status == 200 and resp.json()["online"] is False, resp
    env.say("c-1", "agent please", agents_online=False)
    ev = env.bot.wait_event(conv_id, "noLivechatOperatorsOnline")
    assert ev["data"] == {"group": "agents", "desk": DESK}, ev
    env.jivo.wait_text("c-1", "Nobody is there.")
    assert env.jivo.calls("INVITE_AGENT") == []
    assert env.conv(conv_id)["state"] == "bot"

    # with ignoreOffline the chat is handed over anyway
    env.bot.text_replies["agent anyway"] = [switch(ignoreOffline=True)]
    env.say("c-1", "agent anyway", agents_online=False)
    env.jivo.wait_calls("INVITE_AGENT", 1, "c-1")
    env.wait_state(conv_id, "queued")

    # the flag follows the last CLIENT_MESSAGE
    env.say("c-1", "still waiting", agents_online=True)
    resp = wait_until(lambda: (lambda r: r if r.json()["online"] else None)(
        env.api.get("/v1/groups/any-group/availability", desk=DESK)), message="agents online again")
    assert resp.json() == {"desk": DESK, "group": "any-group", "name": "any-group", "online": True}
    assert_clean(env)


# --------------------------------------------------------------------------
# AGENT_JOINED, AGENT_UNAVAILABLE, CHAT_CLOSED
# --------------------------------------------------------------------------


def test_agent_joined_then_client_messages_do_not_reach_the_bot(jivo_env):
    env = jivo_env()
    conv_id = env.agent_chat("c-1")
    c = env.conv(conv_id)
    assert c["agent"] == "Olga", c
    started = [e["data"] for e in env.events(conv_id) if e["type"] == "livechat_started"]
    assert started == [{"desk": DESK, "group": "agents", "agent": "Olga", "agent_id": "42"}], started

    bot_calls = len(env.bot.answered())
    jivo_calls = len(env.jivo.calls())
    env.say("c-1", "hello agent")
    env.api.wait_messages(conv_id, lambda ms: any(m["text"] == "hello agent" for m in ms))
    settle()
    assert len(env.bot.answered()) == bot_calls, "a client message in an agent chat reached the bot"
    assert len(env.jivo.calls()) == jivo_calls, "nothing goes to Jivo: its agents see the client's messages"
    assert env.conv(conv_id)["state"] == "agent"
    assert_clean(env)


def test_agent_joined_without_agent_fields(jivo_env):
    env = jivo_env()
    conv_id = env.invite("c-1")
    assert env.jivo.agent_joined("c-1").status == 200
    c = env.wait_state(conv_id, "agent")
    assert c.get("agent") in (None, ""), c
    assert_clean(env)


def test_agent_unavailable_returns_the_chat_to_the_bot(jivo_env):
    env = jivo_env()
    env.bot.event_replies["noLivechatOperatorsOnline"] = [{"type": "text", "text": "No agent, I stay with you."}]
    conv_id = env.invite("c-1")
    resp = env.jivo.agent_unavailable("c-1")
    assert resp.status == 200 and resp.json() == {"ok": True}, resp
    ev = env.bot.wait_event(conv_id, "noLivechatOperatorsOnline")
    assert ev["data"] == {"group": "agents", "desk": DESK}, ev
    env.jivo.wait_text("c-1", "No agent, I stay with you.")
    assert env.wait_state(conv_id, "bot")
    unavailable = [e["data"] for e in env.events(conv_id) if e["type"] == "livechat_unavailable"]
    assert unavailable == [{"desk": DESK, "group": "agents", "action": "returned"}], unavailable
    env.chat("c-1", "ok, bot")   # the bot has it again
    assert_clean(env)


def test_agent_unavailable_with_ignore_offline_keeps_waiting(jivo_env):
    env = jivo_env()
    conv_id = env.invite("c-1", ignoreOffline=True)
    assert env.jivo.agent_unavailable("c-1").status == 200
    wait_until(lambda: "livechat_unavailable" in env.event_types(conv_id), message="livechat_unavailable journaled")
    unavailable = [e["data"] for e in env.events(conv_id) if e["type"] == "livechat_unavailable"]
    assert unavailable == [{"desk": DESK, "group": "agents", "action": "waiting"}], unavailable
    settle()
    assert env.conv(conv_id)["state"] == "queued"
    assert env.bot.events(conv_id) == []
    # an agent may still take it
    assert env.jivo.agent_joined("c-1", agent={"id": "7", "name": "Ivan"}).status == 200
    env.wait_state(conv_id, "agent")
    assert_clean(env)


def test_chat_closed_then_the_bot_answers_again_livechat_finished_first(jivo_env):
    env = jivo_env()
    conv_id = env.agent_chat("c-1")
    resp = env.jivo.chat_closed("c-1")
    assert resp.status == 200 and resp.json() == {"ok": True}, resp
    env.wait_state(conv_id, "closed")
    env.jivo.wait_text("c-1", "The agent left the chat.")
    wait_until(lambda: "livechat_finished" in env.event_types(conv_id), message="livechat_finished journaled")
    finished = [e["data"] for e in env.events(conv_id) if e["type"] == "livechat_finished"]
    assert finished == [{"reason": "agent", "desk": DESK, "group": "agents"}], finished
    settle()
    assert env.bot.events(conv_id) == [], "livechatFinished waits for the client's next message"

    env.jivo.new_chat("c-1")
    env.chat("c-1", "back again")
    order = [(r.json.get("event"), r.json.get("text")) for r in env.bot.answered()
             if r.json["conversation_id"] == conv_id]
    assert order[-2:] == [("livechatFinished", None), ("message", "back again")], order
    assert env.bot.events(conv_id)[0]["data"] == {"reason": "agent"}
    assert env.conv(conv_id)["state"] == "bot"
    assert_clean(env)


def test_close_phrase_ends_the_chat_on_our_side(jivo_env):
    env = jivo_env()
    conv_id = env.agent_chat("c-1", closeChatPhrases=["/bot"])
    env.chat("c-1", "/bot")   # the phrase goes to the bot as a message
    assert env.conv(conv_id)["state"] == "bot"
    env.d.wait_for_log(msg="jivo: the chat ended here; Jivo's Bot API cannot end it for the agent",
                       conversation=conv_id)
    assert "The agent left the chat." in env.jivo.texts("c-1")
    assert_clean(env)


# --------------------------------------------------------------------------
# what Jivo repeats, and events for no live chat
# --------------------------------------------------------------------------


def test_duplicate_events_are_processed_once(jivo_env):
    env = jivo_env()
    ev_id = env.jivo.new_event_id()
    assert env.say("c-1", "once", event_id=ev_id).json() == {"ok": True}
    again = env.say("c-1", "once", event_id=ev_id)
    assert again.json() == {"ok": True, "duplicate": True}, again
    env.chat("c-1", "later")   # the bot's lane is past the repeat
    conv_id = env.conv_id("c-1")
    assert [m["text"] for m in env.bot.messages(conv_id)] == ["once", "later"]
    assert [m["text"] for m in env.api.messages_all(conv_id) if m["author"]["kind"] == "client"] == ["once", "later"]

    env.invite("c-1")
    joined = env.jivo.new_event_id()
    assert env.jivo.agent_joined("c-1", agent={"id": "42", "name": "Olga"}, event_id=joined).status == 200
    again = env.jivo.agent_joined("c-1", agent={"id": "43", "name": "Other"}, event_id=joined)
    assert again.json() == {"ok": True, "duplicate": True}, again
    assert env.conv(conv_id)["agent"] == "Olga"

    closed = env.jivo.new_event_id()
    assert env.jivo.chat_closed("c-1", event_id=closed).status == 200
    assert env.jivo.chat_closed("c-1", event_id=closed).json() == {"ok": True, "ignored": True}
    types = env.event_types(conv_id)
    assert types.count("livechat_started") == 1 and types.count("livechat_finished") == 1, types
    assert env.jivo.texts("c-1").count("The agent left the chat.") == 1
    assert_clean(env)


def test_events_for_no_live_chat_are_acknowledged_and_change_nothing(jivo_env):
    env = jivo_env()
    conv_id = env.chat("c-1", "hi")
    before = (env.conv(conv_id), env.events(conv_id), env.api.messages_all(conv_id))
    for send in (env.jivo.agent_joined, env.jivo.agent_unavailable, env.jivo.chat_closed):
        for client in ("c-1", "never-seen"):
            resp = send(client)
            assert resp.status == 200 and resp.json() == {"ok": True, "ignored": True}, (send, client, resp)
    assert (env.conv(conv_id), env.events(conv_id), env.api.messages_all(conv_id)) == before
    assert [c["client_id"] for c in env.api.conversations_all(channel=CHANNEL)] == ["c-1"]
    # a live chat, and an event about another (older) chat of the same client
    env.invite("c-1")
    old_chat = env.jivo.chat_of("c-1")
    env.jivo.new_chat("c-1")
    env.say("c-1", "new chat, still queued")
    env.api.wait_messages(conv_id, lambda ms: ms[-1]["text"] == "new chat, still queued")
    assert env.jivo.chat_closed("c-1", chat_id=old_chat).json() == {"ok": True, "ignored": True}
    assert env.conv(conv_id)["state"] == "queued"
    assert env.event_types(conv_id).count("livechat_finished") == 0
    assert_clean(env)


def test_unknown_event_types_are_acknowledged(jivo_env):
    env = jivo_env()
    resp = env.jivo.post_event({"id": "x-1", "client_id": "c-1", "chat_id": "1", "event": "CONTACT_FORM_SENT"})
    assert resp.status == 200 and resp.json() == {"ok": True, "ignored": True}, resp
    assert env.api.conversations_all(channel=CHANNEL) == []


def test_a_slow_bot_does_not_delay_jivos_answer(jivo_env):
    """Jivo waits 3 s for our answer, then retries and finally hands the chat
    to an agent: a bot that takes 5 s must not hold the answer."""
    env = jivo_env(outbox={"timeout": 15})
    env.bot.delay = 5.0
    resp = env.say("c-1", "slow one")
    reply = env.jivo.wait_text("c-1", "you said: slow one", timeout=30)
    assert resp.status == 200 and resp.done < reply.t, "Jivo got its answer only after the bot had replied"
    assert_clean(env)


# --------------------------------------------------------------------------
# what Jivo must not be able to do
# --------------------------------------------------------------------------


def test_wrong_secret_is_401_and_writes_nothing(jivo_env):
    env = jivo_env()
    good = env.jivo.engine_url
    for url in (good[: -len(SECRET)] + "wrong", env.d.url(f"/v1/providers/nobody/jivo/{SECRET}")):
        resp = env.jivo.post_event({"id": "e-1", "client_id": "c-1", "chat_id": "1", "event": "CLIENT_MESSAGE",
                                    "message": {"type": "TEXT", "text": "sneaky", "timestamp": 1665415879}}, url=url)
        assert_json_error(resp, 401, "unauthorized")
    assert env.api.conversations_all() == []
    settle()
    assert env.bot.snapshot() == [] and env.jivo.snapshot() == []


@pytest.mark.parametrize("body, field", [
    ({"id": "e-1", "chat_id": "1", "event": "CLIENT_MESSAGE", "message": {"type": "TEXT", "text": "x"}}, "client_id"),
    ({"id": "e-1", "client_id": "c-1", "event": "CLIENT_MESSAGE", "message": {"type": "TEXT", "text": "x"}}, "chat_id"),
    ({"id": "e-1", "client_id": "c-1", "chat_id": "1", "event": "CLIENT_MESSAGE"}, "message"),
    ({"id": "e-1", "client_id": "c-1", "chat_id": "1", "event": "CLIENT_MESSAGE", "message": {"type": "TEXT"}},
     "message.text"),
    ({"id": "e-1", "client_id": "c-1", "chat_id": "1", "event": "CLIENT_MESSAGE",
      "message": {"type": "TEXT", "text": "bad \u0000"}}, "message.text"),
    ({"id": ["e-1"], "client_id": "c-1", "event": "CHAT_CLOSED"}, "id"),
    ({"client_id": "c-1", "event": "CHAT_CLOSED"}, "id"),
    (None, "the body"),
])
def test_a_request_jivo_sent_wrong_is_400_naming_the_field(jivo_env, body, field):
    env = jivo_env()
    resp = env.jivo.post_event(body, raw=b"null" if body is None else None)
    err = assert_json_error(resp, 400, "invalid_field")
    assert err["message"].startswith(field + " "), err
    assert env.api.conversations_all() == []


def test_not_json_is_400(jivo_env):
    env = jivo_env()
    assert_json_error(env.jivo.post_event(None, raw=b"{not json"), 400)


def test_the_token_is_never_in_a_stored_call(jivo_env):
    """A token Jivo refuses: 401, not retried, a dead letter whose URL holds
    the reference to the token, never the token."""
    env = jivo_env(bot_token="not-the-token")
    env.say("c-1", "hi")
    dead = wait_until(lambda: env.api.dead_all(), message="a dead letter")
    assert dead[0]["url"] == f"{env.jivo.url}/webhooks/{PROVIDER_ID}/${{channels.{CHANNEL}.bot_token}}", dead
    assert "not-the-token" not in str(dead)
    assert [p for _, probs in env.jivo.violations for p in probs] == ["token 'not-the-token', expected 't-1'"]


def test_the_example_config_loads_and_warns_about_what_is_missing(tmp_path):
    """examples/jivo.conf.lua passes --check; without its environment it says what is missing."""
    shutil.copytree(REPO_ROOT / "examples", tmp_path / "examples")
    for folder in ("scripts", "providers", "rules"):
        if (REPO_ROOT / folder).is_dir():
            shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    env = {"JIVO_PROVIDER_ID": "p-1", "JIVO_BOT_TOKEN": "t-1", "JIVO_SECRET": "s-1"}
    res = run_cli(["--check", "-c", "examples/jivo.conf.lua"], cwd=tmp_path, env=env)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res
    assert "jivo channel" not in res.stderr, res.stderr
    res = run_cli(["--check", "-c", "examples/jivo.conf.lua"], cwd=tmp_path)
    assert res.returncode == 0, res
    assert "jivo channel has no secret: every event from Jivo is refused" in res.stderr, res.stderr
    assert "jivo channel needs provider_id and bot_token" in res.stderr, res.stderr


def test_the_fake_refuses_what_breaks_the_contract():
    jivo = FakeJivo()
    try:
        jivo.sent_pairs.add(("c-1", "2037"))

        def post(body, path=f"/webhooks/{PROVIDER_ID}/{BOT_TOKEN}"):
            return http_request("127.0.0.1", jivo.port, "POST", path, body=json.dumps(body),
                                headers={"Content-Type": "application/json"}).status

        ok = {"event": "BOT_MESSAGE", "id": "a", "client_id": "c-1", "chat_id": "2037",
              "message": {"type": "TEXT", "text": "hi", "timestamp": 1665415880}}
        assert post(ok) == 200
        assert post(ok) == 400, "an id taken before"
        assert post({**ok, "id": "b"}, path="/webhooks/other/t-1") == 404
        assert post({**ok, "id": "b"}, path=f"/webhooks/{PROVIDER_ID}/wrong") == 401
        assert post({**ok, "id": "b", "event": "CLIENT_INFO"}) == 405
        assert post({**ok, "id": "b", "chat_id": "9999"}) == 400, "a chat the fake never sent"
        assert post({**ok, "id": "b", "message": {"type": "TEXT", "text": ""}}) == 400
        assert post({**ok, "id": "b", "message": {"type": "BUTTONS", "title": "t", "text": "t A",
                                                  "buttons": [{"text": "A"}], "timestamp": 1665415880}}) == 400
        assert post({"event": "INVITE_AGENT", "id": "c", "client_id": "c-1", "chat_id": "2037",
                     "message": {"type": "TEXT", "text": "note"}}) == 200
        assert post({"event": "INVITE_AGENT", "id": "d", "client_id": "c-1", "chat_id": "2037", "extra": 1}) == 400
        assert len(jivo.violations) == 8
    finally:
        jivo.close()
