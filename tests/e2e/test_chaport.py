"""Chaport, a website live chat, into the built-in desk (issue 10, topology
2), end to end through the real binary against the strict fake of
fake_chaport.py: the visitor's chat is routed by page to a desk group,
agents answer as their Chaport operators (by email, a chosen one, or one
created on first use), Chaport's own bot messages are kept, agents' statuses
reach their operators (offline only after the delay, durably), and a chat
the desk ends is closed in Chaport.

Config: channel ``chaport`` (type chaport, no bot, desk ``helpdesk``); desk
``helpdesk`` (type builtin) with groups support (default), billing, tech.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import assert_json_error, wait_until
from convkit import Api, close_fakes, install_lua_tree, write_conv_config
from fake_chaport import FakeChaport, operator

CHANNEL = "chaport"
DESK = "helpdesk"
SECRET = "chaport-hook-secret"
TOKEN = "chaport-api-token"
HOOK_PATH = f"/v1/channels/{CHANNEL}/chaport/{SECRET}"
OFFLINE_DELAY = 1.5

# desk agent -> how the channel maps it to a Chaport operator
AGENTS = {
    "ann": {"name": "Ann Lee", "email": "ann@example.com", "groups": ["support", "billing"]},   # by email (default)
    "bob": {"name": "Bob Ray", "email": "bob@example.com", "groups": ["tech"]},                # op-shared
    "dan": {"name": "Dan Cho", "email": "dan@example.com", "groups": ["tech"]},                # op-shared too
    "carl": {"name": "Carl Orr", "email": "carl@example.com", "groups": ["support"]},          # created
    "eve": {"name": "Eve Ng", "email": "eve@example.com", "groups": ["support"]},              # by email: none
}
OPERATORS = [
    operator("op-ann", "ANN@example.com", "Ann in Chaport"),
    operator("op-shared", "team@example.com", "Support team"),
]


def token_of(agent):
    return f"{agent}-token"


def desk_config(offline_delay):
    return {
        "type": "builtin", "default_group": "support",
        "statuses": [{"name": "lunch", "label": "At lunch", "takes_chats": False},
                     {"name": "chats_only", "label": "Chats only", "takes_chats": True}],
        "groups": {"support": {"name": "Support"}, "billing": {"name": "Billing"},
                   "tech": {"name": "Technical questions"}},
        "agents": [dict(id=a, token=token_of(a), channels=[CHANNEL], capacity=3, **cfg) for a, cfg in AGENTS.items()],
    }


def chaport_channel(api_base, offline_delay, **over):
    ch = {
        "type": "chaport", "desk": DESK, "token": TOKEN, "webhook_secret": SECRET, "api_base": api_base,
        "page_routes": [{"pattern": "/pricing", "group": "billing"}, {"pattern": "/docs/api", "group": "tech"}],
        "operators": {"bob": {"id": "op-shared"}, "dan": {"id": "op-shared"}, "carl": {"create": True}},
        "offline_delay": offline_delay,
    }
    ch.update(over)
    return {k: v for k, v in ch.items() if v is not None}


class Env:
    """Daemon + fake Chaport of one test, and the desk's side."""

    def __init__(self, daemon, fake):
        self.d = daemon
        self.fake = fake
        self.api = Api(daemon)

    # ---- the visitor's side (Chaport) -----------------------------------

    def ok(self, resp):
        assert resp.status == 200 and resp.json().get("ok") is True, f"webhook answered {resp!r}"
        return resp

    def conv_id(self, visitor) -> str:
        convs = [c for c in self.api.conversations_all(channel=CHANNEL) if c["client_id"] == visitor]
        assert len(convs) == 1, convs
        return convs[0]["id"]

    def conv(self, conv_id) -> dict:
        return self.api.conversation(conv_id)

    def chat(self, visitor, text="Hello", **kw) -> str:
        """A visitor's first message: the chat waits at the desk."""
        self.ok(self.fake.visitor_message(visitor, text, **kw))
        conv_id = self.conv_id(visitor)
        assert self.conv(conv_id)["state"] == "queued", self.conv(conv_id)
        return conv_id

    def messages(self, conv_id) -> list[dict]:
        return self.api.messages_all(conv_id)

    # ---- the desk's side (agents) ---------------------------------------

    def as_agent(self, agent, method, path, body=None):
        headers = {"Authorization": f"Bearer {token_of(agent)}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        return self.d.request(method, path, data, headers=headers)

    def reply(self, agent, conv_id, text):
        resp = self.as_agent(agent, "POST", f"/v1/conversations/{conv_id}/messages", {"text": text})
        assert resp.status == 201, f"{agent}'s reply: {resp!r}"

    def set_status(self, agent, status):
        resp = self.as_agent(agent, "PUT", "/v1/agents/me/status", {"status": status})
        assert resp.status == 200 and resp.json()["status"] == status, resp
        return time.monotonic()

    def end(self, agent, conv_id):
        resp = self.as_agent(agent, "POST", f"/v1/conversations/{conv_id}/end", {"status": "solved"})
        assert resp.status == 200, resp


@pytest.fixture
def chaport_env(daemon, request):
    """Factory: ``chaport_env(offline_delay=OFFLINE_DELAY, **channel_overrides)`` -> Env (started)."""
    made = []

    def make(offline_delay=OFFLINE_DELAY, **over):
        fake = FakeChaport(token=TOKEN, operators=OPERATORS)
        made.append(fake)
        install_lua_tree(daemon)
        write_conv_config(daemon, channels={CHANNEL: chaport_channel(fake.api_base, offline_delay, **over)}, bots={},
                          desks={DESK: desk_config(offline_delay)})
        daemon.start()
        fake.engine_url = daemon.url(HOOK_PATH)
        return Env(daemon, fake)

    yield make
    close_fakes(request, made, last=25)


def settle(seconds=0.4):
    """A moment for the engine to do something it must not do."""
    time.sleep(seconds)


# --------------------------------------------------------------------------
# chats in
# --------------------------------------------------------------------------


def test_page_routing_sends_each_chat_to_its_pages_group(chaport_env):
    env = chaport_env()
    pricing = env.chat("v-pricing", "How much is it?", start_page="https://shop.example.com/pricing?plan=pro",
                       page="https://shop.example.com/checkout")
    docs = env.chat("v-docs", "Which endpoint?", page="https://shop.example.com/docs/api/messages")
    other = env.chat("v-other", "Hi", page="https://shop.example.com/blog/hello", visitor_name="Olga",
                     email="olga@example.com")
    assert env.conv(pricing)["group"] == "billing"
    assert env.conv(docs)["group"] == "tech"
    assert env.conv(other)["group"] == "support"
    client = env.conv(other)["client"]
    assert client["name"] == "Olga" and client["email"] == "olga@example.com", client
    assert client["page_url"] == "https://shop.example.com/blog/hello", client
    assert [m["text"] for m in env.messages(pricing) if m["author"]["kind"] == "client"] == ["How much is it?"]
    env.fake.assert_no_violations()


def test_chaports_bot_messages_are_kept_as_bot_messages_and_sent_nowhere(chaport_env):
    env = chaport_env()
    env.ok(env.fake.bot_message("v-1", "Hi! How can we help?", bot="Chappie"))
    conv_id = env.conv_id("v-1")
    assert env.conv(conv_id)["state"] == "bot"   # a bot's greeting does not open a chat at the desk
    env.chat("v-1", "I need a human")
    msgs = env.messages(conv_id)
    assert [(m["author"]["kind"], m["author"].get("name"), m["text"]) for m in msgs[:2]] == [
        ("bot", "Chappie", "Hi! How can we help?"), ("client", None, "I need a human")], msgs
    settle()
    assert env.fake.messages == [], "Chaport's own bot message was sent back to Chaport"
    env.fake.assert_no_violations()


def test_a_repeated_webhook_stores_its_message_once(chaport_env):
    env = chaport_env()
    for _ in range(2):
        env.ok(env.fake.visitor_message("v-2", "only once", message_id="m-42"))
    conv_id = env.conv_id("v-2")
    assert [m["text"] for m in env.messages(conv_id) if m["author"]["kind"] == "client"] == ["only once"]


def test_a_wrong_secret_is_401_and_writes_nothing(chaport_env):
    env = chaport_env()
    ev = env.fake.event("chat.message", "v-3", message=env.fake.message("visitor-message", "hello"))
    for path in (f"/v1/channels/{CHANNEL}/chaport/wrong-secret", f"/v1/channels/nope/chaport/{SECRET}"):
        resp = env.d.post(path, json.dumps(ev), headers={"Content-Type": "application/json"})
        assert_json_error(resp, 401, "unauthorized")
    assert env.api.conversations_all() == []


def test_a_bad_event_is_422_naming_the_payload_path_and_writes_nothing(chaport_env):
    env = chaport_env()
    ev = env.fake.event("chat.message", "v-4", message=env.fake.message("visitor-message", "hello"))
    del ev["visitor"]["id"]
    err = assert_json_error(env.fake.post_event(ev), 422, "invalid_field")
    assert err["message"] == "visitor.id is required", err
    ev = env.fake.event("chat.message", "v-4", message={"id": "m-1", "text": "no author type"})
    err = assert_json_error(env.fake.post_event(ev), 422, "invalid_field")
    assert err["message"] == "message.type is required", err
    assert env.api.conversations_all() == []


# --------------------------------------------------------------------------
# agents' replies: operator mapping
# --------------------------------------------------------------------------


def test_agents_reply_as_their_operators_by_email_chosen_or_created(chaport_env):
    env = chaport_env()
    conv_id = env.chat("v-5", "Hello?")
    env.reply("ann", conv_id, "Ann here")          # by email, whatever its case in Chaport
    env.reply("bob", conv_id, "Bob here")          # the chosen operator ...
    env.reply("dan", conv_id, "Dan here")          # ... which Dan shares
    env.reply("carl", conv_id, "Carl here")        # created on first reply
    env.reply("carl", conv_id, "Carl again")       # and reused
    wait_until(lambda: len(env.fake.sent("v-5")) == 5, message=f"5 replies at Chaport ({env.fake.sent('v-5')})")
    created = env.fake.created
    assert [(o["email"], o["name"], o["role"]) for o in created] == [("carl@example.com", "Carl Orr", "operator")]
    assert env.fake.sent("v-5") == [("op-ann", "Ann here"), ("op-shared", "Bob here"), ("op-shared", "Dan here"),
                                    (created[0]["id"], "Carl here"), (created[0]["id"], "Carl again")]
    env.fake.assert_no_violations()


def test_a_reply_of_an_agent_without_an_operator_ends_as_a_dead_letter_saying_why(chaport_env):
    env = chaport_env()
    conv_id = env.chat("v-9", "Hello?")
    env.reply("eve", conv_id, "Eve here")
    dead = wait_until(lambda: [d for d in env.api.dead_all() if d["target"] == "chaport.relay"], timeout=30,
                      message="a dead letter of the reply")
    assert len(dead) == 1 and dead[0]["conversation_id"] == conv_id and "no Chaport operator has the email eve@example.com" in dead[0]["reason"], dead
    assert env.fake.sent("v-9") == [] and env.fake.created == []
    env.fake.assert_no_violations()


def test_our_replies_coming_back_by_webhook_are_not_kept_twice_and_chaport_operators_are_kept(chaport_env):
    env = chaport_env()
    env.fake.echo = True
    conv_id = env.chat("v-6", "Hello?")
    env.reply("ann", conv_id, "Ann here")
    env.fake.wait_text("v-6", "Ann here")
    env.ok(env.fake.operator_message("v-6", "Typed in Chaport", name="Jon Snow"))
    agent_msgs = [(m["author"].get("name"), m["text"]) for m in env.messages(conv_id) if m["author"]["kind"] == "agent"]
    assert agent_msgs == [("Ann Lee", "Ann here"), ("Jon Snow", "Typed in Chaport")], agent_msgs
    assert env.fake.sent("v-6") == [("op-ann", "Ann here")]
    env.fake.assert_no_violations()


# --------------------------------------------------------------------------
# ending a chat
# --------------------------------------------------------------------------


def test_a_chat_the_desk_ends_is_closed_in_chaport_after_the_replies(chaport_env):
    env = chaport_env()
    conv_id = env.chat("v-7", "Hello?")
    env.reply("ann", conv_id, "Solved, bye")
    env.end("ann", conv_id)
    wait_until(lambda: env.fake.closes("v-7"), message="PUT /visitors/v-7/chats at Chaport")
    assert env.fake.closes("v-7") == [{"stage": "closed"}]
    ops = [r.op for r in env.fake.snapshot() if getattr(r, "op", None) in ("messages", "chats")]
    assert ops == ["messages", "chats"], ops
    assert env.conv(conv_id)["state"] == "closed"
    env.fake.assert_no_violations()


def test_a_chat_chaport_finished_ends_at_the_desk_and_is_not_closed_again(chaport_env):
    env = chaport_env()
    conv_id = env.chat("v-8", "Hello?")
    env.ok(env.fake.chat_finished("v-8"))
    conv = env.conv(conv_id)
    assert conv["state"] == "closed", conv
    settle()
    assert env.fake.closes("v-8") == []


# --------------------------------------------------------------------------
# status sync
# --------------------------------------------------------------------------


def test_an_agent_who_takes_chats_is_online_at_once_and_offline_only_after_the_delay(chaport_env):
    env = chaport_env()
    env.set_status("ann", "online")
    env.fake.wait_status("op-ann", ["online"])
    left = env.set_status("ann", "lunch")
    env.fake.wait_status("op-ann", ["online", "offline"])
    offline_call = [r for r in env.fake.snapshot() if getattr(r, "op", None) == "status"][-1]
    assert offline_call.t - left >= OFFLINE_DELAY - 0.05, "offline came before the delay"
    env.set_status("ann", "chats_only")              # a custom status that takes chats
    env.fake.wait_status("op-ann", ["online", "offline", "online"])
    env.fake.assert_no_violations()


def test_coming_back_within_the_delay_cancels_going_offline(chaport_env):
    env = chaport_env()
    env.set_status("ann", "online")
    env.fake.wait_status("op-ann", ["online"])
    env.set_status("ann", "lunch")
    env.set_status("ann", "online")
    env.fake.wait_status("op-ann", ["online", "online"])
    # carl's operator goes offline a delay after carl left, which is after
    # ann's cancelled timer would have fired
    env.set_status("carl", "online")
    carl = wait_until(lambda: env.fake.created, message="carl's operator created")[0]["id"]
    env.set_status("carl", "offline")
    env.fake.wait_status(carl, ["online", "offline"])
    assert env.fake.statuses_of("op-ann") == ["online", "online"]
    env.fake.assert_no_violations()


def test_a_shared_operator_stays_online_while_one_of_its_agents_takes_chats(chaport_env):
    env = chaport_env(offline_delay=0)
    env.set_status("bob", "online")
    env.set_status("dan", "online")
    env.fake.wait_status("op-shared", ["online", "online"])
    env.set_status("bob", "offline")
    env.set_status("ann", "online")                  # a later call to wait for
    env.fake.wait_status("op-ann", ["online"])
    settle()
    assert env.fake.statuses_of("op-shared") == ["online", "online"]
    env.set_status("dan", "offline")
    env.fake.wait_status("op-shared", ["online", "online", "offline"])
    env.fake.assert_no_violations()


def test_going_offline_survives_a_reload_and_a_restart_inside_the_delay(chaport_env):
    delay = 3.0
    env = chaport_env(offline_delay=delay)
    env.set_status("ann", "online")
    env.fake.wait_status("op-ann", ["online"])
    left = env.set_status("ann", "lunch")
    env.d.reload_ok()
    env.d.restart()
    env.fake.engine_url = env.d.url(HOOK_PATH)
    env.fake.wait_status("op-ann", ["online", "offline"], timeout=20)
    offline_call = [r for r in env.fake.snapshot() if getattr(r, "op", None) == "status"][-1]
    assert offline_call.t - left >= delay - 0.05, "offline came before the delay"
    env.fake.assert_no_violations()
