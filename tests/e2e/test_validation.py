"""Bad input gets a 4xx JSON error naming the field, never a 500, and
writes nothing (docs/conversations.md): the webhook channel and Telegram.
"""

from __future__ import annotations

import json
import time

from conftest import assert_json_error
from convkit import (
    Api,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    http_bot,
    install_lua_tree,
    lua_bot,
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


