"""What a desk may touch (docs/handoff.md, "What a desk may touch"): a desk
webhook event acts only on a conversation in a live chat with that desk
instance; anything else is 404 with one message, and nothing is written.
Also: oneTimeMessage closes its desk session at once, a switch planned
while another reply path switched is skipped, and attachment URLs from a
desk are http(s) only.
"""

from __future__ import annotations

import threading
import time

import pytest

import conftest
from conftest import assert_json_error, free_port, run_cli, run_in_thread, wait_until
from convkit import Api, close_fakes, http_bot, install_lua_tree, webhook_channel, write_conv_config
from fake_operator_api import DEFAULT_EMPLOYEE, FakeOperatorApi
from fakes import CallbackReceiver
from test_handoff import (  # noqa: F401 - handoff is a fixture
    DEFAULT_GROUPS,
    Env,
    HandoffBot,
    assert_clean,
    desk_config,
    handoff,
    settle,
    switch,
)

OTHER_KEY = "0ther-key"


def agent_texts(env, conv_id):
    return [m.get("text") for m in env.callbacks(conv_id) if m["author"]["kind"] == "agent"]


def stored_agent_messages(env, conv_id):
    return [m for m in env.api.messages_all(conv_id) if m["author"]["kind"] == "agent"]


def text_event(user_id, text, event_id=None):
    return {"id": event_id or FakeOperatorApi.new_event_id(), "userId": user_id, "type": "TextMessage",
            "text": text, "employee": dict(DEFAULT_EMPLOYEE)}


@pytest.fixture
def two_desks(daemon, monkeypatch, request):
    """Channel ``web`` hands off to desk ``support``, channel ``web2`` to desk
    ``other`` (its own fake, its own api_key); both share one callback
    receiver and one external bot. Returns the Env of ``support`` with
    ``env.other`` (the second fake)."""
    made = []

    def make():
        cb = CallbackReceiver()
        bot = HandoffBot()
        desk = FakeOperatorApi(destinations=DEFAULT_GROUPS, extra_destinations=("1",))
        other = FakeOperatorApi(destinations=DEFAULT_GROUPS, extra_destinations=("1",))
        made.extend([cb, bot, desk, other])
        port = free_port()
        monkeypatch.setattr(conftest, "free_port", lambda: port)
        env = Env(daemon, cb, bot, desk, port)
        env.other = other
        install_lua_tree(daemon)
        web = webhook_channel(cb.callback_url, bot="ext")
        web["desk"] = "support"
        web2 = webhook_channel(cb.callback_url, bot="ext", secret="web2-secret")
        web2["desk"] = "other"
        write_conv_config(daemon, channels={"web": web, "web2": web2}, bots={"ext": http_bot(bot.bot_url)},
                          desks={"support": desk_config(desk.base_url, env.public_url),
                                 "other": desk_config(other.base_url, env.public_url, api_key=OTHER_KEY)})
        daemon.start()
        desk.wait_webhook()
        other.wait_webhook()
        return env

    yield make
    close_fakes(request, made, last=20)


# --------------------------------------------------------------------------
# only a conversation in a live chat with that desk
# --------------------------------------------------------------------------


def test_agent_message_for_a_bot_conversation_is_refused(handoff):
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.chat("c-1", "hi")
    before = env.api.messages_all(conv_id)
    resp = env.desk.agent_text(conv_id, "I can write to anyone")
    assert_json_error(resp, 404, "not_found")
    # the same answer as for an id that does not exist: ids cannot be probed
    unknown = env.desk.post_event(text_event("no-such-conversation", "hello?"))
    assert (unknown.status, unknown.body) == (resp.status, resp.body), (unknown, resp)
    for event in (
        {"id": "f-1", "userId": conv_id, "type": "FileMessage", "url": "http://files.example/a.pdf", "name": "a.pdf"},
        {"id": "c-1", "userId": conv_id, "type": "Closed", "employee": dict(DEFAULT_EMPLOYEE)},
        {"id": "s-1", "userId": conv_id, "type": "SelectDestination", "destination": {"destinationId": "20"}},
    ):
        r = env.desk.post_event(event)
        assert (r.status, r.body) == (resp.status, resp.body), (event["type"], r)
    settle()
    assert agent_texts(env, conv_id) == []
    assert env.api.messages_all(conv_id) == before
    c = env.conv(conv_id)
    assert c["state"] == "bot" and c["group"] is None, c
    assert_clean(env)


def test_agent_message_after_the_chat_ended_is_refused(handoff):
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    said = env.desk.new_event_id()
    env.agent_says(conv_id, "before the end", event_id=said)
    assert env.api.post(f"/v1/conversations/{conv_id}/end").status == 200
    env.wait_state(conv_id, "closed")
    env.wait_callback_text(conv_id, "The agent left the chat.")

    assert_json_error(env.desk.agent_text(conv_id, "too late"), 404, "not_found")
    # a repeat of an event applied while the chat was live is still answered as one
    again = env.desk.agent_text(conv_id, "before the end", event_id=said)
    assert again.status == 200 and again.json().get("duplicate") is True, again
    settle()
    assert "too late" not in agent_texts(env, conv_id)
    assert agent_texts(env, conv_id).count("before the end") == 1
    assert [m["text"] for m in stored_agent_messages(env, conv_id)] == [
        "Hello, I am Olga. How can I help?", "before the end"]
    assert env.conv(conv_id)["state"] == "closed"
    assert_clean(env)


def test_a_desk_cannot_touch_another_desks_chat(two_desks):
    env = two_desks()
    conv_id = env.open_agent_chat("c-1", destination="15")  # with desk "support"
    other_url = f"{env.public_url}/v1/providers/other/operatorapi/{OTHER_KEY}"
    resp = env.other.agent_text(conv_id, "I am not your desk", url=other_url)
    assert_json_error(resp, 404, "not_found")
    closed = env.other.agent_closed(conv_id, url=other_url)
    assert_json_error(closed, 404, "not_found")
    moved = env.other.agent_moved(conv_id, "20", url=other_url)
    assert_json_error(moved, 404, "not_found")
    settle()
    assert "I am not your desk" not in agent_texts(env, conv_id)
    c = env.conv(conv_id)
    assert c["state"] == "agent" and c["group"] == "15" and c["desk"] == "support", c
    # its own desk still can
    env.agent_says(conv_id, "still mine")
    assert_clean(env)
    env.other.assert_no_violations()


def test_a_refused_event_writes_no_dedupe_key(handoff):
    """An event refused (not in a live chat, or invalid) must not burn its id:
    the same id is applied once it is valid for a live chat."""
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.chat("c-1", "hi")
    closed_id, moved_id = env.desk.new_event_id(), env.desk.new_event_id()
    assert_json_error(env.desk.post_event({"id": closed_id, "userId": conv_id, "type": "Closed",
                                           "employee": dict(DEFAULT_EMPLOYEE)}), 404)
    err = assert_json_error(env.desk.post_event({"id": moved_id, "userId": conv_id, "type": "SelectDestination",
                                                 "destination": {"name": "no id"}}), 422, "invalid_field")
    assert "destination.destinationId" in err["message"], err

    env.open_agent_chat("c-1", destination="15")
    moved = env.desk.agent_moved(conv_id, "20", event_id=moved_id)
    assert moved.status == 200 and moved.json() == {"ok": True}, moved
    wait_until(lambda: env.conv(conv_id)["group"] == "20", message="group 20 after SelectDestination")
    closed = env.desk.agent_closed(conv_id, event_id=closed_id)
    assert closed.status == 200 and closed.json() == {"ok": True}, closed
    env.wait_state(conv_id, "closed")
    assert env.bot.wait_event(conv_id, "livechatFinished")["data"] == {"reason": "agent"}
    assert_clean(env)


def test_a_client_message_id_cannot_claim_an_agent_event(handoff):
    """Client message ids and desk event ids share the conversation store's
    dedupe space: a client must not be able to make an agent's message look
    like a repeat."""
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    for i, prefix in enumerate(["operator_api:support:", "desk:support:"]):
        env.send("c-1", f"guess {i}", message_id=f"{prefix}ev-guessed-{i}")
        env.desk.wait_text(conv_id, f"guess {i}")
        resp = env.desk.agent_text(conv_id, f"not swallowed {i}", event_id=f"ev-guessed-{i}")
        assert resp.status == 200 and resp.json() == {"ok": True}, resp
        env.wait_callback_text(conv_id, f"not swallowed {i}")
    assert_clean(env)


# --------------------------------------------------------------------------
# attachment URLs from the desk
# --------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "javascript:alert(document.cookie)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "file:///etc/passwd",
    "//evil.example/x.pdf",
    "/relative/x.pdf",
    "http:/no-host",
    "http://",
    "https://exa mple.com/x.pdf",
    "ftp://files.example/x.pdf",
])
def test_agent_file_url_must_be_http(handoff, url):
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    err = assert_json_error(env.desk.agent_file(conv_id, url, name="x.pdf", comment="look"), 422, "invalid_field")
    assert "url" in err["message"], err
    settle()
    assert not any(m.get("attachments") for m in env.callbacks(conv_id))
    assert all(not m.get("attachments") for m in stored_agent_messages(env, conv_id))
    assert_clean(env)


def test_agent_file_url_scheme_is_case_insensitive(handoff):
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    assert_json_error(env.desk.agent_file(conv_id, "JAVASCRIPT:alert(1)", name="x.pdf"), 422, "invalid_field")
    resp = env.desk.agent_file(conv_id, "HTTPS://files.example/Invoice.pdf", name="Invoice.pdf")
    assert resp.status == 200, resp
    m = env.wait_callback(conv_id, lambda m: m.get("attachments"), "agent attachment")
    assert m["attachments"][0]["url"] == "HTTPS://files.example/Invoice.pdf", m
    assert len([m for m in env.callbacks(conv_id) if m.get("attachments")]) == 1
    assert_clean(env)


BAD_EVENTS = [
    ({"type": "TextMessage", "text": "a\u0000b"}, "text"),
    ({"type": "TextMessage", "text": 5}, "text"),
    ({"type": "TextMessage"}, "text"),
    ({"type": "TextMessage", "text": "x" * 4097}, "text"),
    ({"type": "TextMessage", "text": "hi", "employee": {"firstName": "Ol\u0000ga"}}, "employee.firstName"),
    ({"type": "TextMessage", "text": "hi", "employee": "Olga"}, "employee"),
    ({"type": "FileMessage", "url": "http://f.example/a", "comment": "c\u0000"}, "comment"),
    ({"type": "FileMessage"}, "url"),
    ({"type": 7}, "type"),
    ({"type": "TextMessage", "text": "hi", "id": {"x": 1}}, "id"),
    ({"type": "SelectDestination", "destination": {"destinationId": "2\u00000"}}, "destination.destinationId"),
]


def test_invalid_desk_events_are_422_and_change_nothing(handoff):
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    before = env.api.messages_all(conv_id)
    for event, field in BAD_EVENTS:
        body = {"id": env.desk.new_event_id(), "userId": conv_id}
        body.update(event)
        err = assert_json_error(env.desk.post_event(body), 422, "invalid_field")
        assert field in err["message"], (event, err)
    settle()
    assert env.api.messages_all(conv_id) == before
    c = env.conv(conv_id)
    assert c["state"] == "agent" and c["group"] == "15", c
    assert_clean(env)


# --------------------------------------------------------------------------
# oneTimeMessage
# --------------------------------------------------------------------------


def test_one_time_message_session_is_closed_and_agent_answers_are_refused(handoff):
    env = handoff()
    env.desk.wait_webhook()
    env.bot.text_replies["tell them"] = [
        {"type": "text", "text": "I passed it on."},
        switch(destination="15", oneTimeMessage=True, firstMessage="FYI: refund question"),
    ]
    conv_id = env.chat("c-1", "hi")
    env.send("c-1", "tell them")
    env.wait_callback_text(conv_id, "I passed it on.")
    close = env.desk.wait_calls("closeChat", 1, conv_id)[0]
    assert isinstance(close.json["text"], str) and close.json["text"], close.json
    assert [op for op, _ in env.desk.ops(conv_id)] == ["selectDestination", "sendText", "closeChat"]
    assert env.desk.sessions.get(conv_id) is None, "the one-time session is still open at the desk"

    # an agent answering in that (closed) session does not reach the client
    assert_json_error(env.desk.agent_text(conv_id, "About your refund..."), 404, "not_found")
    settle()
    assert agent_texts(env, conv_id) == []
    assert stored_agent_messages(env, conv_id) == []
    c = env.conv(conv_id)
    assert c["state"] == "bot", c
    # not a live chat, so there is nothing to end
    assert_json_error(env.api.post(f"/v1/conversations/{conv_id}/end"), 409, "not_in_live_chat")
    env.chat("c-1", "still the bot?")
    assert_clean(env)


# --------------------------------------------------------------------------
# two reply paths racing to switch
# --------------------------------------------------------------------------


def slow_get_destinations(desk, seconds):
    """Make the fake answer every getDestinations call after ``seconds``, so
    that a second switch arrives while the first waits for it."""
    arrived = [0]
    dispatch = desk._dispatch

    def held(req):
        if req.path.endswith("/getDestinations"):
            arrived[0] += 1
            time.sleep(seconds)
        return dispatch(req)

    desk._dispatch = held
    return arrived


def test_concurrent_switches_hand_off_once(handoff):
    env = handoff(availability_ttl=0)
    env.desk.wait_webhook()
    env.bot.text_replies["hi"] = []
    conv_id = env.send("c-1", "hi")
    env.bot.wait_message(conv_id, lambda b: b["text"] == "hi")
    arrived = slow_get_destinations(env.desk, 0.5)

    replies = [{"type": "text", "text": "Connecting you."},
               switch(destination="15", firstMessage="over to you", lastMessage="bye")]
    threads = [run_in_thread(env.api.replies, conv_id, replies) for _ in range(2)]
    results = []
    for t, result in threads:
        t.join(30)
        assert "error" not in result, result
        results.append(result["value"])
    # the second waited for the conversation while the first asked the desk,
    # then planned too, and found the chat already queued
    assert arrived[0] == 2, f"{arrived[0]} getDestinations"
    assert [r.status for r in results] == [202, 202], results

    # a client message now goes to the desk, behind whatever the switches queued there
    env.send("c-1", "anyone?")
    env.desk.wait_text(conv_id, "anyone?")
    assert len(env.desk.calls("selectDestination", conv_id)) == 1, env.desk.ops(conv_id)
    assert env.desk.texts(conv_id) == ["over to you", "anyone?"], env.desk.ops(conv_id)
    events = env.events(conv_id)
    switched = [e["data"] for e in events if e["type"] == "switch"]
    skipped = [e["data"] for e in events if e["type"] == "switch_skipped"]
    assert [s["action"] for s in switched] == ["switch"], switched
    assert len(skipped) == 1 and skipped[0].get("state") == "queued", skipped
    assert env.conv(conv_id)["state"] == "queued"

    # the one live chat works and ends normally
    env.agent_says(conv_id, "Hello")
    assert env.api.post(f"/v1/conversations/{conv_id}/end").status == 200
    env.wait_callback_text(conv_id, "bye")
    env.desk.wait_calls("closeChat", 1, conv_id)
    assert_clean(env)


# --------------------------------------------------------------------------
# which desk, when none is named
# --------------------------------------------------------------------------

PROBE_LUA = """
-- hasOperatorsOnline() without a desk, as a bot would call it
function probe_online(req)
  return 200, { online = hasOperatorsOnline(req.query.group) }
end
route("GET", "/probe", "probe_online")
"""


@pytest.fixture
def desk_pair():
    a = FakeOperatorApi(destinations={"15": ("Support A", True)})
    b = FakeOperatorApi(destinations={"15": ("Support B", False)})
    yield a, b
    a.close()
    b.close()


def write_two_desk_config(daemon, a, b, **extra):
    install_lua_tree(daemon)
    daemon.write_script("scripts/zz_probe.lua", PROBE_LUA)
    write_conv_config(daemon, channels={}, bots={},
                      desks={"a": {"type": "operator_api", "api_url": a.base_url, "availability_ttl": 0},
                             "b": {"type": "operator_api", "api_url": b.base_url, "availability_ttl": 0}},
                      **extra)


def test_the_default_desk_is_configured_not_guessed(daemon, desk_pair):
    a, b = desk_pair
    write_two_desk_config(daemon, a, b)
    daemon.start()
    api = Api(daemon)
    err = assert_json_error(api.get("/v1/groups/15/availability"), 400, "invalid_parameter")
    assert "desk" in err["message"] and "default_desk" in err["message"], err
    resp = api.get("/v1/groups/15/availability", desk="b")
    assert resp.status == 200 and resp.json()["name"] == "Support B", resp
    assert_json_error(daemon.get("/probe?group=15"), 500)
    assert daemon.find_logs(level="error", error=lambda e: "default_desk" in e), daemon.log_text()[-2000:]

    write_two_desk_config(daemon, a, b, default_desk="b")
    daemon.reload_ok()
    resp = api.get("/v1/groups/15/availability")
    assert resp.status == 200, resp
    assert resp.json() == {"desk": "b", "group": "15", "name": "Support B", "online": False}
    probe = daemon.get("/probe?group=15")
    assert probe.status == 200 and probe.json() == {"online": False}, probe
    write_two_desk_config(daemon, a, b, default_desk="a")
    daemon.reload_ok()
    assert daemon.get("/probe?group=15").json() == {"online": True}
    assert api.get("/v1/groups/15/availability").json()["desk"] == "a"
    a.assert_no_violations()
    b.assert_no_violations()


def test_default_desk_must_name_a_desk(daemon, desk_pair):
    a, b = desk_pair
    write_two_desk_config(daemon, a, b, default_desk="c")
    res = run_cli(["--check", "-c", str(daemon.config_path)], cwd=daemon.workdir)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "default_desk" in res.stderr, res.stderr
