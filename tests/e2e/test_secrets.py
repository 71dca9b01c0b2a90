"""Secrets stay secret (docs/security.md, "Secrets in outbound calls"):
platform tokens and callback secrets are filled in when a call is made,
never stored with an outbox entry, never listed with dead letters, never
logged; a reload rotates them for calls still waiting."""

from __future__ import annotations

import json
import sqlite3

from conftest import wait_until
from convkit import (
    Api,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    install_lua_tree,
    lua_bot,
    webhook_channel,
    write_conv_config,
    write_echo_bot,
)
from fakes import tg_text_update, tg_user

TG_SECRET = "tg-webhook-secret"
CB_SECRET = "callback-secret-5f2a9c"


def stored_outbox_text(daemon) -> str:
    con = sqlite3.connect(daemon.workdir / "var" / "switchboard.db", timeout=10)
    try:
        rows = con.execute("SELECT url, coalesce(headers, ''), coalesce(CAST(body AS TEXT), '') FROM outbox").fetchall()
    finally:
        con.close()
    return json.dumps(rows)


def everything_said(daemon, api) -> str:
    """What an operator can read: the dead letters, the metrics and the log."""
    return json.dumps(api.dead_all()) + daemon.get("/metrics").text + daemon.log_text()


def test_a_telegram_token_is_filled_in_and_never_kept(fakes, daemon):
    tg = fakes.telegram(token="424242:SECRET-telegram-token")
    tg.fail_first(100, error_code=400, description="Bad Request: chat not found")   # -> dead letters
    install_lua_tree(daemon)
    write_echo_bot(daemon)
    write_conv_config(daemon, channels={"tg": {"type": "telegram", "token": tg.token, "secret_token": TG_SECRET,
                                               "api_base": tg.api_base, "bot": "echo"}},
                      bots={"echo": lua_bot()})
    daemon.start()
    api = Api(daemon)
    resp = daemon.post("/v1/channels/tg/telegram", json.dumps(tg_text_update("hello", user=tg_user(user_id=77))),
                       headers={"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": TG_SECRET})
    assert resp.status == 200, resp
    dead = wait_until(lambda: api.dead_all(), timeout=15, message="the sendMessage dead-lettered")
    # the platform got the real token in its path
    assert any(r.path.startswith("/bot424242:SECRET-telegram-token/sendMessage") for r in tg.snapshot())
    assert dead[0]["url"].endswith("/bot${channels.tg.token}/sendMessage"), dead
    assert "SECRET-telegram-token" not in stored_outbox_text(daemon)
    assert "SECRET-telegram-token" not in everything_said(daemon, api)


def test_a_callback_secret_is_filled_in_never_kept_and_rotated_by_a_reload(fakes, daemon):
    cb = fakes.callback().always_fail(503)
    install_lua_tree(daemon)
    write_echo_bot(daemon)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, callback_secret=CB_SECRET)},
                      bots={"echo": lua_bot()}, outbox={"backoff_base": 0.2, "backoff_max": 0.5})
    daemon.start()
    api = Api(daemon)
    api.send("c-secret", "hello")
    wait_until(lambda: len(cb.attempts()) >= 1, message="a first attempt at the callback")
    assert cb.attempts()[0].header("Authorization") == f"Bearer {CB_SECRET}"
    assert CB_SECRET not in stored_outbox_text(daemon)
    assert "${channels.web.callback_secret}" in stored_outbox_text(daemon)
    # the secret changes in the config: the call still waiting uses the new one
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, callback_secret="rotated-secret-77")},
                      bots={"echo": lua_bot()}, outbox={"backoff_base": 0.2, "backoff_max": 0.5})
    daemon.reload_ok()
    cb.heal()
    cb.wait_for_text("you said: hello")
    assert cb.accepted()[0].header("Authorization") == "Bearer rotated-secret-77"
    assert CB_SECRET not in everything_said(daemon, api)


def test_an_http_bot_secret_is_filled_in(fakes, daemon):
    cb = fakes.callback()
    bot = fakes.bot(secret="bot-secret-xyz")
    install_lua_tree(daemon)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, bot="ext")},
                      bots={"ext": {"type": "http", "url": bot.url + "/bot", "secret": "bot-secret-xyz"}})
    daemon.start()
    Api(daemon).send("c-bot", "hi")
    bot.wait_for_requests(1)
    assert bot.calls()[0].header("Authorization") == "Bearer bot-secret-xyz"
    assert "bot-secret-xyz" not in stored_outbox_text(daemon)


def test_only_instance_settings_can_be_named(fakes, daemon):
    """A template cannot reach the admin or API tokens."""
    target = fakes.callback()
    daemon.write_config(admin_token="the-admin-token")
    daemon.write_script("scripts/leak.lua", f"""
        function try_leak(req)
          outbox.send{{ target = "leak", url = "{target.callback_url}?t=${{admin_token}}", body = {{ x = 1 }} }}
          return 200, {{}}
        end
        route("POST", "/t/leak", "try_leak")
    """)
    daemon.start()
    daemon.post("/t/leak")
    wait_until(lambda: daemon.find_logs(msg="outbox: dead letter") or daemon.metric("switchboard_outbox_retried_total") > 0,
               timeout=10, message="the attempt refused")
    assert all("the-admin-token" not in r.path for r in target.snapshot())
