"""Bad input gets a 4xx JSON error naming the field, never a 500, and
writes nothing (docs/conversations.md): the webhook channel, Telegram,
POST /v1/conversations/{id}/replies, the read API's parameters and the
dead-letter ids.
"""

from __future__ import annotations

import json
import time

from conftest import assert_json_error
from convkit import (
    API_TOKEN,
    Api,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    http_bot,
    install_lua_tree,
    lua_bot,
    q,
    webhook_channel,
    write_conv_config,
)
from fakes import tg_callback_update, tg_text_update


def settle(seconds=0.4):
    """A moment for the engine to do something it must not do."""
    time.sleep(seconds)


def start_web(daemon, fakes, bot_reply=None):
    """Channel ``web`` served by an external bot (no answer by default)."""
    cb = fakes.callback()
    bot = fakes.bot(reply=bot_reply or (lambda body: None))
    install_lua_tree(daemon)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, bot="ext")},
                      bots={"ext": http_bot(bot.bot_url)})
    daemon.start()
    return Api(daemon), cb, bot


# --------------------------------------------------------------------------
# the webhook channel
# --------------------------------------------------------------------------

NUL_BODIES = [
    ({"client_id": "c-1", "text": "a\u0000b"}, "text"),
    ({"client_id": "c\u00001", "text": "hi"}, "client_id"),
    ({"client_id": "c-1", "text": "hi", "message_id": "m\u00001"}, "message_id"),
    ({"client_id": "c-1", "text": "hi", "client": {"name": "A\u0000nn"}}, "client.name"),
    ({"client_id": "c-1", "text": "hi", "client": {"custom": {"k\u0000": "v"}}}, "client.custom"),
    ({"client_id": "c-1", "text": "hi", "client": {"custom": {"k": {"value": "v\u0000"}}}}, "client.custom.k.value"),
    ({"client_id": "c-1", "text": "hi", "attachments": [{"url": "http://f.example/a", "name": "a\u0000"}]},
     "attachments[1].name"),
    ({"client_id": "c-1", "text": "hi", "attachments": [{"url": "http://f.example/a\u0000"}]}, "attachments[1].url"),
]


def test_nul_in_any_text_field_is_422_and_writes_nothing(fakes, daemon):
    api, cb, bot = start_web(daemon, fakes)
    for body, field in NUL_BODIES:
        err = assert_json_error(api.post_message(body), 422, "invalid_field")
        assert field in err["message"], (body, err)
    settle()
    assert api.conversations_all() == []
    assert bot.snapshot() == [] and cb.snapshot() == []


BAD_URLS = ["javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,hi", "file:///etc/passwd",
            "/relative.png", "//host/x.png", "http://", "ftp://f.example/a", "http://a b/c"]


def test_attachment_urls_must_be_http(fakes, daemon):
    api, cb, bot = start_web(daemon, fakes)
    for url in BAD_URLS:
        resp = api.post_message({"client_id": "c-1", "text": "", "attachments": [{"url": url}]})
        err = assert_json_error(resp, 422, "invalid_field")
        assert "attachments[1].url" in err["message"], (url, err)
    settle()
    assert api.conversations_all() == []
    # the scheme is case-insensitive
    ok = api.post_message({"client_id": "c-1", "text": "", "attachments": [{"url": "HTTPS://f.example/a.png"}]})
    assert ok.status == 202, ok
    msgs = api.messages_all(ok.json()["conversation_id"])
    assert [a["url"] for a in msgs[0]["attachments"]] == ["HTTPS://f.example/a.png"]


# --------------------------------------------------------------------------
# Telegram: an update we cannot store is acknowledged, not failed
# --------------------------------------------------------------------------

TG_SECRET = "tg-secret-2"


def test_telegram_text_with_nul_is_acknowledged_and_ignored(fakes, daemon):
    tg = fakes.telegram()
    install_lua_tree(daemon)
    daemon.write_script("scripts/bots/echo.lua", """
        local M = {}
        function M.on_message(conv, msg) return { { type = "text", text = "you said: " .. msg.text } } end
        return M
    """)
    write_conv_config(daemon, channels={"tg": {"type": "telegram", "token": tg.token, "secret_token": TG_SECRET,
                                               "api_base": tg.api_base, "bot": "echo"}},
                      bots={"echo": lua_bot("bots.echo")})
    daemon.start()
    api = Api(daemon)
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    for upd in (tg_text_update("bad \u0000 text"), tg_callback_update("da\u0000ta")):
        resp = daemon.post("/v1/channels/tg/telegram", json.dumps(upd), headers=headers)
        assert resp.status == 200, resp
        assert resp.json().get("ignored") is True, resp
    # a NUL in the sender's name drops the name, not the message
    user = {"id": 4242, "is_bot": False, "first_name": "Iv\u0000an"}
    resp = daemon.post("/v1/channels/tg/telegram", json.dumps(tg_text_update("hello", user=user)), headers=headers)
    assert resp.status == 200 and not resp.json().get("ignored"), resp
    tg.wait_for_sent(1, text="you said: hello")
    convs = api.conversations_all()
    assert [c["client_id"] for c in convs] == ["4242"], convs
    assert "name" not in api.conversation(convs[0]["id"])["client"]
    assert [m["text"] for m in api.messages_all(convs[0]["id"]) if m["author"]["kind"] == "client"] == ["hello"]
    tg.assert_no_violations()


# --------------------------------------------------------------------------
# POST /v1/conversations/{id}/replies
# --------------------------------------------------------------------------

TEXT = {"type": "text", "text": "fine"}

BAD_REPLIES = [
    ({"replies": []}, "replies"),
    ({"replies": {"a": TEXT}}, "replies"),
    ({"replies": [TEXT] * 51}, "replies"),
    ({}, "replies"),
    ({"replies": [TEXT, {}]}, "replies[2]"),
    ({"replies": [5]}, "replies[1]"),
    ({"replies": ["text"]}, "replies[1]"),
    ({"replies": [{"type": "mystery"}]}, "replies[1].type"),
    ({"replies": [{"text": "no type"}]}, "replies[1].type"),
    ({"replies": [{"type": 1}]}, "replies[1].type"),
    ({"replies": [TEXT, TEXT, {"type": "text"}]}, "replies[3].text"),
    ({"replies": [{"type": "text", "text": 5}]}, "replies[1].text"),
    ({"replies": [{"type": "text", "text": ""}]}, "replies[1].text"),
    ({"replies": [{"type": "text", "text": "a\u0000"}]}, "replies[1].text"),
    ({"replies": [{"type": "text", "text": "x" * 4097}]}, "replies[1].text"),
    ({"replies": [{"type": "buttons", "buttons": []}]}, "replies[1].buttons"),
    ({"replies": [{"type": "buttons", "buttons": [{"text": "b"}] * 21}]}, "replies[1].buttons"),
    ({"replies": [{"type": "buttons", "buttons": [{"payload": "p"}]}]}, "replies[1].buttons[1].text"),
    ({"replies": [{"type": "buttons", "buttons": [7]}]}, "replies[1].buttons[1]"),
    ({"replies": [{"type": "buttons", "buttons": [{"text": "b", "payload": 3}]}]},
                 "replies[1].buttons[1].payload"),
    ({"replies": [{"type": "buttons", "buttons": [{"text": "b", "url": "javascript:x"}]}]},
                 "replies[1].buttons[1].url"),
    ({"replies": [{"type": "image"}]}, "replies[1].imageUrl"),
    ({"replies": [{"type": "image", "imageUrl": "javascript:alert(1)"}]}, "replies[1].imageUrl"),
    ({"replies": [{"type": "switch", "ignoreOffline": "yes"}]}, "replies[1].ignoreOffline"),
    ({"replies": [{"type": "switch", "sendMessageHistoryAmount": 51}]},
                 "replies[1].sendMessageHistoryAmount"),
    ({"replies": [{"type": "switch", "send_message_history_amount": 2.5}]},
                 "replies[1].send_message_history_amount"),
    ({"replies": [{"type": "switch", "closeChatPhrases": "/bot"}]}, "replies[1].closeChatPhrases"),
    ({"replies": [{"type": "switch", "attributes": [1]}]}, "replies[1].attributes"),
    ({"replies": [{"type": "switch", "destination": {"id": 1}}]}, "replies[1].destination"),
    ({"replies": [{"type": "switch", "firstMessage": "a\u0000"}]}, "replies[1].firstMessage"),
    ({"replies": [{"type": "switch"}, {"type": "switch"}]}, "replies[2]"),
    ({"replies": [TEXT], "bot": 5}, "bot"),
]


def test_bad_replies_are_422_naming_the_field_and_store_nothing(fakes, daemon):
    api, cb, bot = start_web(daemon, fakes)
    cid = api.send("c-1", "hi")["conversation_id"]
    bot.wait_for_requests(1)
    before = api.messages_all(cid)
    for body, field in BAD_REPLIES:
        resp = api.post(f"/v1/conversations/{q(cid)}/replies", body)
        err = assert_json_error(resp, 422, "invalid_field")
        assert err["message"].startswith(field + " ") or err["message"].startswith(field + "."), (body, field, err)
    settle()
    assert api.messages_all(cid) == before
    assert cb.snapshot() == []

    # and the checks take what the documentation promises
    resp = api.replies(cid, [
        {"type": "text", "text": "x" * 4096, "state": "/Start"},        # unknown fields are ignored
        {"type": "buttons", "buttons": ["A", {"text": "B", "payload": "b"}, {"text": "C", "url": "https://c.example"}]},
        {"type": "image", "imageUrl": "Https://img.example/cat.png", "text": "a cat"},
        {"type": "buttons", "text": "more", "buttons": [{"text": "D"}] * 20},
    ])
    assert resp.status == 202, resp
    # buttons join the message before them when it has none yet
    assert len(resp.json()["message_ids"]) == 2, resp.json()
    cb.wait_for_accepted(2)
    cb.assert_no_violations()


def test_twenty_thousand_replies_are_refused_before_anything_is_stored(fakes, daemon):
    api, cb, bot = start_web(daemon, fakes)
    cid = api.send("c-1", "hi")["conversation_id"]
    resp = api.replies(cid, [{"type": "text", "text": f"m{i}"} for i in range(20000)])
    err = assert_json_error(resp, 422, "invalid_field")
    assert err["message"].startswith("replies "), err
    settle()
    assert [m["author"]["kind"] for m in api.messages_all(cid)] == ["client"]
    assert cb.snapshot() == []


def test_switch_alone_answers_an_empty_array(fakes, daemon):
    """A switch stores no message: message_ids is [] (not {})."""
    api, cb, bot = start_web(daemon, fakes)
    cid = api.send("c-1", "hi")["conversation_id"]
    resp = api.replies(cid, [{"type": "switch", "ignoreOffline": True}])   # no desk: the bot gets an event
    assert resp.status == 202, resp
    assert resp.json() == {"message_ids": []}, resp


def test_end_takes_an_empty_body_or_an_object(fakes, daemon):
    api, cb, bot = start_web(daemon, fakes)
    cid = api.send("c-1", "hi")["conversation_id"]
    path = f"/v1/conversations/{q(cid)}/end"
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    assert_json_error(daemon.post(path, "not json", headers=headers), 400, "malformed_json")
    assert_json_error(daemon.post(path, "[1, 2]", headers=headers), 422, "invalid_field")
    assert_json_error(daemon.post(path, '"text"', headers=headers), 422, "invalid_field")
    # well-formed: the answer is about the conversation (not in a live chat)
    assert_json_error(daemon.post(path, "", headers=headers), 409, "not_in_live_chat")
    assert_json_error(daemon.post(path, "{}", headers=headers), 409, "not_in_live_chat")


# --------------------------------------------------------------------------
# numbers in query strings and paths
# --------------------------------------------------------------------------

BAD_NUMBERS = ["1e2", "0x10", " 5 ", "+5", "5.0", "-0", "٣"]


def test_limit_and_cursor_are_plain_decimal_digits(fakes, daemon):
    api, cb, bot = start_web(daemon, fakes)
    cid = api.send("c-1", "hi")["conversation_id"]
    for path in ("/v1/conversations", f"/v1/conversations/{cid}/messages", f"/v1/conversations/{cid}/events",
                 "/v1/outbox/dead"):
        for bad in BAD_NUMBERS:
            err = assert_json_error(api.get(path, limit=bad), 400, "invalid_parameter")
            assert "limit" in err["message"], (path, bad, err)
            err = assert_json_error(api.get(path, cursor=bad), 400, "invalid_parameter")
            assert "cursor" in err["message"], (path, bad, err)
        assert api.get(path, limit="007").status == 200, path


def test_dead_letter_ids_are_plain_decimal_digits(fakes, daemon):
    api, cb, bot = start_web(daemon, fakes)
    for dead_id in ("1e308", "1e3", "0x10", "-1", "1.0", "99999999999999999999", " 1", "abc"):
        assert_json_error(api.retry_dead(dead_id), 404, "not_found")
