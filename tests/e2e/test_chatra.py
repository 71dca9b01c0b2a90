"""Chatra into the built-in desk end to end (docs/providers/chatra.md): the
strict fake of fake_chatra.py posts Chatra's webhooks to the real binary and
takes our POST /messages/; agents work through the desk's API with their
own tokens (docs/desk.md).

Config: channel ``chatra`` (type chatra, no bot, desk ``helpdesk``; Chatra
group ``g-billing`` maps to the desk's ``billing``; desk agent ``ann`` is
Chatra agent ``chatra-ann``); desk ``helpdesk`` (builtin): ``support`` (ann,
the default group) and ``billing`` (cid, who has no Chatra agent id).
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from conftest import REPO_ROOT, assert_json_error, run_cli, wait_until
from convkit import Api, close_fakes, install_lua_tree, q, write_conv_config
from fake_chatra import Chat, FakeChatra

CHANNEL = "chatra"
DESK = "helpdesk"
SECRET = "chatra-hook-secret-1"
WEBHOOK_PATH = f"/v1/channels/{CHANNEL}/chatra/{SECRET}"
ANN, CID = "ann-token", "cid-token"


def helpdesk_config():
    return {
        "type": "builtin",
        "default_group": "support",
        "groups": {"support": {"name": "Support", "members": ["ann"]}, "billing": {"name": "Billing"}},
        "agents": [
            {"id": "ann", "name": "Ann Lee", "email": "ann@example.com", "token": ANN,
             "groups": ["support"], "channels": [CHANNEL], "capacity": 3},
            {"id": "cid", "name": "Cid Moss", "email": "cid@example.com", "token": CID,
             "groups": ["billing"], "channels": [CHANNEL], "capacity": 3},
        ],
    }


class Env:
    """Daemon + fake Chatra of one test, and the desk's API as each agent."""

    def __init__(self, daemon, chatra):
        self.d = daemon
        self.chatra = chatra
        self.api = Api(daemon)

    def conv_id(self, client_id) -> str:
        convs = [c for c in self.api.conversations_all(channel=CHANNEL) if c["client_id"] == client_id]
        assert len(convs) == 1, convs
        return convs[0]["id"]

    def conv(self, conv_id) -> dict:
        return self.api.conversation(conv_id)

    def messages(self, conv_id) -> list[tuple[str, str]]:
        """(author kind, text) of the conversation's messages, in order."""
        return [(m["author"]["kind"], m["text"]) for m in self.api.messages_all(conv_id)]

    def online(self, token):
        resp = self.api.d.request("PUT", "/v1/agents/me/status", json.dumps({"status": "online"}),
                                  headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert resp.status == 200, resp

    def me(self, token) -> dict:
        resp = self.api.get("/v1/agents/me", token=token)
        assert resp.status == 200, resp
        return resp.json()

    def queue(self, token) -> list[dict]:
        resp = self.api.get("/v1/desk/queue", token=token)
        assert resp.status == 200, resp
        return resp.json()["conversations"]

    def reply(self, token, conv_id, text):
        resp = self.api.post(f"/v1/conversations/{q(conv_id)}/messages", {"text": text}, token=token)
        assert resp.status == 201, resp
        return resp.json()

    def start(self, client_id, text="Hi, where is my order?", **kw) -> str:
        resp = self.chatra.start_chat(client_id, text, **kw)
        assert resp.status == 200 and resp.json()["ok"] is True, resp
        return self.conv_id(client_id)


def write_config(daemon, chatra, **over):
    """The test's config; ``over``: keys of the chatra channel (None drops one)."""
    ch = {"type": "chatra", "desk": DESK, "webhook_secret": SECRET, "api_base": chatra.url,
          "public_key": chatra.public_key, "secret_key": chatra.secret_key,
          "group_map": {"g-billing": "billing"}, "agents": {"ann": "chatra-ann"}}
    ch.update(over)
    write_conv_config(daemon, channels={CHANNEL: {k: v for k, v in ch.items() if v is not None}}, bots={},
                      desks={DESK: helpdesk_config()}, conversations={"max_text_bytes": 32768})


@pytest.fixture
def chatra_env(daemon, request):
    """Factory: ``chatra_env(fake=None, **channel_overrides)`` -> Env (started)."""
    made = []

    def make(fake=None, **over):
        chatra = fake or FakeChatra()
        made.append(chatra)
        chatra.add_agent("chatra-ann", "Ann (Chatra)", "ann@example.com")
        chatra.add_agent("chatra-zoe", "Zoe", "zoe@example.com")   # works in Chatra only
        install_lua_tree(daemon)
        write_config(daemon, chatra, **over)
        daemon.start()
        chatra.engine_url = daemon.url(WEBHOOK_PATH)
        return Env(daemon, chatra)

    yield make
    close_fakes(request, made, last=25)


def settle(seconds=0.4):
    """A moment for the engine to do something it must not do."""
    time.sleep(seconds)


# --------------------------------------------------------------------------
# routing into the desk
# --------------------------------------------------------------------------


def test_a_chat_from_a_mapped_group_reaches_that_groups_queue_and_is_offered_to_its_agent(chatra_env):
    env = chatra_env()
    billing = env.start("client-1", "My invoice is wrong", group_id="g-billing")
    other = env.start("client-2", "Hello", group_id="g-unknown")
    assert env.conv(billing)["group"] == "billing" and env.conv(billing)["state"] == "queued"
    assert env.conv(other)["group"] == "support"
    # nobody is online: each chat waits in its own group's queue
    assert [c["id"] for c in env.queue(CID)] == [billing]
    assert [c["id"] for c in env.queue(ANN)] == [other]
    env.online(ANN)
    env.online(CID)
    wait_until(lambda: env.conv(billing).get("agent") == "cid", message="the billing chat offered to cid")
    wait_until(lambda: env.conv(other).get("agent") == "ann", message="the other chat offered to ann")
    assert [c["id"] for c in env.me(CID)["chats"]] == [billing]
    assert [c["id"] for c in env.me(ANN)["chats"]] == [other]
    assert env.queue(CID) == [] and env.queue(ANN) == []
    env.chatra.assert_no_violations()


# --------------------------------------------------------------------------
# agent replies to Chatra
# --------------------------------------------------------------------------


def test_a_mapped_agent_replies_by_agent_id(chatra_env):
    env = chatra_env()
    conv_id = env.start("client-1")
    env.reply(ANN, conv_id, "Let me check.")
    sent = env.chatra.wait_sent("client-1")
    assert sent == [{"clientId": "client-1", "text": "Let me check.", "agentId": "chatra-ann", "agent": "chatra-ann"}]
    assert env.conv(conv_id)["state"] == "agent"
    env.chatra.assert_no_violations()


def test_an_unmapped_agent_replies_by_email_and_chatra_creates_the_agent_once(chatra_env):
    env = chatra_env()
    conv_id = env.start("client-1", group_id="g-billing")
    env.reply(CID, conv_id, "Hello, I am Cid.")
    env.reply(CID, conv_id, "Your invoice is fixed.")
    sent = env.chatra.wait_sent("client-1", 2)
    created = env.chatra.agent_by_email("cid@example.com")
    assert created is not None and created["name"] == "Cid Moss"
    assert [(s["text"], s["agentEmail"], s["agentName"], s["receivedFrom"], s["agent"]) for s in sent] == [
        ("Hello, I am Cid.", "cid@example.com", "Cid Moss", "Switchboard", created["id"]),
        ("Your invoice is fixed.", "cid@example.com", "Cid Moss", "Switchboard", created["id"]),
    ]
    assert len([a for a in env.chatra.agents.values() if a["email"] == "cid@example.com"]) == 1
    env.chatra.assert_no_violations()


def test_a_long_reply_goes_in_pieces_of_at_most_5000_characters(chatra_env):
    env = chatra_env()
    conv_id = env.start("client-1")
    text = "".join(chr(0x430 + i % 32) for i in range(9001))   # two-byte characters
    env.reply(ANN, conv_id, text)
    sent = env.chatra.wait_sent("client-1", 2)
    assert [len(s["text"]) for s in sent] == [5000, 4001]
    assert "".join(s["text"] for s in sent) == text
    env.chatra.assert_no_violations()


def test_the_secret_key_is_never_in_a_stored_call(chatra_env):
    """A key Chatra refuses: a dead letter without the key; with the key
    corrected and the config reloaded, the same stored call goes through."""
    fake = FakeChatra(secret_key="the-real-secret")
    env = chatra_env(fake=fake, secret_key="not-the-secret")
    conv_id = env.start("client-1")
    env.reply(ANN, conv_id, "hello")
    dead = wait_until(lambda: env.api.dead_all(), message="a dead letter")
    assert dead[0]["url"] == f"{fake.url}/messages/" and "not-the-secret" not in json.dumps(dead), dead
    assert [p for _, probs in fake.violations for p in probs] == [
        "Authorization is 'Chatra.Simple chatra-public-1:not-the-secret', "
        "expected 'Chatra.Simple chatra-public-1:the-real-secret'"]
    write_config(env.d, fake)
    env.d.reload_ok()
    assert env.api.retry_dead(dead[0]["id"]).status == 202
    assert [s["text"] for s in fake.wait_sent("client-1")] == ["hello"]


def test_bot_and_system_messages_are_skipped_unless_pushed(chatra_env):
    """POST /messages/ needs an agent: by default a bot's message is not
    sent (the journal says so); with system_messages = "push" it goes with
    POST /pushedMessages/."""
    env = chatra_env()
    conv_id = env.start("client-1")
    assert env.api.replies(conv_id, [{"type": "text", "text": "Our hours are 9-18."}]).status == 202
    skipped = wait_until(lambda: [e for e in env.api.events_all(conv_id) if e["type"] == "send_skipped"],
                         message="send_skipped in the journal")
    assert len(skipped) == 1
    settle()
    assert env.chatra.sent == [] and env.chatra.pushed == []
    env.chatra.assert_no_violations()


def test_pushed_system_messages(chatra_env):
    env = chatra_env(system_messages="push", push_group_id="g-billing")
    conv_id = env.start("client-1")
    assert env.api.replies(conv_id, [{"type": "text", "text": "Our hours are 9-18."}]).status == 202
    wait_until(lambda: env.chatra.pushed, message="POST /pushedMessages/ at Chatra")
    assert env.chatra.pushed == [{"clientId": "client-1", "text": "Our hours are 9-18.", "groupId": "g-billing"}]
    assert env.chatra.sent == []
    env.chatra.assert_no_violations()


# --------------------------------------------------------------------------
# what Chatra's webhooks bring in
# --------------------------------------------------------------------------


def test_a_message_typed_in_chatras_interface_lands_in_the_conversation(chatra_env):
    env = chatra_env()
    conv_id = env.start("client-1", "Is anyone there?")
    env.chatra.agent_types("client-1", "Zoe here, from Chatra.", "chatra-zoe")
    resp = env.chatra.fragment("client-1")
    assert resp.status == 200 and resp.json()["added"] == 1, resp
    assert env.messages(conv_id) == [("client", "Is anyone there?"), ("agent", "Zoe here, from Chatra.")]
    agent_msg = env.api.messages_all(conv_id)[-1]
    assert agent_msg["author"]["name"] == "Zoe"
    settle()
    assert env.chatra.sent == [], "a message from Chatra's interface went back to Chatra"
    env.chatra.assert_no_violations()


@pytest.mark.parametrize("ids, timestamps", [(True, True), (False, True), (False, False)],
                         ids=["message ids", "timestamps only", "neither"])
def test_transcripts_do_not_duplicate(chatra_env, ids, timestamps):
    env = chatra_env(fake=FakeChatra(message_ids=ids, timestamps=timestamps))
    conv_id = env.start("client-1", "ok")
    env.chatra.client_says("client-1", "ok")              # the same text twice is two messages
    env.chatra.agent_types("client-1", "On it.", "chatra-zoe")
    assert env.chatra.fragment("client-1").json()["added"] == 2
    env.reply(ANN, conv_id, "Done, anything else?")         # ours: comes back in the transcript
    env.chatra.wait_sent("client-1")
    env.chatra.client_says("client-1", "no, thanks")
    assert env.chatra.fragment("client-1").json()["added"] == 1
    want = [("client", "ok"), ("client", "ok"), ("agent", "On it."), ("agent", "Done, anything else?"),
            ("client", "no, thanks")]
    assert env.messages(conv_id) == want
    resp = env.chatra.transcript("client-1")
    assert env.messages(conv_id) == want
    assert resp.status == 200 and resp.json()["added"] == 0 and resp.json()["duplicates"] == 5, resp
    assert env.chatra.repost_last("client-1").json()["added"] == 0   # Chatra retrying it
    assert env.messages(conv_id) == want
    # the client's next chat says "ok" again: a new message, not one of the last chat
    assert env.chatra.start_chat("client-1", "ok").json()["added"] == 1
    assert env.messages(conv_id) == want + [("client", "ok")]
    env.chatra.assert_no_violations()


def test_a_client_message_longer_than_the_engine_keeps_is_kept_whole_in_pieces(chatra_env):
    env = chatra_env()
    text = "é" * 20000                                   # 40000 bytes; the test's max_text_bytes is 32768
    conv_id = env.start("client-1", text)
    got = [t for _, t in env.messages(conv_id)]
    assert [len(t.encode()) for t in got] == [32768, 7232] and "".join(got) == text
    resp = env.chatra.transcript("client-1")
    assert resp.json()["added"] == 0 and resp.json()["duplicates"] == 1, resp
    assert len(env.messages(conv_id)) == 2


def test_client_fields_appear_under_their_keys(chatra_env):
    env = chatra_env(client_fields={"info": {"tienda": "store"}, "phone": "phone"})
    conv_id = env.start("client-1", name="Peter", email="peter@example.com", phone="+34 600 000 000",
                        info={"tienda": "A1", "plan": "gold", "visits": 3})
    client = env.conv(conv_id)["client"]
    assert client["name"] == "Peter"
    assert client["email"] == "peter@example.com" and client["phone"] == "+34 600 000 000"
    assert client["custom"] == {"store": {"value": "A1", "label": "tienda"},
                                "plan": {"value": "gold", "label": "plan"},
                                "visits": {"value": 3, "label": "visits"}}
    assert "tienda" not in client["custom"]


def test_a_wrong_secret_is_refused_and_writes_nothing(chatra_env):
    env = chatra_env()
    body = {"eventName": "chatStarted", "client": {"id": "client-9", "displayedName": "Eve"},
            "messages": [{"id": "x1", "type": "client", "message": "hi"}]}
    for path in (f"/v1/channels/{CHANNEL}/chatra/wrong", f"/v1/channels/nosuch/chatra/{SECRET}"):
        resp = env.chatra.post_event(body, url=env.d.url(path))
        assert_json_error(resp, 401, "unauthorized")
    assert env.api.conversations_all() == []
    assert env.chatra.post_event(body).status == 200   # the same body with the secret: taken


def test_a_bad_event_is_422_naming_the_field_and_writes_nothing(chatra_env):
    env = chatra_env()
    err = assert_json_error(env.chatra.post_event({"eventName": "chatStarted", "client": {"name": "x"}}),
                            422, "invalid_field")
    assert err["message"] == "client.id is required", err
    err = assert_json_error(env.chatra.post_event({"client": {"id": "c"}}), 422, "invalid_field")
    assert err["message"] == "eventName is required", err
    assert env.api.conversations_all() == []


def test_the_example_config_loads_and_warns_about_what_is_missing(tmp_path):
    """examples/chatra.conf.lua passes --check; without its environment it says what is missing."""
    shutil.copytree(REPO_ROOT / "examples", tmp_path / "examples")
    for folder in ("scripts", "providers", "rules"):
        if (REPO_ROOT / folder).is_dir():
            shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    env = {"CHATRA_PUBLIC_KEY": "p-1", "CHATRA_SECRET_KEY": "s-1", "CHATRA_WEBHOOK_SECRET": "w-1",
           "DESK_TOKEN_ANN": "t-ann", "DESK_TOKEN_BOB": "t-bob"}
    res = run_cli(["--check", "-c", "examples/chatra.conf.lua"], cwd=tmp_path, env=env)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res
    assert "chatra channel" not in res.stderr, res.stderr
    res = run_cli(["--check", "-c", "examples/chatra.conf.lua"], cwd=tmp_path)
    assert res.returncode == 0, res
    assert "chatra channel has no webhook_secret: every event from Chatra is refused" in res.stderr, res.stderr
    assert "chatra channel needs public_key and secret_key" in res.stderr, res.stderr


def test_the_fake_refuses_what_breaks_the_contract():
    from conftest import http_request

    chatra = FakeChatra()
    try:
        chatra.add_agent("a1", "Ann", "ann@example.com")
        chatra.chats["c1"] = Chat({"id": "c1"})
        auth = {"Authorization": f"Chatra.Simple {chatra.public_key}:{chatra.secret_key}",
                "Content-Type": "application/json"}

        def post(path, body, headers=auth):
            return http_request("127.0.0.1", chatra.port, "POST", path, body=json.dumps(body), headers=headers)

        assert post("/messages/", {"clientId": "c1", "text": "hi", "agentId": "a1"}).status == 200
        assert post("/messages", {"clientId": "c1", "text": "hi", "agentId": "a1"}).status == 404
        assert post("/messages/", {"clientId": "c1", "text": "hi", "agentId": "a1"}, headers={}).status == 401
        assert post("/messages/", {"clientId": "c1", "text": "x" * 5001, "agentId": "a1"}).status == 400
        assert post("/messages/", {"clientId": "c1", "text": "", "agentId": "a1"}).status == 400
        assert post("/messages/", {"clientId": "nobody", "text": "hi", "agentId": "a1"}).status == 400
        assert post("/messages/", {"clientId": "c1", "text": "hi", "agentId": "zz"}).status == 400
        assert post("/messages/", {"clientId": "c1", "text": "hi", "agentEmail": "b@example.com"}).status == 400
        assert post("/messages/", {"clientId": "c1", "text": "hi", "agentId": "a1", "x": 1}).status == 400
        assert len(chatra.violations) == 8
        assert post("/messages/", {"clientId": "c1", "text": "hi", "agentEmail": "b@example.com",
                                   "agentName": "Bea", "receivedFrom": "Switchboard"}).status == 200
        assert chatra.agent_by_email("b@example.com")["name"] == "Bea"
        assert [m["type"] for m in chatra.event("c1", "chatTranscript")["messages"]] == ["agent", "agent"]
    finally:
        chatra.close()
