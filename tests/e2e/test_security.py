"""docs/security.md: webhook credentials are checked before any lookup (an
unknown instance looks like a wrong secret), scoped API tokens, and the
warning about the example's public channel secret.
"""

from __future__ import annotations

import json
import time

from conftest import LuaExpr, assert_json_error, run_cli, wait_until
from convkit import (
    API_TOKEN,
    WEB_SECRET,
    Api,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    install_lua_tree,
    lua_bot,
    q,
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
# scoped API tokens
# --------------------------------------------------------------------------

READ_TOKEN = "tok-read-0123456789"
WRITE_TOKEN = "tok-write-0123456789"
ECHO_TOKEN = "tok-echo-0123456789"


def start_scoped(daemon, fakes, legacy=True):
    cb = fakes.callback()
    install_lua_tree(daemon)
    daemon.write_script("scripts/bots/echo.lua", ECHO_LUA)
    daemon.write_script("scripts/bots/other.lua", ECHO_LUA)
    write_conv_config(
        daemon,
        api_token=API_TOKEN if legacy else None,
        channels={"web": webhook_channel(cb.callback_url, bot="echo"),
                  "web2": webhook_channel(cb.callback_url, bot="other", secret="web2-secret")},
        bots={"echo": lua_bot("bots.echo"), "other": lua_bot("bots.other")},
        api_tokens=[
            {"name": "dashboard", "token": READ_TOKEN, "scopes": ["read"]},
            {"name": "ops", "token": WRITE_TOKEN, "scopes": ["write"]},
            {"name": "echo-bot", "token": ECHO_TOKEN, "scopes": ["write"], "bot": "echo"},
            {"name": "not-set", "token": LuaExpr('env("SWITCHBOARD_TEST_NOT_SET")'), "scopes": ["read", "write"]},
        ],
    )
    daemon.start()
    api = Api(daemon)
    web = api.send("c-1", "hi")["conversation_id"]
    web2 = api.send("c-2", "hi", instance="web2", secret="web2-secret")["conversation_id"]
    cb.wait_for_accepted(2)
    return api, cb, web, web2


def read_paths(web):
    return ["/v1/conversations", f"/v1/conversations/{web}", f"/v1/conversations/{web}/messages",
            f"/v1/conversations/{web}/events", "/v1/outbox/dead"]


REPLY = [{"type": "text", "text": "from the API"}]


def test_read_scope_reads_and_writes_nothing(fakes, daemon):
    api, cb, web, web2 = start_scoped(daemon, fakes)
    for path in read_paths(web):
        assert api.get(path, token=READ_TOKEN).status == 200, path
    before = api.messages_all(web)
    for resp in (api.replies(web, REPLY, token=READ_TOKEN),
                 api.post(f"/v1/conversations/{q(web)}/end", token=READ_TOKEN),
                 api.post("/v1/outbox/dead/1/retry", token=READ_TOKEN)):
        assert_json_error(resp, 403, "insufficient_scope")
    settle()
    assert api.messages_all(web) == before
    assert len(cb.accepted()) == 2


def test_write_scope_writes_and_does_not_read(fakes, daemon):
    api, cb, web, web2 = start_scoped(daemon, fakes)
    for path in read_paths(web):
        assert_json_error(api.get(path, token=WRITE_TOKEN), 403, "insufficient_scope")
    resp = api.replies(web2, REPLY, token=WRITE_TOKEN)
    assert resp.status == 202, resp
    m = cb.wait_for_text("from the API")
    assert m["author"] == {"kind": "bot", "name": "other"}, m     # the channel's bot by default
    assert_json_error(api.post(f"/v1/conversations/{q(web)}/end", token=WRITE_TOKEN), 409, "not_in_live_chat")
    assert_json_error(api.post("/v1/outbox/dead/1/retry", token=WRITE_TOKEN), 404, "not_found")


def test_a_bot_token_replies_only_to_its_bots_conversations(fakes, daemon):
    api, cb, web, web2 = start_scoped(daemon, fakes)
    resp = api.post(f"/v1/conversations/{q(web)}/replies", {"replies": REPLY}, token=ECHO_TOKEN)
    assert resp.status == 202, resp
    m = cb.wait_for_text("from the API")
    assert m["author"] == {"kind": "bot", "name": "echo"}, m
    # it cannot speak as another bot
    err = assert_json_error(api.post(f"/v1/conversations/{q(web)}/replies",
                                     {"replies": [{"type": "text", "text": "as other"}], "bot": "other"},
                                     token=ECHO_TOKEN), 422, "invalid_field")
    assert err["message"].startswith("bot "), err
    # another bot's conversation looks like an unknown one
    other = api.replies(web2, [{"type": "text", "text": "not yours"}], token=ECHO_TOKEN)
    unknown = api.replies("no-such-conversation", [{"type": "text", "text": "not yours"}], token=ECHO_TOKEN)
    assert_json_error(other, 404, "not_found")
    assert (other.status, other.body) == (unknown.status, unknown.body)
    assert_json_error(api.post(f"/v1/conversations/{q(web2)}/end", token=ECHO_TOKEN), 404, "not_found")
    assert_json_error(api.post("/v1/outbox/dead/1/retry", token=ECHO_TOKEN), 403, "insufficient_scope")
    assert_json_error(api.get("/v1/conversations", token=ECHO_TOKEN), 403, "insufficient_scope")
    settle()
    texts = [m.get("text") for m in cb.accepted_messages()]
    assert "not yours" not in texts and "as other" not in texts, texts
    assert [m["text"] for m in api.messages_all(web2)] == ["hi", "you said: hi"]


def test_legacy_api_token_keeps_every_scope_next_to_scoped_tokens(fakes, daemon):
    api, cb, web, web2 = start_scoped(daemon, fakes)
    for path in read_paths(web):
        assert api.get(path).status == 200, path
        assert api.get(path, token=READ_TOKEN).status == 200, path
    assert api.replies(web, REPLY).status == 202
    cb.wait_for_text("from the API")
    assert api.replies(web, [{"type": "text", "text": "scoped"}], token=WRITE_TOKEN).status == 202
    cb.wait_for_text("scoped")


def test_unknown_missing_and_unset_tokens_are_401(fakes, daemon):
    api, cb, web, web2 = start_scoped(daemon, fakes, legacy=False)
    for token in (None, "wrong", API_TOKEN, WEB_SECRET, READ_TOKEN + "x", READ_TOKEN[:-1], ""):
        assert_json_error(api.get("/v1/conversations", token=token), 401, "unauthorized")
        assert_json_error(api.replies(web, REPLY, token=token), 401, "unauthorized")
    assert daemon.find_logs(level="warn", token="not-set"), "a token without a value is disabled with a warning"
    assert api.get("/v1/conversations", token=READ_TOKEN).status == 200


def check_config(daemon, **extra):
    install_lua_tree(daemon)
    daemon.write_script("scripts/bots/echo.lua", ECHO_LUA)
    write_conv_config(daemon, channels={"web": webhook_channel("http://127.0.0.1:9/cb")},
                      bots={"echo": lua_bot("bots.echo")}, **extra)
    return run_cli(["--check", "-c", str(daemon.config_path)], cwd=daemon.workdir)


def test_token_config_mistakes_fail_the_load(daemon):
    mistakes = [
        ([{"name": "a", "token": "t1-0123456789", "scopes": ["admin"]}], "api_tokens[1]"),
        ([{"name": "a", "token": "t1-0123456789", "scopes": []}], "api_tokens[1]"),
        ([{"name": "a", "token": "t1-0123456789", "scopes": ["read"], "bot": "nobody"}], "api_tokens[1]"),
        ([{"token": "t1-0123456789", "scopes": ["read"]}], "api_tokens[1].name"),
        ([{"name": "a", "token": "t1-0123456789", "scopes": ["read"]},
          {"name": "b", "token": "t1-0123456789", "scopes": ["write"]}], "api_tokens[2]"),
        ([{"name": "a", "token": API_TOKEN, "scopes": ["read"]}], "api_tokens[1]"),
        ([{"name": "a", "token": "t1-0123456789", "scopes": ["read"]},
          {"name": "a", "token": "t2-0123456789", "scopes": ["read"]}], "api_tokens[2].name"),
    ]
    for tokens, where in mistakes:
        res = check_config(daemon, api_tokens=tokens)
        assert res.returncode == 1, (tokens, res.stdout, res.stderr)
        assert where in res.stderr, (tokens, res.stderr)
    res = check_config(daemon, api_tokens=[{"name": "a", "token": "t1-0123456789", "scopes": ["read", "write"],
                                            "bot": "echo"}])
    assert res.returncode == 0, res.stderr


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
