"""A strict fake of Chaport's REST API and webhooks
(shared/providers/platforms.md section 3; docs/providers/chaport.md).

The engine calls the fake (``api_base`` = ``fake.api_base``, i.e.
``<url>/api/v1``) with ``Authorization: Bearer <token>``; every answer is
the ``{"result": ...}`` envelope:

- ``GET /operators``: the account's operators ``[{"id","email","name","role","lastStatus"}]``.
- ``POST /operators`` ``{"email","name","role"}``: creates an operator (Chaport
  does not document this call: the fake follows the adapter's default,
  ``create_operator``); an email that exists is a 409.
- ``POST /operators/{id}/status`` ``{"status"}`` (``online``, ``away`` or
  ``offline``; the field's name is the adapter's default ``status_call``):
  kept in ``statuses`` as ``(operator id, status)``, in order.
- ``POST /messages`` ``{"visitorId", "chatEvent": {"type": "operator-message",
  "params": {"text", "operatorId"}}}``: the operator must exist and the visitor
  must be one the fake wrote for; kept in ``messages`` as
  ``(visitor id, operator id, text)``. With ``echo = True`` the fake then posts
  the message back as an ``operator-message`` webhook, as Chaport would tell
  its subscribers.
- ``PUT /visitors/{id}/chats`` with some of ``operators``, ``stage``,
  ``missed``, ``rating`` (stages ``initiated, offline, responded, engaged,
  closed``): kept in ``chat_updates`` as ``(visitor id, body)``.

Anything else (a wrong token, method or path, a body that is not a JSON
object, a missing, unknown or wrong-typed field) is answered 4xx and noted in
``violations`` (tests assert it is empty with ``assert_no_violations``).
``fail_next(op, n, status)`` answers the next ``n`` valid ``op`` calls
(``operators``, ``create``, ``status``, ``messages``, ``chats``) with ``status``.

Acting as Chaport: ``chat_started``, ``visitor_message``, ``bot_message``,
``operator_message`` and ``chat_finished`` POST webhooks in the adapter's
default payload shape (Chaport does not document it: docs/providers/chaport.md
lists the paths) to ``engine_url``, set by the test.

Only the Python standard library is used.
"""

from __future__ import annotations

import itertools
import json
import threading
import urllib.parse

from conftest import Response, http_request, wait_until
from fakes import JsonFake

STAGES = ("initiated", "offline", "responded", "engaged", "closed")
OPERATOR_STATUSES = ("online", "away", "offline")
CHAT_FIELDS = ("operators", "stage", "missed", "rating")

_ids = itertools.count(1)


def _nonempty_str(v):
    return isinstance(v, str) and v != ""


def _keys(obj, required, optional=()):
    p = [f"{k} is missing" for k in required if k not in obj]
    p.extend(f"{k} is not a field of this call" for k in sorted(obj) if k not in required and k not in optional)
    return p


def operator(op_id, email, name, status="offline", role="operator"):
    return {"id": op_id, "email": email, "name": name, "role": role, "language": "en",
            "lastStatus": status, "realStatus": status}


class FakeChaport(JsonFake):
    name = "chaport"

    def __init__(self, token="chaport-token", operators=(), port=0):
        self.token = token
        self.operators: list[dict] = [dict(o) for o in operators]
        self.engine_url: str | None = None
        self.echo = False
        self.visitors: set[str] = set()  # visitor ids the fake posted webhooks for
        self.messages: list[tuple[str, str, str]] = []  # (visitor id, operator id, text)
        self.statuses: list[tuple[str, str]] = []  # (operator id, status)
        self.chat_updates: list[tuple[str, dict]] = []  # (visitor id, body)
        self.created: list[dict] = []  # operators made with POST /operators
        self.failures: dict[str, list[int]] = {}
        self.echo_threads: list[threading.Thread] = []
        super().__init__(port)
        self.api_base = self.url + "/api/v1"

    # ---- scripting -------------------------------------------------------

    def fail_next(self, op, n=1, status=500):
        with self.lock:
            self.failures.setdefault(op, []).extend([status] * n)
        return self

    def operator_by_email(self, email):
        with self.lock:
            return next((o for o in self.operators if o["email"].lower() == email.lower()), None)

    # ---- answering -------------------------------------------------------

    def _error(self, req, status, message):
        req.problems.append(message)
        return status, {"error": {"message": message}}, {}

    def _dispatch(self, req):
        if req.header("Authorization") != f"Bearer {self.token}":
            return self._error(req, 401, f"Authorization {req.header('Authorization')!r}, expected the bearer token")
        if not req.path.startswith("/api/v1/"):
            return self._error(req, 404, f"path {req.path!r} is not under /api/v1/")
        parts = req.path[len("/api/v1/"):].split("/")
        if req.method == "GET":
            if req.raw:
                return self._error(req, 400, "GET with a body")
            body = None
        else:
            body = req.json
            if req.content_type != "application/json" or req.json_error is not None or not isinstance(body, dict):
                return self._error(req, 400, f"not a JSON object ({req.header('Content-Type')!r}): {req.raw[:200]!r}")
        route = None
        if parts == ["operators"]:
            route = {"GET": "operators", "POST": "create"}.get(req.method)
        elif len(parts) == 3 and parts[0] == "operators" and parts[2] == "status" and req.method == "POST":
            route = "status"
        elif parts == ["messages"] and req.method == "POST":
            route = "messages"
        elif len(parts) == 3 and parts[0] == "visitors" and parts[2] == "chats" and req.method == "PUT":
            route = "chats"
        if route is None:
            return self._error(req, 404, f"no such call: {req.method} {req.path}")
        with self.lock:
            problem, status = getattr(self, "_check_" + route)(parts, body)
            if problem:
                return self._error(req, status, f"{route}: {problem}")
            req.op = route
            pending = self.failures.get(route)
            if pending:
                code = pending.pop(0)
                return code, {"error": {"message": f"scripted {code}"}}, {}
            return 200, {"result": getattr(self, "_do_" + route)(parts, body)}, {}

    # checks: (what is wrong, status) or (None, None); called with the lock held

    def _operator(self, op_id):
        return next((o for o in self.operators if o["id"] == op_id), None)

    def _check_operators(self, parts, body):
        return None, None

    def _check_create(self, parts, body):
        p = _keys(body, ("email", "name", "role"))
        if p:
            return "; ".join(p), 400
        if not _nonempty_str(body["email"]) or "@" not in body["email"]:
            return f"email is {body['email']!r}, expected an email address", 400
        if not _nonempty_str(body["name"]):
            return f"name is {body['name']!r}, expected a non-empty string", 400
        if body["role"] not in ("operator", "admin"):
            return f"role is {body['role']!r}, expected operator or admin", 400
        if self.operator_by_email(body["email"]):
            return f"an operator with email {body['email']!r} exists", 409
        return None, None

    def _check_status(self, parts, body):
        if self._operator(urllib.parse.unquote(parts[1])) is None:
            return f"no operator {parts[1]!r}", 404
        p = _keys(body, ("status",))
        if p:
            return "; ".join(p), 400
        if body["status"] not in OPERATOR_STATUSES:
            return f"status is {body['status']!r}, expected one of {OPERATOR_STATUSES}", 400
        return None, None

    def _check_messages(self, parts, body):
        p = _keys(body, ("visitorId", "chatEvent"))
        if p:
            return "; ".join(p), 400
        if body["visitorId"] not in self.visitors:
            return f"no visitor {body['visitorId']!r}", 404
        ev = body["chatEvent"]
        if not isinstance(ev, dict) or _keys(ev, ("type", "params")) or ev["type"] != "operator-message":
            return f"chatEvent is {ev!r}, expected {{type: operator-message, params}}", 400
        params = ev["params"]
        if not isinstance(params, dict) or _keys(params, ("text", "operatorId")):
            return f"chatEvent.params is {params!r}, expected {{text, operatorId}}", 400
        if not _nonempty_str(params["text"]):
            return f"text is {params['text']!r}, expected a non-empty string", 400
        if self._operator(params["operatorId"]) is None:
            return f"no operator {params['operatorId']!r}", 404
        return None, None

    def _check_chats(self, parts, body):
        if urllib.parse.unquote(parts[1]) not in self.visitors:
            return f"no visitor {parts[1]!r}", 404
        p = _keys(body, (), CHAT_FIELDS)
        if p or not body:
            return "; ".join(p) or "nothing to change", 400
        if "stage" in body and body["stage"] not in STAGES:
            return f"stage is {body['stage']!r}, expected one of {STAGES}", 400
        return None, None

    # effects; called with the lock held

    def _do_operators(self, parts, body):
        return [dict(o) for o in self.operators]

    def _do_create(self, parts, body):
        op = operator(f"op-new-{next(_ids)}", body["email"], body["name"], role=body["role"])
        self.operators.append(op)
        self.created.append(op)
        return dict(op)

    def _do_status(self, parts, body):
        op_id = urllib.parse.unquote(parts[1])
        self.statuses.append((op_id, body["status"]))
        op = self._operator(op_id)
        op["lastStatus"] = op["realStatus"] = body["status"]
        return {"status": body["status"]}

    def _do_messages(self, parts, body):
        params = body["chatEvent"]["params"]
        self.messages.append((body["visitorId"], params["operatorId"], params["text"]))
        if self.echo:
            op = self._operator(params["operatorId"])
            t = threading.Thread(target=self.operator_message, daemon=True,
                                 args=(body["visitorId"], params["text"], op["name"]))
            self.echo_threads.append(t)
            t.start()
        return {"id": f"ev-{next(_ids)}"}

    def _do_chats(self, parts, body):
        self.chat_updates.append((urllib.parse.unquote(parts[1]), dict(body)))
        return {"id": next(_ids), "stage": body.get("stage", "engaged")}

    # ---- inspection ------------------------------------------------------

    def texts(self, visitor=None, operator_id=None) -> list[str]:
        with self.lock:
            return [t for v, o, t in self.messages if visitor in (None, v) and operator_id in (None, o)]

    def sent(self, visitor) -> list[tuple[str, str]]:
        """``(operator id, text)`` of the messages to a visitor, in order."""
        with self.lock:
            return [(o, t) for v, o, t in self.messages if v == visitor]

    def wait_text(self, visitor, text, timeout=15.0) -> str:
        """The operator id the message with this text was sent as."""
        def pred():
            return next((o for o, t in self.sent(visitor) if t == text), None)
        return wait_until(pred, timeout=timeout,
                          message=f"message {text!r} to {visitor} at Chaport (so far: {self.sent(visitor)!r}; "
                                  f"violations: {self.violations!r})")

    def statuses_of(self, op_id) -> list[str]:
        with self.lock:
            return [s for o, s in self.statuses if o == op_id]

    def wait_status(self, op_id, statuses, timeout=15.0):
        want = list(statuses)
        return wait_until(lambda: self.statuses_of(op_id) == want, timeout=timeout,
                          message=f"statuses {want} of {op_id} at Chaport (so far: {self.statuses_of(op_id)!r}; "
                                  f"violations: {self.violations!r})")

    def closes(self, visitor) -> list[dict]:
        with self.lock:
            return [b for v, b in self.chat_updates if v == visitor and b.get("stage") == "closed"]

    # ---- acting as Chaport -----------------------------------------------

    def post_event(self, event, raw=None, url=None, timeout=30) -> Response:
        url = url or self.engine_url
        assert url, "engine_url is not set"
        parts = urllib.parse.urlsplit(url)
        data = raw if raw is not None else json.dumps(event).encode()
        return http_request(parts.hostname, parts.port or 80, "POST", parts.path, body=data,
                            headers={"Content-Type": "application/json"}, timeout=timeout)

    def event(self, name, visitor, message=None, messages=None, page=None, start_page=None, visitor_name=None,
              email=None, chat_id=None, event_id=None) -> dict:
        """A webhook in the adapter's default shape."""
        v = {"id": visitor}
        if visitor_name is not None:
            v["name"] = visitor_name
        if email is not None:
            v["email"] = email
        if page is not None:
            v["pageUrl"] = page
        chat = {"id": chat_id or f"chat-{visitor}"}
        if start_page is not None:
            chat["startPage"] = start_page
        ev = {"event": name, "id": event_id or f"hook-{next(_ids)}", "visitor": v, "chat": chat}
        if message is not None:
            ev["message"] = message
        if messages is not None:
            ev["messages"] = messages
        with self.lock:
            self.visitors.add(visitor)  # before the post: the engine may answer while it is in flight
        return ev

    @staticmethod
    def message(kind, text, name=None, message_id=None) -> dict:
        m = {"id": message_id or f"msg-{next(_ids)}", "type": kind, "text": text}
        if name is not None:
            m["author"] = {"name": name}
        return m

    def chat_started(self, visitor, text=None, **kw) -> Response:
        msg = self.message("visitor-message", text) if text is not None else None
        return self.post_event(self.event("chat.started", visitor, message=msg, **kw))

    def visitor_message(self, visitor, text, message_id=None, **kw) -> Response:
        return self.post_event(self.event("chat.message", visitor,
                                          message=self.message("visitor-message", text, message_id=message_id), **kw))

    def bot_message(self, visitor, text, bot="Chaport Bot", **kw) -> Response:
        return self.post_event(self.event("chat.message", visitor, message=self.message("bot-message", text, bot), **kw))

    def operator_message(self, visitor, text, name="Operator", **kw) -> Response:
        return self.post_event(self.event("chat.message", visitor,
                                          message=self.message("operator-message", text, name), **kw))

    def chat_finished(self, visitor, **kw) -> Response:
        return self.post_event(self.event("chat.finished", visitor, **kw))

    def close(self):
        for t in self.echo_threads:
            t.join(5)
        super().close()


__all__ = ["FakeChaport", "operator"]
