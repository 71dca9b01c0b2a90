"""The conversation layer through the generic webhook channel, the bots and
the read API (docs/conversations.md)."""

import json
import time

import pytest

from conftest import assert_json_error
from convkit import (
    BOT_SECRET,
    WEB_SECRET,
    Api,
    by_kind,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    http_bot,
    install_lua_tree,
    lua_bot,
    setup_echo_daemon,
    webhook_channel,
    write_conv_config,
    write_echo_bot,
)


def setup_http_bot_daemon(daemon, fakes, bot_reply=None, bot_secret=BOT_SECRET, extra_channels=None,
                          conversations=None):
    """Channel ``web`` served by the external FakeBot ``ext``; returns (api, callback, bot)."""
    cb = fakes.callback()
    kw = {"secret": bot_secret}
    if bot_reply is not None:
        kw["reply"] = bot_reply
    bot = fakes.bot(**kw)
    install_lua_tree(daemon)
    channels = {"web": webhook_channel(cb.callback_url, bot="ext")}
    channels.update(extra_channels or {})
    write_conv_config(daemon, channels=channels, bots={"ext": http_bot(bot.bot_url, secret=bot_secret)},
                      conversations=conversations)
    daemon.start()
    return Api(daemon), cb, bot


def settle(seconds=0.5):
    """Give the engine a moment to do something it must not do."""
    time.sleep(seconds)


# ------------------------------------------------------------ the round trip


def test_client_message_reaches_http_bot_and_reply_reaches_callback(fakes, daemon):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes)
    ack = api.send("c-1", "hello", client={"name": "Ann", "email": "ann@example.com"})
    assert ack.get("duplicate") in (None, False), ack

    calls = bot.wait_for_requests(1)
    call = calls[0]
    assert call.header("Authorization") == f"Bearer {BOT_SECRET}"
    body = call.json
    assert body["conversation_id"] == ack["conversation_id"]
    assert body["client_id"] == "c-1"
    assert body["channel"] == "web"
    assert body["text"] == "hello"
    assert body["event"] == "message"
    assert body["message_id"] == ack["message_id"]
    assert body["client"]["name"] == "Ann"
    assert body["client"]["email"] == "ann@example.com"

    msg = cb.wait_for_text("you said: hello")
    req = cb.accepted()[0]
    assert req.json["conversation_id"] == ack["conversation_id"]
    assert req.json["client_id"] == "c-1"
    assert msg["author"]["kind"] == "bot"
    assert msg["author"].get("name") == "ext"
    assert req.content_type == "application/json"
    assert req.idempotency_key
    assert req.header("Authorization") is None, "no callback_secret configured, yet an Authorization header was sent"

    # the store has both messages, in order
    conv = api.conversation(ack["conversation_id"])
    assert conv["id"] == ack["conversation_id"]
    assert conv["channel"] == "web"
    assert conv["client_id"] == "c-1"
    assert conv["state"] == "bot"
    assert conv["client"]["name"] == "Ann"
    msgs = api.wait_messages(ack["conversation_id"], lambda ms: len(ms) >= 2, message="2 stored messages")
    assert [(m["seq"], m["author"]["kind"], m["text"]) for m in msgs] == [
        (1, "client", "hello"),
        (2, "bot", "you said: hello"),
    ]
    assert msgs[0]["id"] == ack["message_id"]
    assert msgs[1]["id"] == msg["id"]

    # the same client continues the same conversation
    ack2 = api.send("c-1", "again")
    assert ack2["conversation_id"] == ack["conversation_id"]
    assert ack2["message_id"] != ack["message_id"]
    cb.wait_for_text("you said: again")
    assert cb.accepted_texts() == ["you said: hello", "you said: again"]
    cb.assert_no_violations()
    bot.assert_no_violations()


def test_callback_secret_is_sent_as_bearer(fakes, daemon):
    cb = fakes.callback(secret="cb-secret-9")
    install_lua_tree(daemon)
    write_echo_bot(daemon)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, callback_secret="cb-secret-9")},
                      bots={"echo": lua_bot()})
    daemon.start()
    Api(daemon).send("c-sec", "hi")
    cb.wait_for_text("you said: hi")
    cb.assert_no_violations()


def test_lua_bot_round_trip(fakes, daemon):
    cb = fakes.callback()
    api = setup_echo_daemon(daemon, cb)
    ack = api.send("c-lua", "ping", client={"name": "Bob"})
    msg = cb.wait_for_text("you said: ping")
    assert msg["author"]["kind"] == "bot"
    assert msg["author"].get("name") == "echo"
    req = cb.accepted()[0]
    assert req.json["conversation_id"] == ack["conversation_id"]
    assert req.json["client_id"] == "c-lua"
    msgs = api.wait_messages(ack["conversation_id"], lambda ms: len(ms) >= 2, message="2 stored messages")
    assert [(m["author"]["kind"], m["text"]) for m in msgs] == [("client", "ping"), ("bot", "you said: ping")]
    cb.assert_no_violations()


def test_bot_reply_types_text_buttons_image_and_unknown(fakes, daemon):
    replies = [
        {"type": "text", "text": "Pick one"},
        {"type": "buttons", "buttons": [{"text": "Yes", "payload": "yes"}, {"text": "No"}]},
        {"type": "image", "imageUrl": "https://example.com/cat.png"},
        {"type": "mystery", "whatever": 1},
        {"type": "text", "text": "bye"},
    ]
    api, cb, bot = setup_http_bot_daemon(daemon, fakes, bot_reply=lambda body: {"replies": replies})
    ack = api.send("c-types", "show me")
    cb.wait_for_text("bye")
    settle(0.3)
    msgs = cb.accepted_messages()
    texts = [m.get("text") for m in msgs]
    assert texts[0] == "Pick one", msgs
    assert texts[-1] == "bye", msgs
    # buttons are attached to the text before them
    buttons = msgs[0].get("buttons")
    assert [b["text"] for b in buttons] == ["Yes", "No"], msgs[0]
    assert buttons[0].get("payload") == "yes"
    # the image travels as an attachment
    urls = [a.get("url") for m in msgs for a in (m.get("attachments") or [])]
    assert urls == ["https://example.com/cat.png"], msgs
    # the unknown type is skipped (nothing delivered for it) and journaled
    assert not any("mystery" in json.dumps(m) for m in msgs), msgs
    assert len(msgs) <= 3, msgs
    events = api.events_all(ack["conversation_id"])
    assert "mystery" in json.dumps(events), f"unknown reply type not journaled: {events!r}"
    cb.assert_no_violations()


def test_bot_with_no_replies_then_later_replies_via_api(fakes, daemon):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes, bot_reply=lambda body: None)  # empty 200 body
    ack = api.send("c-later", "anyone?")
    bot.wait_for_requests(1)
    settle(0.3)
    assert cb.accepted() == []

    resp = api.replies(ack["conversation_id"], [{"type": "text", "text": "later"},
                                                {"type": "text", "text": "and more"}])
    assert resp.status == 202, resp
    ids = resp.json()["message_ids"]
    assert isinstance(ids, list) and len(ids) == 2 and all(isinstance(i, str) for i in ids), resp.json()
    cb.wait_for_texts(["later", "and more"])
    msgs = cb.accepted_messages()
    assert [m["text"] for m in msgs] == ["later", "and more"]
    assert [m["id"] for m in msgs] == ids
    assert all(m["author"]["kind"] == "bot" for m in msgs)

    stored = api.wait_messages(ack["conversation_id"], lambda ms: len(ms) >= 3, message="3 stored messages")
    assert [(m["author"]["kind"], m["text"]) for m in stored] == [
        ("client", "anyone?"), ("bot", "later"), ("bot", "and more")]

    # auth and unknown conversation
    assert_json_error(api.replies(ack["conversation_id"], [{"type": "text", "text": "x"}], token=None), 401)
    assert_json_error(api.replies(ack["conversation_id"], [{"type": "text", "text": "x"}], token="wrong"), 401)
    assert_json_error(api.replies("no-such-conversation", [{"type": "text", "text": "x"}]), 404)
    bad = api.post(f"/v1/conversations/{ack['conversation_id']}/replies", {"replies": "nope"})
    assert 400 <= bad.status < 500, bad
    assert_json_error(bad, bad.status)
    settle(0.3)
    assert [m["text"] for m in cb.accepted_messages()] == ["later", "and more"]
    cb.assert_no_violations()


# ------------------------------------------------------------ idempotency


def test_repeated_message_id_is_stored_once(fakes, daemon):
    cb2 = fakes.callback()
    api, cb, bot = setup_http_bot_daemon(
        daemon, fakes, extra_channels={"web2": webhook_channel(cb2.callback_url, bot="ext")})
    first = api.send("c-idem", "once", message_id="msg-1")
    assert first.get("duplicate") in (None, False), first
    again = api.post_message({"client_id": "c-idem", "text": "once", "message_id": "msg-1"})
    assert again.status == 202, again
    doc = again.json()
    assert doc["conversation_id"] == first["conversation_id"]
    assert doc["message_id"] == first["message_id"]
    assert doc.get("duplicate") is True, doc

    cb.wait_for_text("you said: once")
    settle(0.5)
    client_msgs = by_kind(api.messages_all(first["conversation_id"]), "client")
    assert [m["text"] for m in client_msgs] == ["once"]
    assert len(bot.calls()) == 1, bot.calls()
    assert cb.accepted_texts() == ["you said: once"]

    # the key is per instance: the same message_id on another instance is a new message
    other = api.send("c-idem", "once", instance="web2", message_id="msg-1")
    assert other.get("duplicate") in (None, False), other
    assert other["conversation_id"] != first["conversation_id"]
    assert other["message_id"] != first["message_id"]


# ------------------------------------------------------------ auth and bad input


def no_conversations(api):
    return api.conversations_all() == []


def test_channel_auth(fakes, daemon):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes)
    body = {"client_id": "c-auth", "text": "hi"}
    assert_json_error(api.post_message(body, secret=None), 401, "unauthorized")
    assert_json_error(api.post_message(body, secret="wrong"), 401, "unauthorized")
    assert_json_error(api.post_message(body, secret=None, headers={"Authorization": f"Basic {WEB_SECRET}"}), 401)
    assert_json_error(api.post_message(body, secret=None, headers={"Authorization": f"Bearer {WEB_SECRET}x"}), 401)
    # an unknown instance looks like a wrong secret (docs/security.md)
    assert_json_error(api.post_message(body, instance="nope"), 401, "unauthorized")
    assert_json_error(api.post_message(body, instance="nope", secret=None), 401, "unauthorized")
    settle(0.3)
    assert no_conversations(api)
    assert bot.snapshot() == []
    # the right secret works
    api.send("c-auth", "hi")


MALFORMED = [
    pytest.param(b"not json", 400, "malformed_json", None, id="not-json"),
    pytest.param(b'{"client_id": "c-bad", "text": "x"', 400, "malformed_json", None, id="truncated"),
    pytest.param(b"", 400, "malformed_json", None, id="empty"),
    pytest.param(b"[1, 2]", 422, "invalid_field", None, id="array"),
    pytest.param(b'"text"', 422, "invalid_field", None, id="string"),
    pytest.param(b"null", 422, "invalid_field", None, id="null"),
    pytest.param(b"{}", 422, "invalid_field", "client_id", id="empty-object"),
    pytest.param(b'{"text": "x"}', 422, "invalid_field", "client_id", id="no-client_id"),
    pytest.param(b'{"client_id": "c-bad"}', 422, "invalid_field", "text", id="no-text"),
    pytest.param(b'{"client_id": 5, "text": "x"}', 422, "invalid_field", "client_id", id="client_id-number"),
    pytest.param(b'{"client_id": "c-bad", "text": ["x"]}', 422, "invalid_field", "text", id="text-array"),
    pytest.param(b'{"client_id": "c-bad", "text": null}', 422, "invalid_field", "text", id="text-null"),
    pytest.param(b'{"client_id": "c-bad", "text": 12}', 422, "invalid_field", "text", id="text-number"),
    pytest.param(b'{"client_id": "c-bad", "text": "x", "client": "Ann"}', 422, "invalid_field", "client",
                 id="client-string"),
    pytest.param(b'{"client_id": "c-bad", "text": "x", "message_id": {"a": 1}}', 422, "invalid_field",
                 "message_id", id="message_id-object"),
]


@pytest.mark.parametrize("raw,status,code,field", MALFORMED)
def test_malformed_bodies_are_rejected_and_nothing_is_written(fakes, daemon, raw, status, code, field):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes)
    resp = api.post_message(None, raw=raw)
    err = assert_json_error(resp, status, code)
    if field is not None:
        assert field in err["message"], f"the error message should name {field!r}: {err!r}"
    settle(0.3)
    assert no_conversations(api)
    assert bot.snapshot() == []
    assert cb.snapshot() == []


BAD_UTF8 = [
    pytest.param(b'{"client_id": "c-u", "text": "bad \xff here"}', id="text-0xff"),
    pytest.param(b'{"client_id": "c-u", "text": "overlong \xc0\xaf"}', id="text-overlong"),
    pytest.param(b'{"client_id": "c-u", "text": "surrogate \xed\xa0\x80"}', id="text-surrogate"),
    pytest.param(b'{"client_id": "c-u", "text": "cut \xe2\x82"}', id="text-truncated-sequence"),
    pytest.param(b'{"client_id": "c-\xfe", "text": "ok"}', id="client_id"),
    pytest.param(b'{"client_id": "c-u", "text": "ok", "client": {"name": "A\xffnn"}}', id="client-name"),
]


@pytest.mark.parametrize("raw", BAD_UTF8)
def test_invalid_utf8_is_400_and_nothing_is_written(fakes, daemon, raw):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes)
    assert_json_error(api.post_message(None, raw=raw), 400, "invalid_utf8")
    settle(0.3)
    assert no_conversations(api)
    assert bot.snapshot() == []


def test_text_size_limit_counts_bytes(fakes, daemon):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes, bot_reply=lambda body: None)
    assert_json_error(api.post_message({"client_id": "c-big", "text": "a" * 4097}), 413, "text_too_long")
    assert_json_error(api.post_message({"client_id": "c-big", "text": "\u00e9" * 2049}), 413, "text_too_long")
    settle(0.2)
    assert no_conversations(api)
    a = api.send("c-big", "a" * 4096)
    b = api.send("c-big", "\u00e9" * 2048)  # 4096 bytes
    assert a["conversation_id"] == b["conversation_id"]
    msgs = api.messages_all(a["conversation_id"])
    assert [m["text"] for m in msgs] == ["a" * 4096, "\u00e9" * 2048]
    # one more over the limit changes nothing
    assert_json_error(api.post_message({"client_id": "c-big", "text": "b" * 5000}), 413, "text_too_long")
    assert len(api.messages_all(a["conversation_id"])) == 2


def test_max_text_bytes_is_configurable(fakes, daemon):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes, bot_reply=lambda body: None,
                                         conversations={"max_text_bytes": 10})
    api.send("c-small", "0123456789")
    assert_json_error(api.post_message({"client_id": "c-small", "text": "0123456789a"}), 413, "text_too_long")


# ------------------------------------------------------------ read API


def test_read_api_requires_the_api_token(fakes, daemon):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes)
    ack = api.send("c-tok", "hi")
    cid = ack["conversation_id"]
    for path in ("/v1/conversations", f"/v1/conversations/{cid}", f"/v1/conversations/{cid}/messages",
                 f"/v1/conversations/{cid}/events", "/v1/outbox/dead"):
        assert_json_error(api.get(path, token=None), 401, "unauthorized")
        assert_json_error(api.get(path, token="wrong-token"), 401, "unauthorized")
        assert_json_error(api.get(path, token=WEB_SECRET), 401, "unauthorized")
        assert api.get(path).status == 200, path


def test_unknown_conversation_is_404(fakes, daemon):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes)
    for path in ("/v1/conversations/does-not-exist", "/v1/conversations/does-not-exist/messages",
                 "/v1/conversations/does-not-exist/events"):
        assert_json_error(api.get(path), 404, "not_found")


def test_conversation_fields_and_last_20_messages(fakes, daemon):
    cb = fakes.callback()
    api = setup_echo_daemon(daemon, cb)
    first = api.send("c-many", "m-1", client={"name": "Ann", "email": "ann@example.com", "language": "en"})
    cid = first["conversation_id"]
    for i in range(2, 26):
        assert api.send("c-many", f"m-{i}")["conversation_id"] == cid
    msgs = api.wait_messages(cid, lambda ms: len(ms) >= 50, timeout=30, message="25 client + 25 bot messages")
    assert len(msgs) == 50
    assert [m["seq"] for m in msgs] == list(range(1, 51)), "messages oldest first, seq 1..50"
    for m in msgs:
        for k in ("id", "seq", "author", "text", "created"):
            assert k in m, f"message field {k} missing: {m!r}"
        assert m["author"]["kind"] in ("client", "bot")
    assert len({m["id"] for m in msgs}) == 50

    conv = api.conversation(cid)
    for k in ("id", "channel", "client_id", "state", "status", "tags", "client", "created", "updated", "messages"):
        assert k in conv, f"conversation field {k} missing: {conv!r}"
    assert conv["state"] == "bot"
    assert conv["status"] == "open"
    assert conv["tags"] == []
    assert conv["client"]["name"] == "Ann"
    assert conv["client"]["email"] == "ann@example.com"
    assert conv["created"] <= conv["updated"]
    last = conv["messages"]
    assert len(last) == 20, [m["seq"] for m in last]
    assert sorted(m["seq"] for m in last) == list(range(31, 51))

    # messages paged with a small limit: each exactly once, oldest first
    paged = api.messages_all(cid, limit=7)
    assert [m["seq"] for m in paged] == list(range(1, 51))

    # events: created first, one message event per message, no duplicates across pages
    events = api.events_all(cid, limit=5)
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "event ids repeat across pages"
    for e in events:
        for k in ("id", "type", "data", "created"):
            assert k in e, f"event field {k} missing: {e!r}"
    assert events[0]["type"] == "created", events[:3]
    message_events = [e for e in events if e["type"] == "message"]
    assert [e["data"]["seq"] for e in message_events] == list(range(1, 51))
    assert [e["data"]["id"] for e in message_events] == [m["id"] for m in msgs]
    assert message_events[0]["data"]["author"]["kind"] == "client"
    assert events == api.events_all(cid, limit=200)


def test_list_filters_and_cursor_pagination(fakes, daemon):
    cb = fakes.callback()
    cb2 = fakes.callback()
    install_lua_tree(daemon)
    write_echo_bot(daemon)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url),
                                        "web2": webhook_channel(cb2.callback_url)},
                      bots={"echo": lua_bot()})
    daemon.start()
    api = Api(daemon)
    web_ids, web2_ids = [], []
    for i in range(7):
        web_ids.append(api.send(f"c-{i}", f"hello {i}")["conversation_id"])
        if i < 3:
            web2_ids.append(api.send(f"c-{i}", f"hello {i}", instance="web2")["conversation_id"])
    assert len(set(web_ids + web2_ids)) == 10

    for limit in (1, 2, 3, 200):
        got = api.conversations_all(limit=limit, channel="web")
        ids = [c["id"] for c in got]
        assert len(ids) == len(set(ids)), f"duplicates with limit={limit}: {ids}"
        assert set(ids) == set(web_ids), f"limit={limit}: {ids}"
        assert all(c["channel"] == "web" for c in got)
        created = [c["created"] for c in got]
        assert created == sorted(created, reverse=True), f"not newest first: {created}"

    all_ids = [c["id"] for c in api.conversations_all(limit=2)]
    assert sorted(all_ids) == sorted(web_ids + web2_ids)
    assert sorted(c["id"] for c in api.conversations_all(limit=2, channel="web2")) == sorted(web2_ids)
    assert sorted(c["id"] for c in api.conversations_all(limit=2, state="bot")) == sorted(web_ids + web2_ids)
    assert sorted(c["id"] for c in api.conversations_all(limit=2, state="bot", channel="web2")) == sorted(web2_ids)
    assert api.conversations_all(state="agent") == []
    assert api.conversations_all(state="closed") == []
    assert api.conversations_all(channel="nope") == []

    # an explicit first page
    resp = api.get("/v1/conversations", limit=2, channel="web")
    doc = resp.json()
    assert len(doc["conversations"]) == 2 and isinstance(doc["next_cursor"], str)
    # the default limit is 50: all 10 fit
    doc = api.get("/v1/conversations").json()
    assert len(doc["conversations"]) == 10 and doc["next_cursor"] is None


@pytest.mark.parametrize("query", [
    {"limit": "0"}, {"limit": "201"}, {"limit": "abc"}, {"limit": "-1"}, {"limit": "2.5"},
    {"cursor": "definitely-not-a-cursor"},
])
def test_bad_limit_or_cursor_is_400(fakes, daemon, query):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes, bot_reply=lambda body: None)
    cid = api.send("c-q", "hi")["conversation_id"]
    for path in ("/v1/conversations", f"/v1/conversations/{cid}/messages", f"/v1/conversations/{cid}/events",
                 "/v1/outbox/dead"):
        assert_json_error(api.get(path, **query), 400, "invalid_parameter")


def test_limit_bounds_are_accepted(fakes, daemon):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes, bot_reply=lambda body: None)
    cid = api.send("c-q", "hi")["conversation_id"]
    for limit in ("1", "200"):
        resp = api.get(f"/v1/conversations/{cid}/messages", limit=limit)
        assert resp.status == 200, resp
        assert len(resp.json()["messages"]) == 1


def test_buttons_reply_sent_alone(fakes, daemon):
    replies = [{"type": "buttons", "buttons": [{"text": "A", "payload": "a"}]}]
    api, cb, bot = setup_http_bot_daemon(daemon, fakes, bot_reply=lambda body: {"replies": replies})
    api.send("c-alone", "buttons please")
    req = cb.wait_for(lambda reqs: [r for r in reqs if r.ok or r.problems], message="a callback request")[0]
    cb.assert_no_violations()
    assert [b["text"] for b in req.json["message"]["buttons"]] == ["A"]


def test_concurrent_first_messages_of_one_client_make_one_conversation(fakes, daemon):
    import threading

    api, cb, bot = setup_http_bot_daemon(daemon, fakes, bot_reply=lambda body: None)
    results, lock = [], threading.Lock()

    def send(i):
        r = api.post_message({"client_id": "c-race", "text": f"t{i}"})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.status for r in results] == [202] * 20, results
    conv_ids = {r.json()["conversation_id"] for r in results}
    assert len(conv_ids) == 1, conv_ids
    msgs = api.messages_all(conv_ids.pop())
    assert sorted(m["text"] for m in msgs) == sorted(f"t{i}" for i in range(20))
    assert [m["seq"] for m in msgs] == list(range(1, 21))


def test_concurrent_repeats_of_one_message_id_store_it_once(fakes, daemon):
    import threading

    api, cb, bot = setup_http_bot_daemon(daemon, fakes, bot_reply=lambda body: None)
    results, lock = [], threading.Lock()

    def send():
        r = api.post_message({"client_id": "c-rep", "text": "same", "message_id": "rep-1"})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=send) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.status for r in results] == [202] * 10, results
    bodies = [r.json() for r in results]
    assert len({(b["conversation_id"], b["message_id"]) for b in bodies}) == 1, bodies
    assert sum(1 for b in bodies if b.get("duplicate") is True) == 9, bodies
    assert len(api.messages_all(bodies[0]["conversation_id"])) == 1
    settle(0.5)
    assert len(bot.calls()) == 1


def test_message_id_is_forgotten_after_the_dedupe_window(fakes, daemon):
    api, cb, bot = setup_http_bot_daemon(daemon, fakes, bot_reply=lambda body: None,
                                         conversations={"dedupe_window": 1})
    first = api.send("c-win", "hello", message_id="win-1")
    dup = api.send("c-win", "hello", message_id="win-1")
    assert dup.get("duplicate") is True and dup["message_id"] == first["message_id"]
    time.sleep(2.2)
    later = api.send("c-win", "hello", message_id="win-1")
    assert later.get("duplicate") in (None, False), later
    assert later["message_id"] != first["message_id"]
    assert len(api.messages_all(first["conversation_id"])) == 2


def test_conversation_shows_last_20_messages_whatever_recent_messages_is(fakes, daemon):
    cb = fakes.callback()
    api = setup_echo_daemon(daemon, cb, conversations={"recent_messages": 5})
    cid = None
    for i in range(15):
        cid = api.send("c-recent", f"n{i}")["conversation_id"]
    api.wait_messages(cid, lambda ms: len(ms) >= 30, timeout=30, message="30 messages")
    last = api.conversation(cid)["messages"]
    assert sorted(m["seq"] for m in last) == list(range(11, 31)), [m["seq"] for m in last]


STATE_ROUTE_LUA = """
-- Test helper: change a conversation's state from outside.
function t_set_state(req)
  local conv = conversations.get(req.params.id)
  if not conv then http_error(404, "not_found", "no such conversation") end
  local ok, err = pcall(conv.set_state, conv, req.params.state, "test")
  if not ok then http_error(409, "invalid_transition", tostring(err)) end
  return 200, { state = conv.state }
end
route("POST", "/t/state/{id}/{state}", "t_set_state")
"""


def test_state_filter_and_state_events(fakes, daemon):
    cb = fakes.callback()
    install_lua_tree(daemon)
    write_echo_bot(daemon)
    daemon.write_script("scripts/t_state.lua", STATE_ROUTE_LUA)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url)}, bots={"echo": lua_bot()})
    daemon.start()
    api = Api(daemon)
    ids = [api.send(f"c-s{i}", "hi")["conversation_id"] for i in range(6)]

    def set_state(cid, state):
        return daemon.post(f"/t/state/{cid}/{state}")

    assert set_state(ids[0], "queued").json() == {"state": "queued"}
    assert set_state(ids[1], "queued").status == 200
    assert set_state(ids[2], "agent").status == 200
    assert set_state(ids[3], "closed").status == 200
    assert set_state(ids[3], "agent").status == 409, "closed -> agent is not a transition"
    assert set_state(ids[0], "nonsense").status == 409

    def check():
        by_state = {s: sorted(c["id"] for c in api.conversations_all(limit=2, state=s))
                    for s in ("bot", "queued", "agent", "closed")}
        assert by_state == {"bot": sorted(ids[4:]), "queued": sorted(ids[:2]), "agent": [ids[2]],
                            "closed": [ids[3]]}, by_state
        assert api.conversation(ids[2])["state"] == "agent"

    check()
    ev = [e for e in api.events_all(ids[0]) if e["type"] == "state"]
    assert len(ev) == 1 and ev[0]["data"]["from"] == "bot" and ev[0]["data"]["to"] == "queued", ev
    assert ev[0]["data"].get("reason") == "test"
    assert [e for e in api.events_all(ids[3]) if e["type"] == "state"][-1]["data"]["to"] == "closed"

    # states survive a restart
    assert daemon.restart() == 0
    check()
