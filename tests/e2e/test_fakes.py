"""The fakes themselves: they must reject what the spec and the platform
documentation rule out, or the conversation tests could pass on a broken
engine. No daemon here."""

import json
import time

import pytest

from conftest import http_request
from convkit import fakes_fixture  # noqa: F401 - the `fakes` fixture


def post(fake, path, body=None, headers=None, raw=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    return http_request("127.0.0.1", fake.port, "POST", path, body=data, headers=h)


GOOD_CALLBACK = {
    "conversation_id": "c1", "client_id": "k1",
    "message": {"id": "m1", "author": {"kind": "bot", "name": "demo"}, "text": "Hi!",
                "buttons": [{"text": "Yes", "payload": "yes"}], "attachments": []},
}


def test_callback_accepts_the_spec_shape(fakes):
    cb = fakes.callback()
    resp = post(cb, "/callback", GOOD_CALLBACK, headers={"Idempotency-Key": "k-1"})
    assert resp.status == 200
    assert cb.accepted_texts() == ["Hi!"]
    cb.assert_no_violations()


@pytest.mark.parametrize("mutate", [
    lambda b, h: h.pop("Idempotency-Key"),
    lambda b, h: h.__setitem__("Content-Type", "text/plain"),
    lambda b, h: b.pop("conversation_id"),
    lambda b, h: b.__setitem__("client_id", 7),
    lambda b, h: b["message"].pop("id"),
    lambda b, h: b["message"].__setitem__("author", "bot"),
    lambda b, h: b["message"]["author"].__setitem__("kind", "client"),
    lambda b, h: b["message"].pop("text"),
    lambda b, h: b["message"].__setitem__("buttons", [{"payload": "x"}]),
], ids=["no-key", "content-type", "no-conversation_id", "client_id-number", "no-message-id", "author-string",
        "author-client", "no-text", "button-without-text"])
def test_callback_rejects_contract_breaks(fakes, mutate):
    cb = fakes.callback()
    body = json.loads(json.dumps(GOOD_CALLBACK))
    headers = {"Content-Type": "application/json", "Idempotency-Key": "k-1"}
    mutate(body, headers)
    resp = http_request("127.0.0.1", cb.port, "POST", "/callback", body=json.dumps(body), headers=headers)
    assert resp.status == 400
    assert cb.accepted() == []
    with pytest.raises(AssertionError):
        cb.assert_no_violations()


def test_callback_secret_and_scripted_failures(fakes):
    cb = fakes.callback(secret="s")
    h = {"Idempotency-Key": "k"}
    assert post(cb, "/callback", GOOD_CALLBACK, headers=h).status == 401
    h["Authorization"] = "Bearer s"
    cb.violations.clear()
    cb.fail_first(2, 503).retry_after_once(1)
    statuses = [post(cb, "/callback", GOOD_CALLBACK, headers=h) for _ in range(4)]
    assert [r.status for r in statuses] == [503, 503, 429, 200]
    assert statuses[2].headers.get("Retry-After") == "1"
    cb.always_fail(500)
    assert post(cb, "/callback", GOOD_CALLBACK, headers=h).status == 500
    cb.heal()
    assert post(cb, "/callback", GOOD_CALLBACK, headers=h).status == 200
    assert len(cb.accepted()) == 2 and len(cb.attempts()) == 6
    cb.assert_no_violations()


def test_bot_checks_body_and_secret(fakes):
    bot = fakes.bot(secret="b")
    good = {"conversation_id": "c", "client_id": "k", "channel": "web", "text": "hello", "client": {},
            "event": "message", "message_id": "m"}
    resp = post(bot, "/bot", good, headers={"Authorization": "Bearer b"})
    assert resp.status == 200
    assert resp.json() == {"replies": [{"type": "text", "text": "you said: hello"}]}
    assert post(bot, "/bot", good).status == 401
    assert post(bot, "/bot", {**good, "event": "other"}, headers={"Authorization": "Bearer b"}).status == 400
    assert post(bot, "/bot", {k: v for k, v in good.items() if k != "message_id"},
                headers={"Authorization": "Bearer b"}).status == 400
    assert len(bot.violations) == 3


def test_telegram_fake_follows_the_bot_api(fakes):
    tg = fakes.telegram(token="42:abc")
    base = "/bot42:abc"
    ok = post(tg, base + "/sendMessage", {"chat_id": 1111111, "text": "hi",
                                          "reply_markup": {"inline_keyboard": [[{"text": "Yes", "callback_data": "y"}]]}})
    assert ok.status == 200
    doc = ok.json()
    assert doc["ok"] is True and isinstance(doc["result"]["message_id"], int)
    assert doc["result"]["chat"]["id"] == 1111111
    # form-encoded parameters work too
    form = http_request("127.0.0.1", tg.port, "POST", base + "/sendMessage", body="chat_id=5&text=x",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 200
    ans = post(tg, base + "/answerCallbackQuery", {"callback_query_id": "q1"})
    assert ans.json() == {"ok": True, "result": True}

    wrong = post(tg, "/bot42:abd/sendMessage", {"chat_id": 1, "text": "x"})
    assert wrong.status == 401
    assert wrong.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    unknown = post(tg, base + "/sendTelepathy", {"chat_id": 1})
    assert unknown.status == 404 and unknown.json()["ok"] is False and unknown.json()["error_code"] == 404
    for bad in ({"text": "x"}, {"chat_id": 1}, {"chat_id": 1, "text": ""}, {"chat_id": 1, "text": "x" * 4097},
                {"chat_id": 1, "text": "x", "reply_markup": {"inline_keyboard": [{"text": "a"}]}},
                {"chat_id": 1, "text": "x", "reply_markup": {"inline_keyboard": [[{"text": "a"}]]}},
                {"chat_id": 1, "text": "x", "reply_markup": {"inline_keyboard": [[{"text": "a",
                                                                                     "callback_data": "d" * 65}]]}}):
        r = post(tg, base + "/sendMessage", bad)
        assert r.status == 400, (bad, r)
        d = r.json()
        assert d["ok"] is False and d["error_code"] == 400 and d["description"].startswith("Bad Request: "), d
    assert post(tg, base + "/sendMessage", {"chat_id": 1, "text": "x" * 4096}).status == 200
    assert post(tg, base + "/answerCallbackQuery", {}).status == 400
    assert post(tg, base + "/sendMessage", raw=b"{oops").status == 400

    tg.fail_first(1, 429, "Too Many Requests: retry after 1", retry_after=1)
    r = post(tg, base + "/sendMessage", {"chat_id": 1, "text": "x"})
    assert r.status == 429 and r.json()["parameters"] == {"retry_after": 1}
    assert tg.calls("sendMessage")[-1].status == 429
    assert len(tg.sent_messages()) == 3


def test_telegram_fake_checks_set_webhook(fakes):
    tg = fakes.telegram(token="42:abc")
    base = "/bot42:abc"
    good = {"url": "https://bot.example.com:8443/sb/v1/channels/tg/telegram", "secret_token": "Ab-9_z",
            "allowed_updates": ["message", "callback_query"]}
    r = post(tg, base + "/setWebhook", good)
    assert r.status == 200 and r.json()["ok"] is True and r.json()["result"] is True, r
    assert tg.webhook == good
    for bad in ({**good, "url": "http://bot.example.com/x"}, {**good, "url": "https://bot.example.com:8080/x"},
                {**good, "secret_token": "has space"}, {**good, "secret_token": "x" * 257},
                {**good, "allowed_updates": ["message", "nonsense"]}, {"secret_token": "s"}):
        r = post(tg, base + "/setWebhook", bad)
        assert r.status == 400 and r.json()["description"].startswith("Bad Request: "), (bad, r)
    assert tg.webhook == good
    assert post(tg, base + "/setWebhook", {"url": ""}).status == 200
    assert tg.webhook is None
    assert len(tg.violations) == 6


def test_retry_after_header_may_be_computed(fakes):
    from fakes import http_date

    cb = fakes.callback()
    cb.retry_after_once(lambda req: http_date(time.time() + 3))
    resp = post(cb, "/callback", GOOD_CALLBACK, headers={"Idempotency-Key": "k"})
    assert resp.status == 429
    assert resp.headers.get("Retry-After").endswith("GMT")
