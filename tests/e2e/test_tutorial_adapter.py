"""The adapter docs/writing-an-adapter.md builds (examples/providers/acme.lua)
against its strict fake (fake_acme.py). The tutorial shows this code; the
last test checks that it still shows the code of the repository."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

from conftest import REPO_ROOT, assert_json_error, wait_until
from convkit import Api, install_lua_tree, lua_bot, write_conv_config, write_echo_bot
from fake_acme import FakeAcme

SECRET = "acme-webhook-secret-1"


@pytest.fixture
def acme(daemon):
    fake = FakeAcme()
    install_lua_tree(daemon)
    shutil.copy(REPO_ROOT / "examples" / "providers" / "acme.lua", daemon.workdir / "providers" / "acme.lua")
    write_echo_bot(daemon)                      # a Lua bot answering "you said: <text>"
    write_conv_config(daemon, bots={"echo": lua_bot()}, channels={"shop": {
        "type": "acme", "api_base": fake.url, "api_token": fake.token, "webhook_secret": SECRET,
        "public_url": "https://chat.example.com", "bot": "echo",
    }})
    daemon.start()
    yield daemon, fake
    fake.close()


def event(event_id, chat_id, text, name="Ann"):
    return {"event_id": event_id, "type": "message.created",
            "message": {"id": f"m-{event_id}", "chat_id": chat_id, "text": text, "author": {"name": name}}}


def post_event(daemon, ev, secret=SECRET):
    body = json.dumps(ev).encode()
    headers = {"Content-Type": "application/json", **FakeAcme.sign(secret, body, str(int(time.time())))}
    return daemon.post("/v1/channels/shop/acme", body, headers=headers)


def test_a_message_reaches_the_bot_and_its_reply_reaches_acme(acme):
    daemon, fake = acme
    resp = post_event(daemon, event("e1", "c42", "hello"))
    assert resp.status == 200 and resp.json() == {"ok": True}, resp
    wait_until(lambda: fake.messages == [("c42", "you said: hello")], message="the reply at Acme")
    fake.assert_no_violations()


def test_acme_is_told_where_our_webhook_is(acme):
    daemon, fake = acme
    wait_until(lambda: fake.webhook, message="PUT /v1/webhook")
    assert fake.webhook == {"url": "https://chat.example.com/v1/channels/shop/acme", "secret": SECRET}
    fake.assert_no_violations()


def test_a_wrong_signature_is_refused_and_changes_nothing(acme):
    daemon, fake = acme
    assert_json_error(post_event(daemon, event("e2", "c42", "hi"), secret="wrong"), 401, "unauthorized")
    assert Api(daemon).conversations_all() == []


def test_a_repeated_event_is_handled_once(acme):
    daemon, fake = acme
    assert post_event(daemon, event("e3", "c7", "once")).json() == {"ok": True}
    assert post_event(daemon, event("e3", "c7", "once")).json() == {"ok": True, "duplicate": True}
    wait_until(lambda: fake.messages, message="the reply at Acme")
    time.sleep(0.3)    # a moment for a second reply that must not come
    assert fake.messages == [("c7", "you said: once")]


def test_a_bad_event_is_422_naming_the_field(acme):
    daemon, fake = acme
    bad = event("e4", "c7", "")
    err = assert_json_error(post_event(daemon, bad), 422, "invalid_field")
    assert err["message"] == "message.text must not be empty", err


# --------------------------------------------------------------------------
# the tutorial shows the code of the repository (not shown in it)
# --------------------------------------------------------------------------

def test_the_tutorial_shows_this_code():
    doc = (REPO_ROOT / "docs" / "writing-an-adapter.md").read_text()
    blocks: dict[str, list[str]] = {}
    for path, code in re.findall(r"<!-- from (\S+) -->\n```\w*\n(.*?)```", doc, re.S):
        blocks.setdefault(path, []).append(code)
    assert set(blocks) == {"examples/providers/acme.lua", "tests/e2e/fake_acme.py",
                           "tests/e2e/test_tutorial_adapter.py"}, set(blocks)
    for path, codes in blocks.items():
        text = (REPO_ROOT / path).read_text()
        at = 0
        for code in codes:              # each block is the file's text, in order
            found = text.find(code, at)
            assert found >= 0, f"docs/writing-an-adapter.md shows code that is not in {path}:\n{code}"
            at = found + len(code)
    for path in ("examples/providers/acme.lua", "tests/e2e/fake_acme.py"):     # and these whole
        lines = [l for l in (REPO_ROOT / path).read_text().splitlines() if l.strip()]
        shown = [l for code in blocks[path] for l in code.splitlines() if l.strip()]
        assert shown == lines, f"docs/writing-an-adapter.md does not show all of {path}"
