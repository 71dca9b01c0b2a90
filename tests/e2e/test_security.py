"""Webhook credentials are checked before any lookup (an unknown instance
or desk looks like a wrong secret), and the example's public channel secret
is warned about (docs/conversations.md, docs/handoff.md).
"""

from __future__ import annotations

import json
import time

from conftest import assert_json_error, wait_until
from convkit import (
    Api,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    install_lua_tree,
    lua_bot,
    webhook_channel,
    write_conv_config,
)
from fakes import tg_text_update
from test_handoff import DEFAULT_EMPLOYEE, handoff  # noqa: F401 - handoff is a fixture

TG_SECRET = "tg-secret-3"

ECHO_LUA = """
local M = {}
function M.on_message(conv, msg) return { { type = "text", text = "you said: " .. msg.text } } end
return M
"""


def settle(seconds=0.4):
    time.sleep(seconds)


# --------------------------------------------------------------------------
# authentication before lookup
# --------------------------------------------------------------------------


def same_answer(a, b):
    assert a.status == 401, a
    assert (a.status, a.body, a.content_type) == (b.status, b.body, b.content_type), (a, b)
    assert_json_error(a, 401, "unauthorized")


def test_channel_endpoints_answer_unknown_instances_like_wrong_secrets(fakes, daemon):
    cb = fakes.callback()
    tg = fakes.telegram()
    install_lua_tree(daemon)
    daemon.write_script("scripts/bots/echo.lua", ECHO_LUA)
    write_conv_config(daemon, channels={
        "web": webhook_channel(cb.callback_url),
        "tg": {"type": "telegram", "token": tg.token, "secret_token": TG_SECRET, "api_base": tg.api_base,
               "bot": "echo"},
        "nosecret": {"type": "webhook", "callback_url": cb.callback_url, "bot": "echo"},
    }, bots={"echo": lua_bot()})
    daemon.start()
    api = Api(daemon)
    body = {"client_id": "c-1", "text": "hi"}

    wrong = api.post_message(body, secret="wrong")
    for instance in ("nope", "tg", "nosecret"):      # unknown, another type, no secret configured
        same_answer(api.post_message(body, instance=instance), wrong)
        same_answer(api.post_message(body, instance=instance, secret="wrong"), wrong)
    same_answer(api.post_message(body, secret=None), wrong)

    def tg_post(instance, secret):
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        return daemon.post(f"/v1/channels/{instance}/telegram", json.dumps(tg_text_update("hi")), headers=headers)

    tg_wrong = tg_post("tg", "wrong")
    for instance in ("nope", "web"):
        same_answer(tg_post(instance, TG_SECRET), tg_wrong)
        same_answer(tg_post(instance, "wrong"), tg_wrong)
    same_answer(tg_post("tg", None), tg_wrong)
    settle()
    assert api.conversations_all() == []
    assert cb.snapshot() == [] and tg.snapshot() == []


def test_desk_webhook_answers_unknown_desks_like_wrong_keys(handoff):
    env = handoff()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1", destination="15")
    event = {"id": "ev-x", "userId": conv_id, "type": "TextMessage", "text": "hi", "employee": DEFAULT_EMPLOYEE}
    base = env.public_url

    def post(path):
        return env.desk.post_event(event, url=base + path)

    wrong = post("/v1/providers/support/operatorapi/wrong")
    same_answer(post("/v1/providers/nope/operatorapi/k3y"), wrong)
    same_answer(post("/v1/providers/web/operatorapi/k3y"), wrong)   # a channel's name is no desk either
    same_answer(post("/v1/providers/nope/operatorapi/wrong"), wrong)
    settle()
    assert "hi" not in [m.get("text") for m in env.callbacks(conv_id)]


# --------------------------------------------------------------------------
# the example's channel secret
# --------------------------------------------------------------------------


def test_the_example_secret_is_warned_about_at_every_load(fakes, daemon):
    cb = fakes.callback()
    install_lua_tree(daemon)
    daemon.write_script("scripts/bots/echo.lua", ECHO_LUA)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, secret="change-me"),
                                        "safe": webhook_channel(cb.callback_url, secret="s3cr3t-enough")},
                      bots={"echo": lua_bot()})
    daemon.start()
    warned = daemon.find_logs(level="warn", channel="web")
    assert warned and "secret" in warned[-1]["msg"], daemon.log_text()[-2000:]
    assert not daemon.find_logs(level="warn", channel="safe")
    daemon.reload_ok()
    wait_until(lambda: len(daemon.find_logs(level="warn", channel="web")) >= 2,
               message="the warning again at the reload")
