"""The Chat2Desk fake itself (fake_chat2desk.py): its webhook signer agrees
with the vendor's test vector, and it refuses what the contract rules out,
or the Chat2Desk tests could pass on a broken adapter. No daemon here."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from conftest import FakeServer, http_request
from fake_chat2desk import (
    TOKEN_ERROR,
    VENDOR_VECTOR_BODY,
    VENDOR_VECTOR_KEY,
    VENDOR_VECTOR_SIGNATURE,
    VENDOR_VECTOR_TIMESTAMP,
    FakeChat2Desk,
    md5_hex,
    signature,
)

TOKEN = "tok-123"


@pytest.fixture
def c2d():
    made = []

    def make(**kw):
        f = FakeChat2Desk(token=TOKEN, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def call(fake, method, path, body=None, token=TOKEN, headers=None, raw=None):
    h = {}
    if token is not None:
        h["Authorization"] = token
    if body is not None or raw is not None:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    return http_request("127.0.0.1", fake.port, method, path, body=data, headers=h)


def new_client(fake, phone="switchboard:c1"):
    resp = call(fake, "POST", "/v1/clients", {"phone": phone, "transport": "external", "channel_id": 17,
                                               "nickname": "Ann"})
    assert resp.status == 200, resp
    return resp.json()["data"]["id"]


def inbox(fake, client_id, text, **extra):
    body = {"client_id": client_id, "text": text, "channel_id": 17, "transport": "external", "external_id": "m-1"}
    body.update(extra)
    return call(fake, "POST", "/v1/messages/inbox", body)


# --------------------------------------------------------------------------
# the signature
# --------------------------------------------------------------------------


def test_signer_matches_the_vendor_vector():
    assert signature(VENDOR_VECTOR_KEY, VENDOR_VECTOR_BODY, VENDOR_VECTOR_TIMESTAMP) == VENDOR_VECTOR_SIGNATURE
    # one byte more in the body or another timestamp: another signature
    assert signature(VENDOR_VECTOR_KEY, VENDOR_VECTOR_BODY + " ", VENDOR_VECTOR_TIMESTAMP) != VENDOR_VECTOR_SIGNATURE
    assert signature(VENDOR_VECTOR_KEY, VENDOR_VECTOR_BODY, "1743681007") != VENDOR_VECTOR_SIGNATURE


def test_webhooks_are_signed_with_md5_of_the_token_and_repeat_byte_for_byte(c2d):
    engine = FakeServer(status=200, body=b'{"ok": true}', headers={"Content-Type": "application/json"})
    try:
        fake = c2d(signature={"header": "X-Sig", "timestamp_header": "X-Ts"})
        fake.webhook_url = engine.url + "/v1/providers/c2d/chat2desk/hook-secret"
        ev = {"hook_type": "close_request", "event_time": fake.event_time(), "request_id": 7}
        assert fake.post_event(ev).status == 200
        assert fake.post_event(ev, bad_signature=True).status == 200
        assert fake.repeat(0).status == 200
        assert fake.post_event(ev, signed=False).status == 200
        good, bad, again, unsigned = engine.wait_for_requests(4)
        assert good.path == "/v1/providers/c2d/chat2desk/hook-secret"
        assert good.headers["Content-Type"] == "application/json"
        ts = good.headers["X-Ts"]
        assert ts.isdigit()
        key = hashlib.md5(TOKEN.encode()).hexdigest().encode()
        assert good.headers["X-Sig"] == hmac.new(key, good.body + ts.encode(), hashlib.sha256).hexdigest()
        assert json.loads(good.body) == ev
        assert bad.body == good.body and bad.headers["X-Sig"] != fake.sign(bad.body, bad.headers["X-Ts"])
        assert (again.body, again.headers["X-Sig"], again.headers["X-Ts"]) == \
               (good.body, good.headers["X-Sig"], good.headers["X-Ts"])
        assert unsigned.headers.get("X-Sig") is None and unsigned.headers.get("X-Ts") is None
        assert fake.signing_key == md5_hex(TOKEN)
    finally:
        engine.close()


def test_event_times_are_distinct(c2d):
    fake = c2d()
    times = [fake.event_time() for _ in range(50)]
    assert len(set(times)) == 50 and times == sorted(times)
    assert all(t.endswith("Z") and "T" in t for t in times)


# --------------------------------------------------------------------------
# state and the envelope
# --------------------------------------------------------------------------


def test_a_switch_as_the_contract_says_it(c2d):
    fake = c2d()
    resp = call(fake, "GET", "/v1/clients?phone=switchboard%3Ac1")
    assert resp.status == 200 and resp.json() == {"status": "success", "data": [],
                                                  "meta": {"total": 0, "limit": 20, "offset": 0}}
    cid = new_client(fake)
    found = call(fake, "GET", "/v1/clients?phone=switchboard%3Ac1").json()["data"]
    assert [c["id"] for c in found] == [cid]

    first = inbox(fake, cid, "Client: hi").json()["data"]
    second = inbox(fake, cid, "agent please").json()["data"]
    assert first["dialog_id"] == second["dialog_id"] and first["request_id"] == second["request_id"]
    assert second["type"] == "from_client" and second["client_id"] == cid
    resp = call(fake, "GET", f"/v1/messages/{second['message_id']}/transfer_to_group?group_id=2&force_assign=false")
    assert resp.status == 200 and resp.json()["data"]["dialog_id"] == second["dialog_id"], resp
    assert fake.dialog_of(cid)["group_id"] == 2
    assert fake.sequence(cid) == [("find",), ("create",), ("find",), ("inbox", "Client: hi"), ("inbox", "agent please"),
                                  ("transfer", 2, "false")]

    assert call(fake, "PUT", f"/v1/dialogs/{second['dialog_id']}", {"state": "closed"}).status == 200
    again = call(fake, "PUT", f"/v1/dialogs/{second['dialog_id']}", {"state": "closed"})
    assert again.status == 400 and again.json()["status"] == "error"
    assert "already has state" in again.json()["errors"]
    # a message after the close opens a new dialog
    third = inbox(fake, cid, "hello again").json()["data"]
    assert third["dialog_id"] != second["dialog_id"]
    fake.assert_no_violations()


def test_operators_and_groups_page_with_meta(c2d):
    ops = [{"id": i, "first_name": f"F{i}", "last_name": "L", "online": i % 2} for i in range(1, 6)]
    fake = c2d(operators=ops)
    page = call(fake, "GET", "/v1/operators?limit=2&offset=2").json()
    assert [o["id"] for o in page["data"]] == [3, 4] and page["meta"] == {"total": 5, "limit": 2, "offset": 2}
    assert set(page["data"][0]) >= {"id", "email", "first_name", "last_name", "role", "status", "online",
                                    "offline_type", "status_id", "opened_dialogs"}
    groups = call(fake, "GET", "/v1/operators_groups").json()
    assert groups["status"] == "success" and {g["name"] for g in groups["data"]} == {"Support", "Sales", "Billing"}
    fake.assert_no_violations()


# --------------------------------------------------------------------------
# strictness
# --------------------------------------------------------------------------


def test_token_wrong_or_bearer(c2d):
    fake = c2d()
    wrong = call(fake, "GET", "/v1/operators_groups", token="other")
    assert wrong.status == 401 and wrong.json() == {"status": "error", "message": TOKEN_ERROR}
    fake.assert_no_violations()  # a token the account does not know is the platform's answer
    assert call(fake, "GET", "/v1/operators_groups", token=f"Bearer {TOKEN}").status == 401
    with pytest.raises(AssertionError, match="Bearer"):
        fake.assert_no_violations()
    fake.violations.clear()
    assert call(fake, "GET", "/v1/operators_groups", token=None).status == 401
    assert fake.violations


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/messages/1/transfer_to_group?group_id=1&force_assign=false", None),  # a GET
    ("GET", "/v1/operators", None),                                      # no limit/offset
    ("GET", "/v1/operators?limit=500&offset=0", None),                   # limit > 200
    ("GET", "/v1/operators_groups?page=2", None),                        # unknown parameter
    ("GET", "/v1/clients", None),                                        # no phone
    ("POST", "/v1/clients", {"phone": "p", "transport": "external", "channel_id": 17}),   # no nickname
    ("POST", "/v1/clients", {"phone": "p", "transport": "external", "channel_id": "17", "nickname": "n"}),
    ("POST", "/v1/clients", {"phone": "p", "transport": "telegram", "channel_id": 17, "nickname": "n"}),
    ("POST", "/v1/messages", {"client_id": 1, "text": "x"}),             # not the inbox
    ("PUT", "/v1/dialogs/1", {"state": "closed"}),                       # no such dialog
    ("DELETE", "/v1/dialogs/1", None),
], ids=["transfer-post", "operators-no-paging", "limit-too-big", "unknown-param", "find-no-phone",
        "create-no-nickname", "create-channel-string", "create-transport", "messages-not-inbox",
        "close-unknown", "dialog-delete"])
def test_calls_outside_the_contract_are_violations(c2d, method, path, body):
    fake = c2d()
    resp = call(fake, method, path, body)
    assert 400 <= resp.status < 500, resp
    assert resp.json()["status"] == "error"
    with pytest.raises(AssertionError):
        fake.assert_no_violations()


@pytest.mark.parametrize("mutate", [
    lambda b: b.pop("external_id"),
    lambda b: b.__setitem__("client_id", "5001"),
    lambda b: b.__setitem__("client_id", 4242),
    lambda b: b.__setitem__("channel_id", 18),
    lambda b: b.__setitem__("text", ""),
    lambda b: b.__setitem__("attachment", "file:///etc/passwd"),
    lambda b: b.__setitem__("attachment_filename", "x.pdf"),
    lambda b: b.__setitem__("operator_id", 101),
], ids=["no-external_id", "client_id-string", "unknown-client", "other-channel", "empty-text",
        "attachment-not-http", "filename-without-attachment", "unknown-field"])
def test_inbox_checks(c2d, mutate):
    fake = c2d()
    cid = new_client(fake)
    body = {"client_id": cid, "text": "hi", "channel_id": 17, "transport": "external", "external_id": "m-1"}
    mutate(body)
    resp = call(fake, "POST", "/v1/messages/inbox", body)
    assert 400 <= resp.status < 500, resp
    assert fake.inbox() == []
    with pytest.raises(AssertionError):
        fake.assert_no_violations()


def test_inbox_file_transfer_and_duplicate_client_checks(c2d):
    fake = c2d()
    cid = new_client(fake)
    ok = inbox(fake, cid, "", attachment="http://files.example/a.pdf", attachment_filename="a.pdf")
    assert ok.status == 200, ok
    mid = ok.json()["data"]["message_id"]
    fake.assert_no_violations()
    for path in (f"/v1/messages/{mid}/transfer_to_group?group_id=99&force_assign=false",   # unknown group
                 f"/v1/messages/{mid}/transfer_to_group?group_id=Sales&force_assign=false",  # a name
                 f"/v1/messages/{mid}/transfer_to_group?group_id=1&force_assign=yes",
                 f"/v1/messages/{mid}/transfer_to_group?group_id=1",
                 "/v1/messages/424242/transfer_to_group?group_id=1&force_assign=true"):
        fake.violations.clear()
        resp = call(fake, "GET", path)
        assert resp.status in (400, 404), (path, resp)
        assert fake.violations, path
    assert fake.dialog_of(cid)["group_id"] is None
    fake.violations.clear()
    dup = call(fake, "POST", "/v1/clients", {"phone": "switchboard:c1", "transport": "external", "channel_id": 17,
                                             "nickname": "Ann"})
    assert dup.status == 400 and "phone already taken" in json.dumps(dup.json()["errors"])
    assert fake.violations


def test_scripted_failures_apply_to_valid_calls_and_heal(c2d):
    fake = c2d()
    cid = new_client(fake)
    fake.fail_next("inbox", 2, 503)
    fake.reject_token(times=1, call="groups")
    assert [inbox(fake, cid, "x").status for _ in range(3)] == [503, 503, 200]
    tok = call(fake, "GET", "/v1/operators_groups")
    assert tok.status == 401 and tok.json()["message"] == TOKEN_ERROR
    assert call(fake, "GET", "/v1/operators_groups").status == 200
    fake.always_fail(500)
    assert inbox(fake, cid, "y").status == 500
    fake.heal()
    assert inbox(fake, cid, "z").status == 200
    assert fake.inbox_texts(cid) == ["x", "z"]
    assert len(fake.attempts("inbox")) == 5
    fake.assert_no_violations()
