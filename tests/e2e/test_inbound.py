"""The inbound kit and the schema checker (docs/lua-api.md, "inbound" and
"schema"): each kind of webhook authentication accepted and refused with one
401 for every way of being wrong, nothing parsed or written before it;
malformed JSON 400; schema errors naming the path; dedupe by event id;
S.assert for outbound shapes; declaration errors at the adapter's line.
Telegram's setWebhook at every load (retried) and the agent name prefix.

Most tests share one daemon (module scope) serving a test adapter,
providers/kit_test.lua, next to the engine's own Lua."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal

import pytest

from conftest import Daemon, assert_json_error, wait_until
from convkit import Api, fakes_fixture, install_lua_tree, write_conv_config  # noqa: F401 - `fakes`

SECRETS = {"secret": "bearer-secret-1", "api_key": "path-key-1", "token": "header-token-1",
           "hmac_secret": "hmac-secret-1"}

KIT_LUA = r'''
local channels = require("channels")
local inbound = require("inbound")
local S = require("schema")
local kit_test = {}

-- Every request that reaches a handler counts itself in state, in the
-- handler's own job: a refused request leaves no count.
function kit_test.hit(ctx)
  local key = "hits:" .. ctx.req.path:match("^/t/([%w-]+)")
  state.set(key, (state.get(key) or 0) + 1)
  return 200, { ok = true, instance = ctx.name, body = ctx.body }
end
local hit = kit_test.hit

local Note = S.object{ note = S.string{} }
local function kit(path, auth, more)
  local spec = { method = "POST", path = path, registry = channels, type = "kit", auth = auth, schema = Note, handler = hit }
  for k, v in pairs(more or {}) do spec[k] = v end
  inbound.endpoint(spec)
end

kit("/t/bearer/{instance}", { bearer = "secret" })
kit("/t/path/{instance}/{key}", { path = "key", secret = "api_key" })
kit("/t/header/{instance}", { header = "X-Kit-Token", secret = function(inst) return inst.token end },
    { handler = "kit_test.hit" })
kit("/t/hmac-hex/{instance}", { hmac = { header = "X-Signature", secret = "hmac_secret", prefix = "sha256=" } })
kit("/t/hmac-b64/{instance}", { hmac = {
  header = "X-Sig", algorithm = "sha512", encoding = "base64", secret = "hmac_secret", prefix = "v1,",
  message = function(req) return (req.headers["x-timestamp"] or "") .. "." .. req.body end,
  key = function(secret) return crypto.md5(secret) end,
} })

-- two checks in order; the signature's header from the instance config,
-- two keys (one being rotated out), and instances that turn it off
kit("/t/both/{instance}/{key}", {
  { path = "key", secret = "api_key" },
  { hmac = { header = function(inst) return inst.sig_header or "X-Signature" end, secret = "hmac_secret",
             keys = function(s) return { s .. "-old", s } end,
             message = function(req, inst) return req.body .. (req.headers[(inst.ts_header or "X-Ts"):lower()] or "") end,
             enabled = function(inst) return inst.signatures ~= false end } },
})

local Order = S.object({
  name = S.string{ required = true, max = 10 },
  count = S.integer{ min = 1 },
  ref = S.id{},
  items = S.array(S.object{ url = S.url{ required = true }, qty = S.integer{ min = 1, default = 1 } }, { max = 3 }),
  tags = S.map(S.string{ max = 5 }, { max_keys = 2 }),
  kind = S.string{ enum = { "a", "b" } },
}, { unknown = "refuse" })
kit("/t/schema/{instance}", { bearer = "secret" }, { schema = Order })

kit("/t/events/{instance}", { bearer = "secret" }, {
  schema = S.object{ id = S.id{ required = true }, fail = S.boolean{} },
  event_id = "id",
  handler = function(ctx)
    hit(ctx)
    if ctx.body.fail then error("the handler failed") end
    return 200, { ok = true, event_id = ctx.event_id }
  end,
})
kit("/t/events2/{instance}", { bearer = "secret" }, {
  event_id = function(body, req) return req.headers["x-event-id"] end,
  on_duplicate = function(ctx) return 409, { seen = ctx.event_id } end,
})

route("GET", "/t/hits", function(req) return 200, { hits = state.get("hits:" .. req.query.what) or 0 } end)

-- what the engine sends must be right: a mismatch is our bug, a Lua error
local Outbound = S.object{ to = S.id{ required = true },
                           items = S.array(S.object{ url = S.url{ required = true } }, { required = true }) }
route("POST", "/t/assert", function(req)
  local ok, err = pcall(S.assert, Outbound, req:json(), "acme send")
  return 200, { ok = ok, error = not ok and err or nil, kind = type(err) }
end)
route("POST", "/t/assert-raw", function(req)
  S.assert(Outbound, req:json(), "acme send")
  return 200, { ok = true }
end)

return kit_test
'''


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("inbound"))
    install_lua_tree(d)
    d.write_script("providers/kit_test.lua", KIT_LUA)
    d.write_config(api_token="test-api-token", channels={
        "kit1": {"type": "kit", **SECRETS, "sig_header": "X-Kit-Sig"},
        "unsigned": {"type": "kit", **SECRETS, "signatures": False},
        "other": {"type": "otherkind", **SECRETS},      # the right secrets, another type
        "bare": {"type": "kit"},                         # no secrets configured
    })
    d.start()
    yield d
    code = d.stop(signal.SIGTERM)
    text = d.log_text()
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in text, text[-4000:]
    assert code == 0


def post(d, path, body=None, headers=None, raw=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return d.post(path, raw if raw is not None else json.dumps(body), headers=h)


def hits(d, what) -> int:
    resp = d.get(f"/t/hits?what={what}")
    assert resp.status == 200, resp
    return resp.json()["hits"]


def hex_sig(body: bytes, secret=SECRETS["hmac_secret"]) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def b64_sig(body: bytes, ts: str, secret=SECRETS["hmac_secret"]) -> str:
    key = hashlib.md5(secret.encode()).hexdigest().encode()
    return "v1," + base64.b64encode(hmac.new(key, ts.encode() + b"." + body, hashlib.sha512).digest()).decode()


BODY = json.dumps({"note": "hi"}).encode()


def same_401(a, b):
    assert_json_error(a, 401, "unauthorized")
    assert (a.status, a.body, a.content_type) == (b.status, b.body, b.content_type), (a, b)


@pytest.mark.parametrize("kind", ["bearer", "path", "header", "hmac-hex", "hmac-b64"])
def test_each_auth_kind_is_accepted_and_refused_alike(kit, kind):
    ts = "1700000000"

    def send(instance, good=True, raw=BODY, **over):
        if kind == "bearer":
            cred = SECRETS["secret"] if good else "wrong"
            return post(kit, f"/t/bearer/{instance}", raw=raw, headers={"Authorization": f"Bearer {cred}", **over})
        if kind == "path":
            return post(kit, f"/t/path/{instance}/{SECRETS['api_key'] if good else 'wrong'}", raw=raw)
        if kind == "header":
            return post(kit, f"/t/header/{instance}", raw=raw,
                        headers={"X-Kit-Token": SECRETS["token"] if good else "wrong", **over})
        if kind == "hmac-hex":
            sig = hex_sig(raw) if good else hex_sig(raw, "wrong")
            return post(kit, f"/t/hmac-hex/{instance}", raw=raw, headers={"X-Signature": sig, **over})
        sig = b64_sig(raw, ts) if good else b64_sig(raw, ts, "wrong")
        return post(kit, f"/t/hmac-b64/{instance}", raw=raw, headers={"X-Sig": sig, "X-Timestamp": ts, **over})

    before = hits(kit, kind)
    ok = send("kit1")
    assert ok.status == 200, ok
    assert ok.json() == {"ok": True, "instance": "kit1", "body": {"note": "hi"}}, ok.json()
    assert hits(kit, kind) == before + 1

    wrong = send("kit1", good=False)
    assert_json_error(wrong, 401, "unauthorized")
    # an unknown instance, one of another type and one without the secret
    # get the very answer of a wrong secret, right credential or not
    for instance in ("nope", "other", "bare"):
        same_401(send(instance), wrong)
        same_401(send(instance, good=False), wrong)
    # authentication comes before the body is even parsed
    same_401(send("kit1", good=False, raw=b"{not json"), wrong)
    if kind == "hmac-hex":
        # a signature of another body, and none at all
        same_401(post(kit, "/t/hmac-hex/kit1", raw=BODY, headers={"X-Signature": hex_sig(b"{}")}), wrong)
        same_401(post(kit, "/t/hmac-hex/kit1", raw=BODY), wrong)
        # hex digits in capitals are the same signature
        upper = "sha256=" + hex_sig(BODY)[len("sha256="):].upper()
        assert post(kit, "/t/hmac-hex/kit1", raw=BODY, headers={"X-Signature": upper}).status == 200
    if kind == "hmac-b64":
        # the timestamp is part of what is signed
        resp = post(kit, "/t/hmac-b64/kit1", raw=BODY, headers={"X-Sig": b64_sig(BODY, ts), "X-Timestamp": "1"})
        same_401(resp, wrong)
    if kind == "bearer":
        same_401(post(kit, "/t/bearer/kit1", raw=BODY), wrong)
    # nothing ran for any refused request
    assert hits(kit, kind) == before + 1 + (1 if kind == "hmac-hex" else 0)


def test_a_list_of_checks_all_pass_in_order_with_configured_signatures(kit):
    ts = "1700000001"

    def sig(secret=SECRETS["hmac_secret"], body=BODY, stamp=ts):
        return hmac.new(secret.encode(), body + stamp.encode(), hashlib.sha256).hexdigest()

    def send(instance="kit1", key=SECRETS["api_key"], headers=None):
        return post(kit, f"/t/both/{instance}/{key}", raw=BODY, headers={"X-Ts": ts, **(headers or {})})

    before = hits(kit, "both")
    assert send(headers={"X-Kit-Sig": sig()}).status == 200
    # a key being rotated out still signs
    assert send(headers={"X-Kit-Sig": sig(SECRETS["hmac_secret"] + "-old")}).status == 200
    assert hits(kit, "both") == before + 2

    wrong = send(key="wrong", headers={"X-Kit-Sig": sig()})
    assert_json_error(wrong, 401, "unauthorized")
    # the path is right, the signature is not: the same answer
    same_401(send(headers={"X-Kit-Sig": sig("wrong")}), wrong)
    same_401(send(headers={"X-Kit-Sig": sig(stamp="1")}), wrong)
    same_401(send(), wrong)
    # the header is the instance's, not the default one
    same_401(send(headers={"X-Signature": sig()}), wrong)
    # an instance with signatures off needs the path secret only
    assert send("unsigned").status == 200
    same_401(send("unsigned", key="wrong"), wrong)
    for instance in ("nope", "other", "bare"):
        same_401(send(instance, headers={"X-Kit-Sig": sig()}), wrong)
    assert hits(kit, "both") == before + 3


def test_malformed_json_is_400_after_authentication(kit):
    auth = {"Authorization": f"Bearer {SECRETS['secret']}"}
    for raw in (b"{not json", b"", b'{"note": "x"'):
        assert_json_error(post(kit, "/t/bearer/kit1", raw=raw, headers=auth), 400, "malformed_json")
    for raw in (b"null", b"[1, 2]", b'"text"'):
        err = assert_json_error(post(kit, "/t/bearer/kit1", raw=raw, headers=auth), 422, "invalid_field")
        assert err["message"].startswith("the body must be"), err


SCHEMA_ERRORS = [
    ({}, "name is required"),
    ({"name": 5}, "name must be a string"),
    ({"name": "x" * 11}, "name is longer than 10 bytes"),
    ({"name": "a\u0000b"}, "name must not contain NUL characters"),
    ({"name": "x", "count": 0}, "count must be at least 1"),
    ({"name": "x", "count": 1.5}, "count must be an integer"),
    ({"name": "x", "ref": 1.5}, "ref must be a string or an integer"),
    ({"name": "x", "items": {"url": "http://a"}}, "items must be an array"),
    ({"name": "x", "items": [{"url": "http://a"}, {"url": "javascript:alert(1)"}]},
     "items[2].url must be an http:// or https:// URL"),
    ({"name": "x", "items": [{"url": "http://a"}, {"qty": 2}]}, "items[2].url is required"),
    ({"name": "x", "items": [{"url": "http://a", "qty": 0}]}, "items[1].qty must be at least 1"),
    ({"name": "x", "items": [{"url": "http://a"}] * 4}, "items has more than 3 items"),
    ({"name": "x", "tags": {"a": "123456"}}, "tags.a is longer than 5 bytes"),
    ({"name": "x", "tags": {"a": "1", "b": "2", "c": "3"}}, "tags has more than 2 fields"),
    ({"name": "x", "kind": "c"}, "kind must be one of: a, b"),
    ({"name": "x", "extra": 1}, "extra is not a known field"),
]


def test_schema_errors_name_the_path_and_write_nothing(kit):
    auth = {"Authorization": f"Bearer {SECRETS['secret']}"}
    before = hits(kit, "schema")
    for body, message in SCHEMA_ERRORS:
        err = assert_json_error(post(kit, "/t/schema/kit1", body, headers=auth), 422, "invalid_field")
        assert err["message"] == message, (body, err)
    assert hits(kit, "schema") == before


def test_schema_gives_the_handler_a_normalised_body(kit):
    auth = {"Authorization": f"Bearer {SECRETS['secret']}"}
    body = {"name": "x", "ref": 42, "count": 2.0, "kind": None, "tags": {"a": "1"}, "items": [{"url": "HTTPS://f.example/a"}]}
    resp = post(kit, "/t/schema/kit1", body, headers=auth)
    assert resp.status == 200, resp
    # ids as strings, integral numbers as integers, nulls gone, defaults filled in
    assert resp.json()["body"] == {"name": "x", "ref": "42", "count": 2, "tags": {"a": "1"},
                                   "items": [{"url": "HTTPS://f.example/a", "qty": 1}]}
    # an empty array is as good as none
    assert post(kit, "/t/schema/kit1", {"name": "x", "items": []}, headers=auth).json()["body"] == {"name": "x"}


def test_a_repeated_event_id_does_not_run_the_handler(kit):
    auth = {"Authorization": f"Bearer {SECRETS['secret']}"}
    before = hits(kit, "events")
    first = post(kit, "/t/events/kit1", {"id": "ev-1"}, headers=auth)
    assert first.status == 200 and first.json() == {"ok": True, "event_id": "ev-1"}, first
    again = post(kit, "/t/events/kit1", {"id": "ev-1"}, headers=auth)
    assert again.status == 200 and again.json() == {"ok": True, "duplicate": True}, again
    # an integer id is the same id as its decimal string
    assert post(kit, "/t/events/kit1", {"id": 77}, headers=auth).json() == {"ok": True, "event_id": "77"}
    assert post(kit, "/t/events/kit1", {"id": "77"}, headers=auth).json() == {"ok": True, "duplicate": True}
    assert hits(kit, "events") == before + 2

    # a handler that failed leaves no key: the platform's retry runs it
    assert_json_error(post(kit, "/t/events/kit1", {"id": "ev-2", "fail": True}, headers=auth), 500)
    assert hits(kit, "events") == before + 2
    retry = post(kit, "/t/events/kit1", {"id": "ev-2"}, headers=auth)
    assert retry.status == 200 and retry.json() == {"ok": True, "event_id": "ev-2"}, retry
    assert hits(kit, "events") == before + 3

    # an id from a function, and an answer of the adapter's own for repeats
    h = dict(auth, **{"X-Event-Id": "hdr-1"})
    assert post(kit, "/t/events2/kit1", {"note": "a"}, headers=h).status == 200
    dup = post(kit, "/t/events2/kit1", {"note": "a"}, headers=h)
    assert dup.status == 409 and dup.json() == {"seen": "hdr-1"}, dup
    assert post(kit, "/t/events2/kit1", {"note": "a"}, headers=auth).status == 200   # no id: no dedupe
    assert post(kit, "/t/events2/kit1", {"note": "a"}, headers=auth).status == 200
    assert hits(kit, "events2") == 3


def test_assert_raises_a_plain_error_for_outbound_shapes(kit):
    good = post(kit, "/t/assert", {"to": 5, "items": [{"url": "https://x.example/a"}]})
    assert good.json() == {"ok": True, "kind": "table"}, good     # the value, normalised
    bad = post(kit, "/t/assert", {"to": 5, "items": [{"url": "https://x.example/a"}, {"url": "ftp://x"}]}).json()
    assert bad["ok"] is False and bad["kind"] == "string", bad
    assert bad["error"] == "acme send: items[2].url must be an http:// or https:// URL", bad
    # unprotected it is the script's error (500), not the client's (4xx)
    assert_json_error(post(kit, "/t/assert-raw", {"items": [{"url": "https://x.example/a"}]}), 500, "script_error")


def test_bad_declarations_fail_the_load_at_the_adapters_line(kit):
    try:
        kit.write_script("providers/zz_bad.lua", """
            local channels = require("channels")
            local inbound = require("inbound")
            inbound.endpoint{ method = "POST", path = "/t/x/{instance}", registry = channels, type = "kit",
                              auth = { bearer = "secret", header = "X-Y" }, handler = function() return 200 end }
        """)
        err = assert_json_error(kit.reload(), 422, "reload_failed")
        assert err.get("file") == "providers/zz_bad.lua" and err.get("line") == 3, err
        assert "auth" in err["message"], err
        # a route another endpoint has: reported at the second declaration's line
        kit.write_script("providers/zz_bad.lua", """
            local channels = require("channels")
            local inbound = require("inbound")
            inbound.endpoint{ method = "POST", path = "/t/bearer/{instance}", registry = channels, type = "kit",
                              auth = { bearer = "secret" }, handler = function() return 200 end }
        """)
        err = assert_json_error(kit.reload(), 422, "reload_failed")
        assert err.get("file") == "providers/zz_bad.lua" and err.get("line") == 3, err
        # a handler named but never defined: refused at load, not a 500 on the first request
        kit.write_script("providers/zz_bad.lua", """
            local channels = require("channels")
            local inbound = require("inbound")
            inbound.endpoint{ method = "POST", path = "/t/typo/{instance}", registry = channels, type = "kit",
                              auth = { bearer = "secret" }, handler = "zz_bad.on_evnet" }
            return { on_event = function() return 200 end }
        """)
        err = assert_json_error(kit.reload(), 422, "reload_failed")
        assert err.get("file") == "providers/zz_bad.lua" and err.get("line") == 3, err
        assert "'zz_bad.on_evnet' is not a function" in err["message"], err
    finally:
        kit.remove_script("providers/zz_bad.lua")
    kit.reload_ok()
    assert post(kit, "/t/bearer/kit1", raw=BODY, headers={"Authorization": f"Bearer {SECRETS['secret']}"}).status == 200


# --------------------------------------------------------------------------
# Telegram: setWebhook at every load, the agent's name
# --------------------------------------------------------------------------

TG_SECRET = "tg-secret_Token-1"


def tg_channel(tg, **over):
    ch = {"type": "telegram", "token": tg.token, "secret_token": TG_SECRET, "api_base": tg.api_base}
    ch.update(over)
    return {k: v for k, v in ch.items() if v is not None}


def test_telegram_set_webhook_at_every_load_retried_until_taken(fakes, daemon):
    tg = fakes.telegram()
    tg.fail_first(1, 502, "Bad Gateway", method="setWebhook")
    install_lua_tree(daemon)
    write_conv_config(daemon, channels={
        "tg": tg_channel(tg, public_url="https://bot.example.com:8443/sb/"),
        "tg_plain": tg_channel(tg, public_url="http://bot.example.com"),   # Telegram takes HTTPS only
        "tg_port": tg_channel(tg, public_url="https://bot.example.com:8080"),
        "tg_none": tg_channel(tg),
    }, bots={})
    daemon.start()

    calls = wait_until(lambda: (lambda c: c if len(c) >= 2 else None)(tg.calls("setWebhook")), timeout=15,
                       message="setWebhook, failed once, then again")
    assert [c.status for c in calls] == [502, 200], calls
    for c in calls:
        assert c.method == "POST" and c.content_type == "application/json", c
        assert c.path == f"/bot{tg.token}/setWebhook", c.path
    assert tg.webhook == {"url": "https://bot.example.com:8443/sb/v1/channels/tg/telegram", "secret_token": TG_SECRET,
                          "allowed_updates": ["message", "callback_query"]}, tg.webhook
    failed = daemon.wait_for_log(msg="registration failed: trying again", instance="tg")
    assert failed["error"] == "Bad Gateway" and failed["status"] == "502", failed
    daemon.wait_for_log(msg="registration done", instance="tg", registration="telegram_webhook")
    for name in ("tg_plain", "tg_port", "tg_none"):
        skipped = daemon.wait_for_log(level="warn", msg="registration skipped", instance=name)
        assert "public_url" in skipped["reason"], skipped
    # neither the token nor the secret_token is logged or kept in the outbox
    assert tg.token not in daemon.log_text() and TG_SECRET not in daemon.log_text()
    assert Api(daemon).dead_all() == []

    # the webhook is registered again at a reload
    daemon.reload_ok()
    wait_until(lambda: len(tg.calls("setWebhook")) >= 3, message="setWebhook at the reload")
    assert len(tg.calls("setWebhook")) == 3
    tg.assert_no_violations()


SAY_LUA = """
local channels = require("channels")
-- a message by any author, sent to the client (as an agent's would be)
route("POST", "/t/say", function(req)
  local b = req:json()
  local conv = conversations.find_or_create(b.channel, b.client_id)
  local m = conv:append{ author = { kind = b.kind, name = b.name }, text = b.text }
  channels.send(conv, m)
  return 200, { id = m.id }
end)
"""


def test_telegram_prefixes_agent_messages_with_the_agents_name(fakes, daemon):
    tg = fakes.telegram()
    install_lua_tree(daemon)
    daemon.write_script("scripts/zz_say.lua", SAY_LUA)
    write_conv_config(daemon, channels={
        "tg": tg_channel(tg),
        "tg_off": tg_channel(tg, agent_prefix=False),
        "tg_custom": tg_channel(tg, agent_prefix="[{name}] "),
    }, bots={})
    daemon.start()

    said = [("tg", "agent", "Olga Petrova", "hello"), ("tg", "agent", None, "no name"), ("tg", "bot", "Bot", "a bot"),
            ("tg_off", "agent", "Olga", "off"), ("tg_custom", "agent", "Olga %1", "custom")]
    for i, (channel, kind, name, text) in enumerate(said):
        body = {"channel": channel, "client_id": str(5550 + i), "kind": kind, "text": text}
        if name:
            body["name"] = name
        assert daemon.post("/t/say", json.dumps(body), headers={"Content-Type": "application/json"}).status == 200
    sent = tg.wait_for_sent(len(said))
    by_chat = {str(r.json["chat_id"]): r.json["text"] for r in sent}
    assert by_chat == {"5550": "Olga Petrova: hello", "5551": "no name", "5552": "a bot", "5553": "off",
                       "5554": "[Olga %1] custom"}, by_chat
    tg.assert_no_violations()
