"""Helpers for the conversation-layer tests (docs/conversations.md): a
config writer, the repository's Lua folders copied into the test's
directory, and a small client of the webhook channel and the /v1 API.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse

from conftest import REPO_ROOT, assert_json_error, wait_until

API_TOKEN = "test-api-token"
WEB_SECRET = "web-secret-1"
BOT_SECRET = "bot-secret-1"

# Small backoff so retries happen within a test's patience.
FAST_OUTBOX = {"backoff_base": 0.05, "backoff_max": 0.5, "max_attempts": 10, "timeout": 5}

# Test routes: POST /test/heal sets state "healed" (a failing job keeps
# nothing it wrote, so a flaky script cannot count its own failures in
# state: the test heals it from outside), GET /test/state?key= reads state.
HEAL_ROUTE = """
function heal(req)
  state.set("healed", true)
  return 200, { healed = true }
end
route("POST", "/test/heal", "heal")

function show_state(req)
  return 200, { value = state.get(req.query.key) }
end
route("GET", "/test/state", "show_state")
"""

ECHO_BOT_LUA = """
-- A Lua bot for the tests: echoes the client's text.
local M = {}

function M.on_message(conv, msg)
  return { replies = { { type = "text", text = "you said: " .. tostring(msg.text) } } }
end

return M
"""


def install_lua_tree(daemon):
    """Copy the repository's scripts/, providers/ and rules/ into the test's
    directory (the daemon's cwd), so the engine's own Lua (webhook and
    Telegram adapters, conversation flow) is loaded next to the test's files."""
    for folder in ("scripts", "providers", "rules"):
        src = REPO_ROOT / folder
        if src.is_dir():
            shutil.copytree(src, daemon.workdir / folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.md", ".*"))


def write_echo_bot(daemon, module_path="scripts/bots/echo.lua"):
    daemon.write_script(module_path, ECHO_BOT_LUA)


def webhook_channel(callback_url, bot="echo", secret=WEB_SECRET, callback_secret=None):
    ch = {"type": "webhook", "secret": secret, "callback_url": callback_url, "bot": bot}
    if callback_secret is not None:
        ch["callback_secret"] = callback_secret
    return ch


def lua_bot(module="bots.echo"):
    return {"type": "lua", "module": module}


def http_bot(url, secret=None):
    b = {"type": "http", "url": url}
    if secret is not None:
        b["secret"] = secret
    return b


def write_conv_config(daemon, channels, bots, sync="normal", outbox=None, conversations=None, **extra):
    """The config of a conversation test: api_token, store.sync, a fast outbox."""
    ob = dict(FAST_OUTBOX)
    ob.update(outbox or {})
    cfg = dict(
        api_token=API_TOKEN,
        store={"sync": sync},
        outbox=ob,
        channels=channels,
        bots=bots,
    )
    if conversations:
        cfg["conversations"] = conversations
    cfg.update(extra)
    daemon.write_config(**cfg)


def setup_echo_daemon(daemon, callback, sync="normal", outbox=None, conversations=None, start=True, **extra):
    """A daemon with channel ``web`` (webhook -> ``callback``) served by the
    Lua echo bot."""
    install_lua_tree(daemon)
    write_echo_bot(daemon)
    write_conv_config(
        daemon,
        channels={"web": webhook_channel(callback.callback_url, bot="echo")},
        bots={"echo": lua_bot()},
        sync=sync, outbox=outbox, conversations=conversations, **extra,
    )
    if start:
        daemon.start()
    return Api(daemon)


def metric_sum(daemon, name) -> float:
    """Sum of a metric over all its label sets (0 if absent)."""
    return sum(v for (n, _labels), v in daemon.metrics().items() if n == name)


def metric_present(daemon, name) -> bool:
    return any(n == name for (n, _labels) in daemon.metrics())


class Api:
    """The webhook channel and the /v1 API of one daemon."""

    def __init__(self, daemon, api_token=API_TOKEN):
        self.d = daemon
        self.token = api_token

    # ---- the webhook channel --------------------------------------------

    def post_message(self, body, instance="web", secret=WEB_SECRET, raw=None, headers=None, timeout=30):
        """POST /v1/channels/{instance}/messages; ``raw`` sends bytes as is."""
        h = {"Content-Type": "application/json"}
        if secret is not None:
            h["Authorization"] = f"Bearer {secret}"
        h.update(headers or {})
        data = raw if raw is not None else json.dumps(body)
        return self.d.post(f"/v1/channels/{urllib.parse.quote(instance, safe='')}/messages", data,
                           headers=h, timeout=timeout)

    def send(self, client_id, text, instance="web", secret=WEB_SECRET, message_id=None, client=None) -> dict:
        """A client message that must be accepted: returns the 202 body."""
        body = {"client_id": client_id, "text": text}
        if message_id is not None:
            body["message_id"] = message_id
        if client is not None:
            body["client"] = client
        resp = self.post_message(body, instance=instance, secret=secret)
        assert resp.status == 202, f"client message not accepted: {resp!r}"
        doc = resp.json()
        assert isinstance(doc.get("conversation_id"), str) and doc["conversation_id"], doc
        assert isinstance(doc.get("message_id"), str) and doc["message_id"], doc
        return doc

    # ---- /v1 API ---------------------------------------------------------

    def _auth(self, token="__default__"):
        if token == "__default__":
            token = self.token
        return {"Authorization": f"Bearer {token}"} if token is not None else {}

    def get(self, path, token="__default__", **query):
        q = {k: v for k, v in query.items() if v is not None}
        if q:
            path = path + "?" + urllib.parse.urlencode(q)
        return self.d.get(path, headers=self._auth(token))

    def post(self, path, body=None, token="__default__"):
        h = self._auth(token)
        data = None
        if body is not None:
            h["Content-Type"] = "application/json"
            data = json.dumps(body)
        return self.d.post(path, data, headers=h)

    def conversation(self, conv_id) -> dict:
        resp = self.get(f"/v1/conversations/{q(conv_id)}")
        assert resp.status == 200, f"GET conversation {conv_id}: {resp!r}"
        doc = resp.json()
        assert isinstance(doc.get("conversation"), dict), doc
        return doc["conversation"]

    def _pages(self, path, key, limit, **query):
        items, cursors, pages = [], set(), 0
        cursor = None
        while True:
            resp = self.get(path, limit=limit, cursor=cursor, **query)
            assert resp.status == 200, f"GET {path} cursor={cursor!r}: {resp!r}"
            doc = resp.json()
            assert isinstance(doc.get(key), list), f"{key} missing in {doc!r}"
            assert "next_cursor" in doc, f"next_cursor missing in {doc!r}"
            assert len(doc[key]) <= limit, f"page of {len(doc[key])} > limit {limit}"
            items.extend(doc[key])
            pages += 1
            cursor = doc["next_cursor"]
            if cursor is None:
                return items
            assert isinstance(cursor, str) and cursor, f"next_cursor {cursor!r}"
            assert cursor not in cursors, f"next_cursor repeats: {cursor!r}"
            cursors.add(cursor)
            assert pages < 10000, "pagination does not end"

    def conversations_all(self, limit=200, **filters) -> list:
        return self._pages("/v1/conversations", "conversations", limit, **filters)

    def messages_all(self, conv_id, limit=200) -> list:
        return self._pages(f"/v1/conversations/{q(conv_id)}/messages", "messages", limit)

    def events_all(self, conv_id, limit=200) -> list:
        return self._pages(f"/v1/conversations/{q(conv_id)}/events", "events", limit)

    def dead_all(self, limit=200) -> list:
        return self._pages("/v1/outbox/dead", "dead", limit)

    def retry_dead(self, dead_id):
        return self.post(f"/v1/outbox/dead/{q(str(dead_id))}/retry")

    def replies(self, conv_id, replies, token="__default__"):
        return self.post(f"/v1/conversations/{q(conv_id)}/replies", {"replies": replies}, token=token)

    def wait_messages(self, conv_id, predicate, timeout=15.0, message="messages"):
        return wait_until(lambda: (lambda ms: ms if predicate(ms) else None)(self.messages_all(conv_id)),
                          timeout=timeout, message=message)


def q(s) -> str:
    return urllib.parse.quote(str(s), safe="")


def by_kind(messages, kind):
    return [m for m in messages if (m.get("author") or {}).get("kind") == kind]


def assert_error(resp, status, code=None):
    return assert_json_error(resp, status, code)


# --------------------------------------------------------------------------
# fixtures (import them into a test module to use them)
# --------------------------------------------------------------------------

import pytest  # noqa: E402

from fakes import CallbackReceiver, FakeBot, FakeTelegram  # noqa: E402


class FakeFactory:
    """Makes fakes and closes them at teardown; on failure prints what they saw."""

    def __init__(self):
        self.made = []

    def callback(self, **kw) -> CallbackReceiver:
        f = CallbackReceiver(**kw)
        self.made.append(f)
        return f

    def bot(self, **kw) -> FakeBot:
        f = FakeBot(**kw)
        self.made.append(f)
        return f

    def telegram(self, **kw) -> FakeTelegram:
        f = FakeTelegram(**kw)
        self.made.append(f)
        return f

    def close(self):
        for f in self.made:
            f.close()


@pytest.fixture(name="fakes")
def fakes_fixture(request):
    """``fakes.callback()``, ``fakes.bot()``, ``fakes.telegram()``; all closed at teardown."""
    factory = FakeFactory()
    yield factory
    close_fakes(request, factory.made, last=15)


def close_fakes(request, made, last=25):
    """A fixture's teardown: when the test failed, each fake's last requests
    (with the problems it found) are printed; then every fake is closed."""
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for f in made:
            reqs = f.snapshot()
            print(f"---- {f.name} at {f.url}: {len(reqs)} request(s), last ones ----")
            for r in reqs[-last:]:
                print(f"  {r!r} problems={r.problems}")
    for f in made:
        f.close()


class ClientSide:
    """Conversation helpers of a test whose clients write on the webhook
    channel and whose bot echoes (``you said: <text>``): a mixin for test
    environments with ``self.api`` (Api) and ``self.cb`` (the channel's
    CallbackReceiver)."""

    # ---- client side -----------------------------------------------------

    def send(self, client_id, text, client=None, attachments=None, message_id=None) -> str:
        body = {"client_id": client_id, "text": text}
        if client is not None:
            body["client"] = client
        if attachments is not None:
            body["attachments"] = attachments
        if message_id is not None:
            body["message_id"] = message_id
        resp = self.api.post_message(body)
        assert resp.status == 202, f"client message not accepted: {resp!r}"
        return resp.json()["conversation_id"]

    def callbacks(self, conv_id) -> list[dict]:
        return [r.json["message"] for r in self.cb.accepted() if r.json["conversation_id"] == conv_id]

    def wait_callback(self, conv_id, pred, what="a callback message", timeout=15.0) -> dict:
        return wait_until(lambda: next((m for m in self.callbacks(conv_id) if pred(m)), None), timeout=timeout,
                          message=f"{what} for {conv_id} (got so far: {self.callbacks(conv_id)!r}; "
                                  f"violations: {self.cb.violations!r})")

    def wait_callback_text(self, conv_id, text, timeout=15.0) -> dict:
        return self.wait_callback(conv_id, lambda m: m.get("text") == text, f"callback text {text!r}", timeout)

    def chat(self, client_id, text, client=None) -> str:
        """A client message answered by the (echoing) bot; waits for the reply."""
        conv_id = self.send(client_id, text, client=client)
        self.wait_callback_text(conv_id, f"you said: {text}")
        return conv_id

    # ---- read API --------------------------------------------------------

    def conv(self, conv_id) -> dict:
        return self.api.conversation(conv_id)

    def wait_state(self, conv_id, state, timeout=15.0) -> dict:
        return wait_until(lambda: (lambda c: c if c["state"] == state else None)(self.conv(conv_id)),
                          timeout=timeout,
                          message=f"conversation {conv_id} in state {state!r} (now {self.conv(conv_id)['state']!r})")

    def events(self, conv_id) -> list[dict]:
        return self.api.events_all(conv_id)

    def switch_events(self, conv_id) -> list[dict]:
        return [e["data"] for e in self.events(conv_id) if e["type"] == "switch"]

    def wait_switch_events(self, conv_id, n=1, timeout=15.0) -> list[dict]:
        return wait_until(lambda: (lambda s: s if len(s) >= n else None)(self.switch_events(conv_id)),
                          timeout=timeout, message=f"{n} switch event(s) in {conv_id}'s journal")
