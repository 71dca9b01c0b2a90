"""A strict fake of a live-chat server speaking JAICP's Operator API
(shared/providers/platforms.md section 5.3; docs/providers/operator_api.md).

The engine calls the fake (``api_url`` = ``fake.base_url``):

- ``POST {base}/setWebhook`` ``{"url"}``: the URL agent events go to; kept in
  ``webhook_url``.
- ``GET {base}/getDestinations``: a JSON array of
  ``{"destinationId", "name", "hasOnline"}`` with ``hasOnline`` as the string
  ``"true"``/``"false"`` (the best-evidence default of platforms.md: the real
  answer format is not documented). Which groups exist and which have an
  agent online is set per test with ``set_destinations``; ``destinations_fail``
  makes it answer an error instead (the list "cannot be fetched").
- ``POST {base}/selectDestination``
  ``{"userId","destinationId","userName","attributes","hiddenAttributes","customData"}``:
  opens a session of the user with a group.
- ``POST {base}/sendText`` ``{"userId","text"}``, ``POST {base}/sendFile``
  ``{"userId","url","fileName","size"}``: need an open session.
- ``POST {base}/closeChat`` ``{"userId","text"}``: needs an open session,
  closes it.

A call with a wrong method, an unknown path, a body that is not a JSON object,
a missing or wrong-typed field, an unknown destination (not listed and not in
``extra_destinations``), or a sendText/sendFile/closeChat for a user without an
open session is answered with a 4xx and noted in ``violations`` (tests assert
it is empty with ``assert_no_violations``). Every request is recorded in
order: ``Request`` objects (fakes.py) with ``t``/``wall`` (arrival time),
``method``, ``path``, ``json`` and, for valid calls, ``op`` (the method name,
e.g. ``"sendText"``).

Acting as the agent: ``agent_text``, ``agent_file``, ``agent_closed`` and
``agent_moved`` (a ``SelectDestination`` event) POST the event shapes of
section 5.3 (``id``, ``userId``, ``type``, ``text``, ``employee{employeeId,
firstName, lastName, avatarUrl}``) to the URL received by setWebhook (or a
given one) and return the ``Response``.

Only the Python standard library is used.
"""

from __future__ import annotations

import itertools
import json
import urllib.parse

from conftest import Response, http_request, wait_until
from fakes import JsonFake

OPERATIONS = {
    # operation (last path segment): its HTTP method
    "setWebhook": "POST",
    "getDestinations": "GET",
    "selectDestination": "POST",
    "sendText": "POST",
    "sendFile": "POST",
    "closeChat": "POST",
}

DEFAULT_EMPLOYEE = {
    "employeeId": "emp-7",
    "firstName": "Olga",
    "lastName": "Petrova",
    "avatarUrl": "http://127.0.0.1/avatar/olga.png",
}

_event_ids = itertools.count(1)


def _is_str(v):
    return isinstance(v, str)


def _nonempty_str(v):
    return isinstance(v, str) and v != ""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


class FakeOperatorApi(JsonFake):
    """The live-chat server (the desk side of the Operator API).

    ``destinations``: ``{group_id: online}`` or ``{group_id: (name, online)}``;
    ``extra_destinations``: ids that selectDestination accepts although
    getDestinations does not list them (e.g. the account's default recipient).
    """

    name = "operator_api"

    def __init__(self, destinations=None, extra_destinations=(), base="/operatorapi", port=0):
        self.base = base.rstrip("/")
        self._destinations: list[dict] = []
        self.extra_destinations = {str(d) for d in extra_destinations}
        self.destinations_fail = None  # an HTTP status for getDestinations, or None
        self.strict_destinations = True
        self.webhook_url: str | None = None
        self.sessions: dict[str, str] = {}  # userId -> destinationId of the open session
        self.failures: dict[str, list[int]] = {}  # op -> statuses to answer valid calls with, first first
        super().__init__(port)
        self.base_url = self.url + self.base
        self.set_destinations(destinations if destinations is not None else {})

    # ---- configuration ---------------------------------------------------

    def set_destinations(self, groups):
        """``{id: online}`` or ``{id: (name, online)}``; order is kept."""
        out = []
        for gid, v in groups.items():
            name, online = (v if isinstance(v, tuple) else (f"Group {gid}", v))
            out.append({"destinationId": str(gid), "name": name, "hasOnline": "true" if online else "false"})
        with self.lock:
            self._destinations = out

    def destination_list(self) -> list[dict]:
        with self.lock:
            return [dict(d) for d in self._destinations]

    def fail_next(self, op, n=1, status=500):
        """Answer the next ``n`` valid ``op`` calls with ``status`` (nothing is applied)."""
        with self.lock:
            self.failures.setdefault(op, []).extend([status] * n)
        return self

    # ---- answering -------------------------------------------------------

    def _dispatch(self, req):
        path = req.path
        if not path.startswith(self.base + "/"):
            req.problems.append(f"path {path!r} is not under {self.base}/")
            return 404, {"error": "not found"}, {}
        op = path[len(self.base) + 1:]
        method = OPERATIONS.get(op)
        if method is None:
            req.problems.append(f"unknown operation {op!r}")
            return 404, {"error": "not found"}, {}
        if req.method != method:
            req.problems.append(f"{op} with method {req.method}, expected {method}")
            return 405, {"error": "method not allowed"}, {"Allow": method}
        if method == "GET":
            if req.raw:
                req.problems.append(f"{op} with a body: {req.raw[:100]!r}")
                return 400, {"error": "GET with a body"}, {}
            body = None
        else:
            if req.content_type != "application/json":
                req.problems.append(f"{op}: Content-Type {req.header('Content-Type')!r}, expected application/json")
                return 415, {"error": "expected application/json"}, {}
            body = req.json
            if req.json_error is not None or not isinstance(body, dict):
                req.problems.append(f"{op}: body is not a JSON object: {req.raw[:200]!r}")
                return 400, {"error": "body must be a JSON object"}, {}
        with self.lock:
            problem = getattr(self, "_check_" + op)(body)
            if problem:
                req.problems.append(f"{op}: {problem}")
                return (409 if problem.startswith("no open session") else 400), {"error": problem}, {}
            req.op = op
            pending = self.failures.get(op)
            if pending:
                status = pending.pop(0)
                return status, {"error": f"scripted {status}"}, {}
            return getattr(self, "_do_" + op)(req, body)

    # checks: a string describing what is wrong, or None

    def _check_setWebhook(self, b):
        url = b.get("url")
        if not _nonempty_str(url):
            return f"url is {url!r}, expected a non-empty string"
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return f"url {url!r} is not an absolute http(s) URL"
        return None

    def _check_getDestinations(self, _b):
        return None

    def _check_user(self, b):
        if not _nonempty_str(b.get("userId")):
            return f"userId is {b.get('userId')!r}, expected a non-empty string"
        return None

    def _check_session(self, b):
        if b["userId"] not in self.sessions:
            return f"no open session for userId {b['userId']!r} (selectDestination first)"
        return None

    def _known_ids(self):
        return {d["destinationId"] for d in self._destinations} | self.extra_destinations

    def _check_selectDestination(self, b):
        p = self._check_user(b)
        if p:
            return p
        dest = b.get("destinationId")
        if not _nonempty_str(dest):
            return f"destinationId is {dest!r}, expected a non-empty string"
        if self.strict_destinations and dest not in self._known_ids():
            return f"destinationId {dest!r} is not a destination of this account ({sorted(self._known_ids())})"
        if "userName" in b and not _is_str(b["userName"]):
            return f"userName is {b['userName']!r}, expected a string"
        for k in ("attributes", "hiddenAttributes"):
            if k in b and not isinstance(b[k], dict):
                return f"{k} is {b[k]!r}, expected an object"
        return None

    def _check_sendText(self, b):
        p = self._check_user(b)
        if p:
            return p
        if not _nonempty_str(b.get("text")):
            return f"text is {b.get('text')!r}, expected a non-empty string"
        return self._check_session(b)

    def _check_sendFile(self, b):
        p = self._check_user(b)
        if p:
            return p
        url = b.get("url")
        if not _nonempty_str(url) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            return f"url is {url!r}, expected an http(s) URL"
        if not _nonempty_str(b.get("fileName")):
            return f"fileName is {b.get('fileName')!r}, expected a non-empty string"
        if not _is_int(b.get("size")) or b["size"] < 0:
            return f"size is {b.get('size')!r}, expected a non-negative integer"
        return self._check_session(b)

    def _check_closeChat(self, b):
        p = self._check_user(b)
        if p:
            return p
        if not _is_str(b.get("text")):
            return f"text is {b.get('text')!r}, expected a string"
        return self._check_session(b)

    # effects (called with the lock held)

    def _do_setWebhook(self, req, b):
        self.webhook_url = b["url"]
        return 200, {"ok": True}, {}

    def _do_getDestinations(self, req, b):
        if self.destinations_fail is not None:
            return self.destinations_fail, {"error": "destinations unavailable"}, {}
        return 200, [dict(d) for d in self._destinations], {}

    def _do_selectDestination(self, req, b):
        self.sessions[b["userId"]] = b["destinationId"]
        return 200, {"ok": True}, {}

    def _do_sendText(self, req, b):
        return 200, {"ok": True}, {}

    def _do_sendFile(self, req, b):
        return 200, {"ok": True}, {}

    def _do_closeChat(self, req, b):
        self.sessions.pop(b["userId"], None)
        return 200, {"ok": True}, {}

    # ---- inspection ------------------------------------------------------

    def calls(self, op=None, user_id=None) -> list:
        """Valid calls answered 2xx, in arrival order (``op``/``userId`` filters)."""
        out = []
        for r in self.snapshot():
            if r.problems or not r.ok or not hasattr(r, "op"):
                continue
            if op is not None and r.op != op:
                continue
            if user_id is not None and (r.json or {}).get("userId") != user_id:
                continue
            out.append(r)
        return out

    def ops(self, user_id=None, exclude=("getDestinations", "setWebhook")) -> list:
        """``[(op, body), ...]`` of a user's conversation with the desk."""
        return [(r.op, r.json) for r in self.calls(user_id=user_id) if r.op not in exclude]

    def texts(self, user_id) -> list:
        """The texts sent to the desk for a user (sendText), in order."""
        return [r.json["text"] for r in self.calls("sendText", user_id)]

    def wait_calls(self, op, n=1, user_id=None, timeout=15.0, where=None) -> list:
        def pred():
            got = [r for r in self.calls(op, user_id) if where is None or where(r.json)]
            return got if len(got) >= n else None

        return wait_until(pred, timeout=timeout,
                          message=f"{n} {op} call(s){' for ' + user_id if user_id else ''} at the desk "
                                  f"(calls so far: {self.ops(user_id)!r}; violations: {self.violations!r})")

    def wait_text(self, user_id, text, timeout=15.0):
        return self.wait_calls("sendText", 1, user_id, timeout, where=lambda b: b.get("text") == text)[-1]

    def wait_webhook(self, timeout=15.0) -> str:
        wait_until(lambda: self.webhook_url, timeout=timeout,
                   message=f"setWebhook at the desk (requests so far: {self.snapshot()!r})")
        return self.webhook_url

    # ---- acting as the agent ---------------------------------------------

    def post_event(self, event, url=None, raw=None, timeout=30) -> Response:
        """POST an event (a dict, or ``raw`` bytes) to the webhook URL."""
        url = url or self.webhook_url
        assert url, "no webhook URL: setWebhook was not called"
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (("?" + parts.query) if parts.query else "")
        data = raw if raw is not None else json.dumps(event).encode()
        return http_request(parts.hostname, parts.port or 80, "POST", path, body=data,
                            headers={"Content-Type": "application/json"}, timeout=timeout)

    @staticmethod
    def new_event_id() -> str:
        return f"ev-{next(_event_ids)}"

    def _event(self, user_id, type_, event_id=None, employee=True, **fields):
        ev = {"id": event_id or self.new_event_id(), "userId": user_id, "type": type_}
        ev.update(fields)
        if employee:
            ev["employee"] = dict(DEFAULT_EMPLOYEE) if employee is True else employee
        return ev

    def agent_text(self, user_id, text, employee=True, event_id=None, url=None) -> Response:
        return self.post_event(self._event(user_id, "TextMessage", event_id, employee, text=text), url)

    def agent_file(self, user_id, file_url, name="file", size="2", comment=None, employee=True,
                   event_id=None, url=None) -> Response:
        fields = {"url": file_url, "name": name, "size": size}
        if comment is not None:
            fields["comment"] = comment
        return self.post_event(self._event(user_id, "FileMessage", event_id, employee, **fields), url)

    def agent_closed(self, user_id, employee=True, event_id=None, url=None) -> Response:
        resp = self.post_event(self._event(user_id, "Closed", event_id, employee), url)
        if 200 <= resp.status < 300:
            with self.lock:
                self.sessions.pop(user_id, None)
        return resp

    def agent_moved(self, user_id, destination_id, name=None, has_online=True, event_id=None, url=None) -> Response:
        """A ``SelectDestination`` event: the chat moved to another group."""
        dest = {"destinationId": str(destination_id), "name": name or f"Group {destination_id}",
                "hasOnline": "true" if has_online else "false"}
        resp = self.post_event(self._event(user_id, "SelectDestination", event_id, False, destination=dest), url)
        if 200 <= resp.status < 300:
            with self.lock:
                if user_id in self.sessions:
                    self.sessions[user_id] = str(destination_id)
        return resp


__all__ = ["FakeOperatorApi", "DEFAULT_EMPLOYEE"]
