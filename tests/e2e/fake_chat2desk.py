"""A strict local fake of Chat2Desk API v1, for the Chat2Desk desk tests.

It follows the contract between ``providers/chat2desk.lua`` and the tests
(the calls below) and the platform facts of shared/providers/platforms.md
section 1: every call carries ``Authorization: <token>`` (the raw token, no
``Bearer``), JSON bodies carry ``Content-Type: application/json``, answers
use Chat2Desk's envelope ``{"status": "success", "data": ...}`` (lists with
``"meta": {"total", "limit", "offset"}``) and errors are
``{"status": "error", "message": ..., "errors": ...}``.

Calls it takes (``call`` is the name the inspection helpers use):

=============  ==============================================================
``groups``     ``GET /v1/operators_groups`` [``?limit=&offset=``]
``operators``  ``GET /v1/operators?limit=<1..200>&offset=<n>``
``find``       ``GET /v1/clients?phone=<identity>`` -> a list of 0 or 1 client
``create``     ``POST /v1/clients`` ``{phone, transport, channel_id, nickname}``
``inbox``      ``POST /v1/messages/inbox`` ``{client_id, text, channel_id,
               transport, external_id[, attachment, attachment_filename,
               custom_fields]}``
``transfer``   ``GET /v1/messages/{id}/transfer_to_group?group_id=&force_assign=true|false``
``close``      ``PUT /v1/dialogs/{id}`` ``{"state": "closed"}``
=============  ==============================================================

What breaks the contract is answered with a 4xx and noted in ``violations``
(``assert_no_violations``): a wrong method or path, a missing or
``Bearer``-prefixed Authorization header, a query parameter or body field
that is missing, unknown or of the wrong type, a GET with a body, a wrong
``channel_id`` or ``transport``, a client created twice with one phone, a
message, client, group or dialog that does not exist. Two answers are the
platform's and not a violation: a raw token that is not the account's
(401 ``Token is not correct``) and closing a dialog that is closed already
(400 ``Dialog already has state closed``).

State: clients, dialogs (open/closed, group, operator, requests), messages,
operator groups and operators with their ``online`` flag. ``inbox`` opens a
dialog (and a request) for a client without an open one.

Failures for valid calls, first match first (nothing is applied):
``fail_next(call, n, status, message)``, ``always_fail(status, call=None)``,
``reject_token(text, times=None)`` (401 with a token text even for the right
token), ``fail_quota(...)``; ``heal()`` drops them.

Acting as Chat2Desk, it POSTs webhook events to ``webhook_url`` (set by the
test: ``{engine}/v1/providers/{instance}/chat2desk/{secret}``), signed when
``signature`` is set (``{"header", "timestamp_header"}``): hex
HMAC-SHA256 with the key ``md5_hex(token)`` over ``raw body .. timestamp``.
``operator_message``, ``close_request``, ``close_dialog``,
``dialog_transferred``, ``operator_status``, ``client_inbox`` build the
events from the fake's state; ``post_event`` sends any event (with a bad or
no signature on demand) and ``repeat`` sends an earlier one again byte for
byte.

Only the Python standard library is used.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import itertools
import json
import re
import time
import urllib.parse

from conftest import Response, http_request, wait_until
from fakes import JsonFake

TOKEN_ERROR = "Token is not correct"
# older texts of the same refusal (platforms.md 1.1)
OLD_TOKEN_ERRORS = ("You need to auth", "You have to specify your token. See API manual on info@chat2desk.com")
QUOTA_ERRORS = ("Number of API requests exceeded", "API calls exceeded API limit per month")

# platforms.md 1.4: the vendor's HMAC test vector
VENDOR_VECTOR_KEY = "md5_api_token"
VENDOR_VECTOR_BODY = (
    '{"message_id":28780,"type":"from_client","text":"test7","transport":"widget","client_id":12568,'
    '"operator_id":null,"dialog_id":942,"channel_id":1,"photo":null,"coordinates":null,"audio":null,"pdf":null,'
    '"client":{"id":12568,"phone":"[chat] 1d0bb2e221762cfcc05c","client_phone":null,'
    '"name":"[chat] 1d0bb2e221762cfcc05c","assigned_name":null,"external_id":null},'
    '"hook_type":"inbox","request_id":5357,"attachments":[],"is_new_request":false,"is_new_client":false,'
    '"insta_comment":false,"extra_data":{},"is_new":true,"event_time":"2025-04-03T11:50:06.984494Z"}'
)
VENDOR_VECTOR_TIMESTAMP = "1743681006"
VENDOR_VECTOR_SIGNATURE = "88b574d8237e1b7740f88102018b734d3dd5bc6803c509a3694eff9721b0c595"

DEFAULT_GROUPS = [
    {"id": 1, "name": "Support", "operator_ids": [101, 102]},
    {"id": 2, "name": "Sales", "operator_ids": [201]},
    {"id": 3, "name": "Billing", "operator_ids": [301]},
]
DEFAULT_OPERATORS = [
    {"id": 101, "email": "olga@example.com", "first_name": "Olga", "last_name": "Petrova", "online": 1},
    {"id": 102, "email": "ivan@example.com", "first_name": "Ivan", "last_name": "Sidorov", "online": 0},
    {"id": 201, "email": "sam@example.com", "first_name": "Sam", "last_name": "Seller", "online": 1},
    {"id": 301, "email": "bill@example.com", "first_name": "Bill", "last_name": "Counter", "online": 0},
]

CALLS = ("groups", "operators", "find", "create", "inbox", "transfer", "close")


def signature(key: str | bytes, raw_body: bytes | str, timestamp: str) -> str:
    """Chat2Desk's webhook signature: hex(HMAC_SHA256(key, raw_body .. timestamp))."""
    if isinstance(key, str):
        key = key.encode()
    if isinstance(raw_body, str):
        raw_body = raw_body.encode()
    return hmac.new(key, raw_body + timestamp.encode(), hashlib.sha256).hexdigest()


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _nonempty_str(v):
    return isinstance(v, str) and v != ""


def _int_param(q, name, lo=0, hi=None, required=False):
    """(value, problem) of an integer query parameter."""
    if name not in q:
        return None, (f"query parameter {name} is missing" if required else None)
    v = q[name]
    if not re.fullmatch(r"[0-9]+", v):
        return None, f"query parameter {name}={v!r} is not a non-negative integer"
    n = int(v)
    if n < lo or (hi is not None and n > hi):
        return None, f"query parameter {name}={n} is out of range {lo}..{hi}"
    return n, None


class _Problem(Exception):
    """A contract break: answered with ``status`` and noted in violations."""

    def __init__(self, status, message, errors=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.platform = False  # True: the platform's own answer, not a contract break


class _Failure:
    """A scripted answer for the next ``times`` valid calls (``None``: all)."""

    def __init__(self, status, message, calls=None, times=1, errors=None):
        self.status = status
        self.message = message
        self.errors = errors
        self.calls = set(calls) if calls else None
        self.times = times

    def take(self, call):
        if self.calls is not None and call not in self.calls:
            return False
        if self.times is not None:
            if self.times <= 0:
                return False
            self.times -= 1
        return True


def _error(message, errors=None):
    body = {"status": "error", "message": message}
    if errors is not None:
        body["errors"] = errors
    return body


def _ok(data, meta=None):
    body = {"status": "success", "data": data}
    if meta is not None:
        body["meta"] = meta
    return body


class FakeChat2Desk(JsonFake):
    """Chat2Desk API v1 (the operator side) for one company account."""

    name = "chat2desk"

    def __init__(self, token="tok-123", channel_id=17, transport="external", groups=None, operators=None,
                 signature=None, port=0):
        self.token = token
        self.channel_id = channel_id
        self.transport = transport
        self.signature = dict(signature) if signature else None  # {"header", "timestamp_header"}
        self.signing_key = md5_hex(token)
        self.webhook_url: str | None = None
        self.failures: list[_Failure] = []
        self.clients: dict[int, dict] = {}
        self.dialogs: dict[int, dict] = {}
        self.messages: dict[int, dict] = {}
        self.requests_by_id: dict[int, int] = {}  # request id -> dialog id
        self.groups: list[dict] = []
        self.operators: list[dict] = []
        self.sent: list[tuple[str, bytes, dict, Response]] = []  # webhooks we posted: (url, raw, headers, answer)
        self._ids = {k: itertools.count(start) for k, start in
                     (("client", 5001), ("dialog", 7001), ("request", 9001), ("message", 100001))}
        self._last_event_time = 0.0
        super().__init__(port)
        self.set_groups(DEFAULT_GROUPS if groups is None else groups)
        self.set_operators(DEFAULT_OPERATORS if operators is None else operators)

    # ---- configuration ---------------------------------------------------

    def set_groups(self, groups):
        with self.lock:
            self.groups = [{"id": g["id"], "name": g["name"], "operator_ids": list(g.get("operator_ids", []))}
                           for g in groups]

    def set_operators(self, operators):
        full = []
        for o in operators:
            op = {"email": f"op{o['id']}@example.com", "first_name": "", "last_name": "", "avatar": None,
                  "role": "operator", "status": "enabled", "online": 0, "offline_type": None, "status_id": 1,
                  "opened_dialogs": 0}
            op.update(o)
            full.append(op)
        with self.lock:
            self.operators = full

    def set_online(self, operator_id, online, offline_type=None):
        """The operator's flag in GET /v1/operators (no webhook: see operator_status)."""
        with self.lock:
            op = self.operator(operator_id)
            op["online"] = 1 if online else 0
            op["offline_type"] = offline_type

    def operator(self, operator_id) -> dict:
        with self.lock:
            for o in self.operators:
                if o["id"] == int(operator_id):
                    return o
        raise KeyError(f"no operator {operator_id} in the fake")

    def operator_name(self, operator_id) -> str:
        o = self.operator(operator_id)
        return f"{o['first_name']} {o['last_name']}".strip()

    def group(self, name_or_id) -> dict:
        with self.lock:
            for g in self.groups:
                if g["id"] == name_or_id or g["name"] == name_or_id or str(g["id"]) == str(name_or_id):
                    return g
        raise KeyError(f"no operator group {name_or_id!r} in the fake")

    # ---- scripted failures -----------------------------------------------

    def fail_next(self, call, n=1, status=500, message=None, errors=None):
        """Answer the next ``n`` valid ``call`` calls with ``status`` (nothing applied)."""
        assert call in CALLS, call
        with self.lock:
            self.failures.append(_Failure(status, message or f"scripted {status}", [call], n, errors))
        return self

    def always_fail(self, status=500, call=None, message=None):
        with self.lock:
            self.failures.append(_Failure(status, message or f"scripted {status}", [call] if call else None, None))
        return self

    def reject_token(self, text=TOKEN_ERROR, times=None, call=None):
        """401 with ``text`` for valid calls (a revoked token, as the platform says it)."""
        with self.lock:
            self.failures.append(_Failure(401, text, [call] if call else None, times))
        return self

    def fail_quota(self, text=QUOTA_ERRORS[0], status=429, times=None, call=None):
        with self.lock:
            self.failures.append(_Failure(status, text, [call] if call else None, times))
        return self

    def heal(self):
        with self.lock:
            self.failures.clear()
        return self

    # ---- answering -------------------------------------------------------

    def _dispatch(self, req):
        try:
            call, handler, args = self._route(req)
            req.call = call
            self._check_auth(req)
            body = self._check_body(req, call)
            with self.lock:
                if call == "close" or call == "transfer":
                    args = (self._existing_for(call, args[0]),) + tuple(args[1:])
                for f in self.failures:
                    if f.take(call):
                        req.scripted = True
                        return f.status, _error(f.message, f.errors), {}
                return handler(req, body, *args)
        except _Problem as p:
            if not p.platform:
                req.problems.append(p.message)
            return p.status, _error(p.message, p.errors), {}

    def _route(self, req):
        path = req.path
        routes = [
            ("GET", r"/v1/operators_groups", "groups", self._do_groups),
            ("GET", r"/v1/operators", "operators", self._do_operators),
            ("GET", r"/v1/clients", "find", self._do_find),
            ("POST", r"/v1/clients", "create", self._do_create),
            ("POST", r"/v1/messages/inbox", "inbox", self._do_inbox),
            ("GET", r"/v1/messages/([^/]+)/transfer_to_group", "transfer", self._do_transfer),
            ("PUT", r"/v1/dialogs/([^/]+)", "close", self._do_close),
        ]
        path_known = False
        for method, pattern, call, handler in routes:
            m = re.fullmatch(pattern, path)
            if not m:
                continue
            path_known = True
            if req.method != method:
                continue
            args = m.groups()
            for a in args:
                if not re.fullmatch(r"[0-9]+", a):
                    raise _Problem(404, f"{call}: {a!r} in the path is not a numeric id")
            return call, handler, tuple(int(a) for a in args)
        if path_known:
            raise _Problem(405, f"{req.method} {path} is not a Chat2Desk call")
        raise _Problem(404, f"unknown path {req.method} {req.raw_path}")

    def _check_auth(self, req):
        got = req.header("Authorization")
        if got is None:
            raise _Problem(401, "no Authorization header (expected the raw token)")
        if got.startswith("Bearer "):
            raise _Problem(401, f"Authorization is {got!r}: Chat2Desk takes the raw token, no 'Bearer '")
        if got != self.token:
            p = _Problem(401, TOKEN_ERROR)
            p.platform = True  # the account's answer to a token it does not know, not a contract break
            raise p

    def _check_body(self, req, call):
        if req.method == "GET":
            if req.raw:
                raise _Problem(400, f"{call}: a GET with a body: {req.raw[:100]!r}")
            return None
        if req.query:
            raise _Problem(400, f"{call}: query parameters {sorted(req.query)} on a {req.method} (the body carries them)")
        if req.content_type != "application/json":
            raise _Problem(415, f"{call}: Content-Type {req.header('Content-Type')!r}, expected application/json")
        if req.json_error is not None or not isinstance(req.json, dict):
            raise _Problem(400, f"{call}: the body is not a JSON object: {req.raw[:200]!r}")
        return req.json

    @staticmethod
    def _only_params(req, call, allowed):
        extra = sorted(set(req.query) - set(allowed))
        if extra:
            raise _Problem(400, f"{call}: unknown query parameters {extra}")

    @staticmethod
    def _fields(call, body, required, optional=()):
        missing = [k for k in required if k not in body]
        if missing:
            raise _Problem(400, f"{call}: missing fields {missing}", {k: ["is required"] for k in missing})
        extra = sorted(set(body) - set(required) - set(optional))
        if extra:
            raise _Problem(400, f"{call}: unknown fields {extra}")

    def _page(self, req, call, items, limit_required):
        self._only_params(req, call, ("limit", "offset"))
        limit, p1 = _int_param(req.query, "limit", 1, 200, required=limit_required)
        offset, p2 = _int_param(req.query, "offset", 0, required=limit_required)
        if p1 or p2:
            raise _Problem(400, f"{call}: {p1 or p2}")
        limit = 20 if limit is None else limit
        offset = 0 if offset is None else offset
        data = [dict(i) for i in items[offset:offset + limit]]
        return 200, _ok(data, {"total": len(items), "limit": limit, "offset": offset}), {}

    # effects (the lock is held)

    def _do_groups(self, req, _body):
        return self._page(req, "groups", [dict(g, operator_ids=list(g["operator_ids"])) for g in self.groups], False)

    def _do_operators(self, req, _body):
        return self._page(req, "operators", self.operators, True)

    def _do_find(self, req, _body):
        self._only_params(req, "find", ("phone",))
        phone = req.query.get("phone")
        if not _nonempty_str(phone):
            raise _Problem(400, f"find: query parameter phone is {phone!r}, expected the client's identity")
        found = [dict(c) for c in self.clients.values() if c["phone"] == phone]
        return 200, _ok(found, {"total": len(found), "limit": 20, "offset": 0}), {}

    def _check_channel(self, call, b):
        if not _is_int(b.get("channel_id")):
            raise _Problem(400, f"{call}: channel_id is {b.get('channel_id')!r}, expected an integer")
        if b["channel_id"] != self.channel_id:
            raise _Problem(400, f"{call}: channel_id {b['channel_id']} is not the account's channel {self.channel_id}",
                           "channel not found")
        if b.get("transport") != self.transport:
            raise _Problem(400, f"{call}: transport is {b.get('transport')!r}, expected {self.transport!r}")

    def _do_create(self, req, b):
        self._fields("create", b, ("phone", "transport", "channel_id", "nickname"), ("assigned_phone",))
        if not _nonempty_str(b["phone"]):
            raise _Problem(400, f"create: phone is {b['phone']!r}, expected a non-empty string")
        if not _nonempty_str(b["nickname"]):
            raise _Problem(400, f"create: nickname is {b['nickname']!r}, expected a non-empty string")
        self._check_channel("create", b)
        if any(c["phone"] == b["phone"] for c in self.clients.values()):
            raise _Problem(400, f"create: phone {b['phone']!r} already taken (find the client first)",
                           {"phone": ["phone already taken"]})
        cid = next(self._ids["client"])
        client = {"id": cid, "phone": b["phone"], "name": b["nickname"], "nickname": b["nickname"],
                  "client_phone": None, "assigned_name": None, "external_id": None,
                  "channel_id": b["channel_id"], "transport": b["transport"]}
        self.clients[cid] = client
        return 200, _ok(dict(client)), {}

    def _open_dialog(self, client_id):
        for d in self.dialogs.values():
            if d["client_id"] == client_id and d["state"] == "open":
                return d
        did, rid = next(self._ids["dialog"]), next(self._ids["request"])
        d = {"id": did, "client_id": client_id, "state": "open", "group_id": None, "operator_id": None,
             "request_id": rid, "requests": [rid], "transfers": []}
        self.dialogs[did] = d
        self.requests_by_id[rid] = did
        return d

    def _do_inbox(self, req, b):
        self._fields("inbox", b, ("client_id", "text", "channel_id", "transport", "external_id"),
                     ("attachment", "attachment_filename", "custom_fields"))
        if "custom_fields" in b and not isinstance(b["custom_fields"], dict):
            raise _Problem(400, f"inbox: custom_fields is {b['custom_fields']!r}, expected an object")
        if not _is_int(b["client_id"]):
            raise _Problem(400, f"inbox: client_id is {b['client_id']!r}, expected an integer")
        if not isinstance(b["text"], str):
            raise _Problem(400, f"inbox: text is {b['text']!r}, expected a string")
        attachment = b.get("attachment")
        if attachment is not None:
            parts = urllib.parse.urlsplit(attachment) if isinstance(attachment, str) else None
            if not parts or parts.scheme not in ("http", "https") or not parts.netloc:
                raise _Problem(400, f"inbox: attachment is {attachment!r}, expected an http(s) URL")
            if not _nonempty_str(b.get("attachment_filename")):
                raise _Problem(400, f"inbox: attachment_filename is {b.get('attachment_filename')!r} "
                                    "with an attachment, expected a name")
        elif "attachment_filename" in b:
            raise _Problem(400, "inbox: attachment_filename without an attachment")
        if b["text"] == "" and attachment is None:
            raise _Problem(400, "inbox: an empty text without an attachment")
        if not _nonempty_str(b["external_id"]):
            raise _Problem(400, f"inbox: external_id is {b['external_id']!r}, expected a non-empty string")
        self._check_channel("inbox", b)
        if b["client_id"] not in self.clients:
            raise _Problem(404, f"inbox: client {b['client_id']} not found", "client not found")
        d = self._open_dialog(b["client_id"])
        mid = next(self._ids["message"])
        msg = {"id": mid, "type": "from_client", "text": b["text"], "client_id": b["client_id"], "dialog_id": d["id"],
               "request_id": d["request_id"], "channel_id": b["channel_id"], "transport": b["transport"],
               "external_id": b["external_id"], "attachment": attachment,
               "attachment_filename": b.get("attachment_filename"), "operator_id": None}
        self.messages[mid] = msg
        req.message_id = mid
        return 200, _ok({"message_id": mid, "dialog_id": d["id"], "request_id": d["request_id"],
                         "client_id": b["client_id"], "channel_id": b["channel_id"], "transport": b["transport"],
                         "type": "from_client"}), {}

    def _existing_for(self, call, ident):
        """The message of a transfer or the dialog of a close: checked before
        scripted failures, as the platform would."""
        if call == "transfer":
            if ident not in self.messages:
                raise _Problem(404, f"transfer: message {ident} not found", f"message {ident} not found")
            return ident
        if ident not in self.dialogs:
            raise _Problem(404, f"close: dialog {ident} not found", f"dialog {ident} not found")
        return ident

    def _do_transfer(self, req, _body, message_id):
        self._only_params(req, "transfer", ("group_id", "force_assign"))
        gid, p = _int_param(req.query, "group_id", required=True)
        if p:
            raise _Problem(400, f"transfer: {p}")
        force = req.query.get("force_assign")
        if force not in ("true", "false"):
            raise _Problem(400, f"transfer: force_assign is {force!r}, expected 'true' or 'false'")
        if not any(g["id"] == gid for g in self.groups):
            raise _Problem(404, f"transfer: operator group {gid} not found", f"operator group {gid} not found")
        d = self.dialogs[self.messages[message_id]["dialog_id"]]
        d["group_id"] = gid
        d["transfers"].append({"group_id": gid, "force_assign": force == "true", "message_id": message_id})
        return 200, _ok({"dialog_id": d["id"], "group_id": gid, "request_id": d["request_id"],
                         "client_id": d["client_id"]}), {}

    def _do_close(self, req, b, dialog_id):
        self._fields("close", b, ("state",))
        if b["state"] != "closed":
            raise _Problem(400, f"close: state is {b['state']!r}, expected 'closed'")
        d = self.dialogs[dialog_id]
        if d["state"] == "closed":
            p = _Problem(400, "Dialog already has state closed")
            p.errors = "Dialog already has state closed"
            p.platform = True  # what Chat2Desk answers; the adapter treats it as done
            raise p
        d["state"] = "closed"
        d["closed_by"] = "api"
        return 200, _ok({"id": dialog_id, "state": "closed"}), {}

    # ---- inspection ------------------------------------------------------

    def calls(self, call=None, client_id=None) -> list:
        """Valid calls answered 2xx, in arrival order."""
        out = []
        for r in self.snapshot():
            if r.problems or not r.ok or not hasattr(r, "call"):
                continue
            if call is not None and r.call != call:
                continue
            if client_id is not None and self._client_of(r) != client_id:
                continue
            out.append(r)
        return out

    def attempts(self, call=None) -> list:
        """Valid calls answered (scripted failures and platform refusals included)."""
        return [r for r in self.snapshot()
                if not r.problems and r.status is not None and hasattr(r, "call") and call in (None, r.call)]

    def _client_of(self, r):
        with self.lock:
            if r.call == "inbox":
                return (r.json or {}).get("client_id")
            if r.call in ("find", "create"):
                phone = r.query.get("phone") if r.call == "find" else (r.json or {}).get("phone")
                return next((c["id"] for c in self.clients.values() if c["phone"] == phone), None)
            if r.call == "transfer":
                mid = int(r.path.split("/")[3])
                m = self.messages.get(mid)
                return m and m["client_id"]
            if r.call == "close":
                d = self.dialogs.get(int(r.path.rsplit("/", 1)[1]))
                return d and d["client_id"]
        return None

    def client_by_phone(self, phone) -> dict | None:
        with self.lock:
            return next((dict(c) for c in self.clients.values() if c["phone"] == phone), None)

    def wait_client(self, phone, timeout=15.0) -> dict:
        return wait_until(lambda: self.client_by_phone(phone), timeout=timeout,
                          message=f"client {phone!r} created at Chat2Desk (requests: {self.snapshot()[-8:]!r}; "
                                  f"violations: {self.violations!r})")

    def dialogs_of(self, client_id) -> list[dict]:
        with self.lock:
            return [dict(d) for d in self.dialogs.values() if d["client_id"] == client_id]

    def dialog_of(self, client_id) -> dict | None:
        """The client's last dialog."""
        ds = self.dialogs_of(client_id)
        return ds[-1] if ds else None

    def inbox(self, client_id=None) -> list[dict]:
        """Bodies of the accepted inbox calls (of one client), in order."""
        return [r.json for r in self.calls("inbox", client_id)]

    def inbox_texts(self, client_id=None) -> list[str]:
        return [b["text"] for b in self.inbox(client_id)]

    def sequence(self, client_id) -> list[tuple]:
        """One client's accepted calls: ``("inbox", text)``, ``("transfer", group_id,
        force_assign)``, ``("close", dialog_id)``, ``("find",)``, ``("create",)``."""
        out = []
        for r in self.calls(client_id=client_id):
            if r.call == "inbox":
                out.append(("inbox", r.json["text"]))
            elif r.call == "transfer":
                out.append(("transfer", int(r.query["group_id"]), r.query["force_assign"]))
            elif r.call == "close":
                out.append(("close", int(r.path.rsplit("/", 1)[1])))
            else:
                out.append((r.call,))
        return out

    def wait_calls(self, call, n=1, client_id=None, timeout=15.0, where=None) -> list:
        def pred():
            got = [r for r in self.calls(call, client_id) if where is None or where(r)]
            return got if len(got) >= n else None

        return wait_until(pred, timeout=timeout,
                          message=f"{n} {call} call(s) at Chat2Desk (calls so far: "
                                  f"{[(r.call, r.raw_path, r.json) for r in self.calls()][-10:]!r}; "
                                  f"violations: {self.violations!r})")

    def wait_inbox_text(self, client_id, text, timeout=15.0):
        return self.wait_calls("inbox", 1, client_id, timeout, where=lambda r: r.json["text"] == text)[-1]

    def wait_attempts(self, call, n, timeout=15.0) -> list:
        return wait_until(lambda: (lambda a: a if len(a) >= n else None)(self.attempts(call)), timeout=timeout,
                          message=f"{n} attempt(s) of {call} (so far {self.attempts(call)!r})")

    # ---- acting as Chat2Desk: webhooks --------------------------------------

    def event_time(self) -> str:
        """UTC ISO-8601 with microseconds, strictly increasing (events are told apart by it)."""
        with self.lock:
            t = max(time.time(), self._last_event_time + 0.000001)
            self._last_event_time = t
        return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def sign(self, raw: bytes, timestamp: str, key: str | bytes | None = None) -> str:
        return signature(self.signing_key if key is None else key, raw, timestamp)

    def post_event(self, event=None, raw=None, url=None, signed=None, bad_signature=False, timestamp=None,
                   key=None, headers=None, timeout=30) -> Response:
        """POST one event (a dict sent compact, or ``raw`` bytes) to the engine.

        ``signed``: default: when ``signature`` is configured. ``bad_signature``
        sends a signature over other bytes; ``timestamp`` overrides now; ``key``
        overrides the signing key (e.g. the raw 16 MD5 bytes)."""
        url = url or self.webhook_url
        assert url, "set webhook_url first: the engine's /v1/providers/{instance}/chat2desk/{secret}"
        data = raw if raw is not None else json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        h = {"Content-Type": "application/json"}
        if signed is None:
            signed = self.signature is not None
        if signed:
            sig = self.signature or {"header": "X-Signature", "timestamp_header": "X-Timestamp"}
            ts = timestamp if timestamp is not None else str(int(time.time()))
            mac = self.sign(data + (b" " if bad_signature else b""), ts, key)
            h[sig["header"]] = mac
            h[sig["timestamp_header"]] = ts
        h.update(headers or {})
        resp = self._post_raw(url, data, h, timeout)
        with self.lock:
            self.sent.append((url, data, dict(h), resp))
        return resp

    @staticmethod
    def _post_raw(url, data, headers, timeout):
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (("?" + parts.query) if parts.query else "")
        return http_request(parts.hostname, parts.port or 80, "POST", path, body=data, headers=headers,
                            timeout=timeout)

    def repeat(self, index=-1, timeout=30) -> Response:
        """Send an event posted before again, byte for byte, headers too (a retry)."""
        with self.lock:
            url, data, h, _ = self.sent[index]
        resp = self._post_raw(url, data, h, timeout)
        with self.lock:
            self.sent.append((url, data, dict(h), resp))
        return resp

    def seed_client(self, phone, nickname="someone else", text="hello"):
        """A client that wrote to the account on its own (not through us):
        a client, an open dialog and its message. Returns the client's id."""
        with self.lock:
            cid = next(self._ids["client"])
            self.clients[cid] = {"id": cid, "phone": phone, "name": nickname, "nickname": nickname,
                                 "client_phone": None, "assigned_name": None, "external_id": None,
                                 "channel_id": self.channel_id, "transport": self.transport}
            d = self._open_dialog(cid)
            mid = next(self._ids["message"])
            self.messages[mid] = {"id": mid, "type": "from_client", "text": text, "client_id": cid,
                                  "dialog_id": d["id"], "request_id": d["request_id"], "operator_id": None,
                                  "channel_id": self.channel_id, "transport": self.transport}
            return cid

    def _client_dialog(self, client_id):
        with self.lock:
            if client_id not in self.clients:
                raise KeyError(f"no client {client_id} in the fake")
            d = self.dialog_of(client_id)
            if d is None:
                raise KeyError(f"client {client_id} has no dialog in the fake")
            return self.dialogs[d["id"]]

    def operator_message(self, client_id, text, operator_id=101, type="to_client", attachments=None, **kw) -> Response:
        """An ``outbox`` event: an operator (or the system) wrote to the client
        in the client's last dialog; the message is kept in the fake's state."""
        with self.lock:
            d = self._client_dialog(client_id)
            mid = next(self._ids["message"])
            msg = {"id": mid, "type": type, "text": text, "client_id": client_id, "dialog_id": d["id"],
                   "request_id": d["request_id"], "operator_id": operator_id, "channel_id": self.channel_id,
                   "transport": self.transport}
            self.messages[mid] = msg
            if type == "to_client" and operator_id is not None:
                d["operator_id"] = operator_id
            client = self.clients[client_id]
        ev = {"message_id": mid, "type": type, "text": text, "transport": self.transport, "client_id": client_id,
              "operator_id": operator_id, "dialog_id": d["id"], "channel_id": self.channel_id, "photo": None,
              "coordinates": None, "audio": None, "pdf": None,
              "client": {"id": client_id, "phone": client["phone"], "client_phone": None, "name": client["name"],
                         "assigned_name": None, "external_id": None},
              "hook_type": "outbox", "request_id": d["request_id"], "attachments": list(attachments or []),
              "is_new_request": False, "is_new_client": False, "insta_comment": False, "extra_data": {},
              "is_new": True, "event_time": self.event_time()}
        ev.update(kw)
        return self.post_event(ev)

    def client_inbox(self, client_id, text) -> Response:
        """An ``inbox`` event (the client wrote; Chat2Desk tells every webhook)."""
        with self.lock:
            d = self._client_dialog(client_id)
            mid = next(self._ids["message"])
            client = self.clients[client_id]
        ev = {"message_id": mid, "type": "from_client", "text": text, "transport": self.transport,
              "client_id": client_id, "operator_id": None, "dialog_id": d["id"], "channel_id": self.channel_id,
              "client": {"id": client_id, "phone": client["phone"], "name": client["name"]},
              "hook_type": "inbox", "request_id": d["request_id"], "attachments": [], "is_new_request": False,
              "is_new_client": False, "event_time": self.event_time()}
        return self.post_event(ev)

    def close_request(self, client_id=None, request_id=None) -> Response:
        """The operator closed the request (``close_request``); the dialog is closed."""
        with self.lock:
            if request_id is None:
                d = self._client_dialog(client_id)
                request_id = d["request_id"]
            did = self.requests_by_id.get(request_id)
            if did is not None:
                self.dialogs[did]["state"] = "closed"
                self.dialogs[did]["closed_by"] = "operator"
        return self.post_event({"hook_type": "close_request", "event_time": self.event_time(), "request_id": request_id})

    def close_dialog(self, client_id=None, dialog_id=None, notify=True) -> Response | None:
        """The operator closed the dialog: a ``close_dialog`` event (``notify=False``:
        closed in the fake's state only, as when the webhook is not subscribed)."""
        with self.lock:
            if dialog_id is None:
                dialog_id = self._client_dialog(client_id)["id"]
            if dialog_id in self.dialogs:
                self.dialogs[dialog_id]["state"] = "closed"
                self.dialogs[dialog_id]["closed_by"] = "operator"
        if not notify:
            return None
        return self.post_event({"hook_type": "close_dialog", "event_time": self.event_time(), "dialog_id": dialog_id})

    def dialog_transferred(self, client_id, operator_id, group_id=None) -> Response:
        with self.lock:
            d = self._client_dialog(client_id)
            d["operator_id"] = operator_id
            if group_id is not None:
                d["group_id"] = group_id
            did = d["id"]
        ev = {"hook_type": "dialog_transferred", "event_time": self.event_time(), "dialog_id": did,
              "client_id": client_id, "operator_id": operator_id}
        if group_id is not None:
            ev["group_id"] = group_id
        return self.post_event(ev)

    def operator_status(self, operator_id, online, offline_type=None, status_id=1,
                        hook_type="operator_status_updated") -> Response:
        """The operator's status changed (the flag of GET /v1/operators too);
        the id is a string as in the platform's event."""
        self.set_online(operator_id, online, offline_type)
        with self.lock:
            email = self.operator(operator_id)["email"]
        return self.post_event({"hook_type": hook_type, "event_time": self.event_time(), "id": str(operator_id),
                                "email": email, "online": 1 if online else 0, "offline_type": offline_type,
                                "status_id": status_id})


__all__ = ["FakeChat2Desk", "signature", "md5_hex", "TOKEN_ERROR", "OLD_TOKEN_ERRORS", "QUOTA_ERRORS",
           "DEFAULT_GROUPS", "DEFAULT_OPERATORS", "VENDOR_VECTOR_KEY", "VENDOR_VECTOR_BODY",
           "VENDOR_VECTOR_TIMESTAMP", "VENDOR_VECTOR_SIGNATURE"]
