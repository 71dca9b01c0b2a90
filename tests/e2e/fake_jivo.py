"""A strict fake of JivoChat's side of the Bot API
(shared/providers/platforms.md section 4.1; docs/providers/jivo.md).

The engine calls the fake (``api_base`` = ``fake.url``):

- ``POST /webhooks/{provider_id}/{token}`` with a JSON event:
  ``BOT_MESSAGE`` ``{"event","id","client_id","chat_id","message"}``, where
  ``message`` is ``{"type":"TEXT","text","timestamp"}`` or
  ``{"type":"BUTTONS","title","text","buttons":[{"text","id"}],"timestamp"}``;
  ``INVITE_AGENT`` ``{"event","id","client_id","chat_id"}`` with an optional
  ``message`` ``{"type":"TEXT","text"}`` (the field's name is not documented:
  ``invite_message_field`` names it, as the adapter's config does).

Checked strictly: the path (404 when it is not ``/webhooks/<provider_id>/<token>``
with the fake's provider id, 401 for another token), the method (405), JSON
(400), the event type (405 for one the fake does not take), the fields of each
event and no others, an ``id`` no accepted event had before (a retry of a call
that failed may repeat it), and a ``client_id``/``chat_id`` pair that the fake
itself sent in a CLIENT_MESSAGE. A call that breaks a rule is answered with
its 4xx and noted in ``violations`` (tests assert it is empty with
``assert_no_violations``). ``fail_next(n, status)`` answers the next ``n``
valid calls with ``status`` instead of 200.

Acting as Jivo: ``client_message``, ``agent_joined``, ``agent_unavailable``
and ``chat_closed`` POST the events of section 4.1 to ``engine_url`` (set by
the test) and return the ``Response`` with ``elapsed`` (seconds the engine
took to answer) and ``done`` (``time.monotonic()`` when the answer was read).
The fake remembers each client's chat (``new_chat`` starts another one).

Only the Python standard library is used.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse
import uuid

from conftest import Response, http_request, wait_until
from fakes import JsonFake

EVENTS_TAKEN = ("BOT_MESSAGE", "INVITE_AGENT")
SITE_ID = "123456"

_chat_ids = itertools.count(2037)


def _nonempty_str(v):
    return isinstance(v, str) and v != ""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _keys(obj, required, optional=()):
    """What is wrong with the keys of ``obj``: a missing one, or one not allowed."""
    p = [f"{k} is missing" for k in required if k not in obj]
    p.extend(f"{k} is not a field of this event" for k in sorted(obj) if k not in required and k not in optional)
    return p


class FakeJivo(JsonFake):
    name = "jivo"

    def __init__(self, provider_id="p-1", token="t-1", invite_message_field="message", port=0):
        self.provider_id = provider_id
        self.invite_message_field = invite_message_field
        self.token = token
        self.engine_url: str | None = None
        self.chats: dict[str, str] = {}  # client_id -> its current chat_id
        self.sent_pairs: set[tuple[str, str]] = set()  # (client_id, chat_id) of every CLIENT_MESSAGE sent
        self.ids_taken: set[str] = set()  # ids of accepted events
        self.failures: list[int] = []
        super().__init__(port)

    # ---- scripting -------------------------------------------------------

    def fail_next(self, n=1, status=500):
        """Answer the next ``n`` valid calls with ``status`` (nothing is applied)."""
        with self.lock:
            self.failures.extend([status] * n)
        return self

    # ---- answering -------------------------------------------------------

    def _dispatch(self, req):
        parts = req.path.split("/")
        if len(parts) != 4 or parts[1] != "webhooks" or parts[2] != self.provider_id:
            req.problems.append(f"path {req.path!r} is not /webhooks/{self.provider_id}/<token>")
            return 404, None, {}
        if parts[3] != self.token:
            req.problems.append(f"token {parts[3]!r}, expected {self.token!r}")
            return 401, None, {}
        if req.method != "POST":
            req.problems.append(f"method {req.method}, expected POST")
            return 405, None, {}
        body = req.json
        if req.content_type != "application/json" or req.json_error is not None or not isinstance(body, dict):
            req.problems.append(f"not a JSON object ({req.header('Content-Type')!r}): {req.raw[:200]!r}")
            return 400, None, {}
        if body.get("event") not in EVENTS_TAKEN:
            req.problems.append(f"event {body.get('event')!r} is not one of {EVENTS_TAKEN}")
            return 405, None, {}
        with self.lock:
            problems = self._check(body)
            if problems:
                req.problems.extend(f"{body['event']}: {p}" for p in problems)
                return 400, None, {}
            req.event = body["event"]
            if self.failures:
                return self.failures.pop(0), None, {}
            self.ids_taken.add(body["id"])
        return 200, None, {}

    def _check(self, b) -> list[str]:
        event = b["event"]
        if event == "BOT_MESSAGE":
            p = _keys(b, ("event", "id", "client_id", "chat_id", "message"))
        else:
            p = _keys(b, ("event", "id", "client_id", "chat_id"), (self.invite_message_field,))
        if not _nonempty_str(b.get("id")):
            p.append(f"id is {b.get('id')!r}, expected a non-empty string")
        elif b["id"] in self.ids_taken:
            p.append(f"id {b['id']!r} was the id of an event taken before")
        client_id, chat_id = b.get("client_id"), b.get("chat_id")
        if not (_nonempty_str(client_id) and _nonempty_str(chat_id)):
            p.append(f"client_id {client_id!r} and chat_id {chat_id!r} must be non-empty strings")
        elif (client_id, chat_id) not in self.sent_pairs:
            p.append(f"client {client_id!r} has no chat {chat_id!r} (no CLIENT_MESSAGE of it was sent)")
        if event == "BOT_MESSAGE" and "message" in b:
            p.extend(f"message: {x}" for x in self._check_bot_message(b["message"]))
        field = self.invite_message_field
        if event == "INVITE_AGENT" and field in b:
            p.extend(f"{field}: {x}" for x in self._check_invite_message(b[field]))
        return p

    @staticmethod
    def _check_bot_message(m) -> list[str]:
        if not isinstance(m, dict):
            return [f"{m!r} is not an object"]
        kind = m.get("type")
        if kind == "TEXT":
            p = _keys(m, ("type", "text", "timestamp"))
        elif kind == "BUTTONS":
            p = _keys(m, ("type", "title", "text", "buttons", "timestamp"))
            if not isinstance(m.get("title"), str):
                p.append(f"title is {m.get('title')!r}, expected a string")
            buttons = m.get("buttons")
            if not isinstance(buttons, list) or not buttons:
                p.append(f"buttons is {buttons!r}, expected a non-empty list")
            else:
                for i, btn in enumerate(buttons):
                    if not isinstance(btn, dict) or sorted(btn) != ["id", "text"] or not all(
                            _nonempty_str(btn[k]) for k in ("id", "text")):
                        p.append(f"buttons[{i}] is {btn!r}, expected {{text, id}} non-empty strings")
                ids = [btn.get("id") for btn in buttons if isinstance(btn, dict)]
                if len(set(ids)) != len(ids):
                    p.append(f"button ids {ids!r} repeat")
        else:
            return [f"type {kind!r}, expected TEXT or BUTTONS"]
        if not _nonempty_str(m.get("text")):
            p.append(f"text is {m.get('text')!r}, expected a non-empty string")
        if not _is_int(m.get("timestamp")) or m["timestamp"] < 1_000_000_000:
            p.append(f"timestamp is {m.get('timestamp')!r}, expected Unix seconds")
        return p

    @staticmethod
    def _check_invite_message(m) -> list[str]:
        if not isinstance(m, dict):
            return [f"{m!r} is not an object"]
        p = _keys(m, ("type", "text"))
        if m.get("type") != "TEXT":
            p.append(f"type is {m.get('type')!r}, expected TEXT")
        if not _nonempty_str(m.get("text")):
            p.append(f"text is {m.get('text')!r}, expected a non-empty string")
        return p

    # ---- inspection ------------------------------------------------------

    def calls(self, event=None, client_id=None) -> list:
        """Valid calls answered 2xx, in arrival order (filters: ``event``, ``client_id``)."""
        return [r for r in self.snapshot()
                if r.ok and not r.problems and hasattr(r, "event")
                and event in (None, r.event) and client_id in (None, r.json["client_id"])]

    def bot_messages(self, client_id=None) -> list[dict]:
        """The ``message`` objects of accepted BOT_MESSAGEs, in order."""
        return [r.json["message"] for r in self.calls("BOT_MESSAGE", client_id)]

    def texts(self, client_id=None) -> list[str]:
        return [m["text"] for m in self.bot_messages(client_id)]

    def wait_calls(self, event, n=1, client_id=None, where=None, timeout=15.0) -> list:
        def pred():
            got = [r for r in self.calls(event, client_id) if where is None or where(r.json)]
            return got if len(got) >= n else None

        return wait_until(pred, timeout=timeout,
                          message=f"{n} {event} call(s){' for client ' + client_id if client_id else ''} at Jivo "
                                  f"(so far: {[r.json for r in self.calls()]!r}; violations: {self.violations!r})")

    def wait_text(self, client_id, text, timeout=15.0):
        """The accepted BOT_MESSAGE request whose message has this text."""
        return self.wait_calls("BOT_MESSAGE", 1, client_id, lambda b: b["message"].get("text") == text,
                               timeout)[-1]

    # ---- acting as Jivo --------------------------------------------------

    def chat_of(self, client_id) -> str:
        """The client's current chat (a new one for a client not seen yet)."""
        with self.lock:
            if client_id not in self.chats:
                self.chats[client_id] = str(next(_chat_ids))
            return self.chats[client_id]

    def new_chat(self, client_id) -> str:
        """The client starts another chat: later events carry a new chat_id."""
        with self.lock:
            self.chats[client_id] = str(next(_chat_ids))
            return self.chats[client_id]

    def post_event(self, event, raw=None, url=None, timeout=30) -> Response:
        """POST an event (a dict, or ``raw`` bytes) to the engine."""
        url = url or self.engine_url
        assert url, "engine_url is not set"
        parts = urllib.parse.urlsplit(url)
        data = raw if raw is not None else json.dumps(event).encode()
        start = time.monotonic()
        resp = http_request(parts.hostname, parts.port or 80, "POST", parts.path, body=data,
                            headers={"Content-Type": "application/json"}, timeout=timeout)
        resp.done = time.monotonic()
        resp.elapsed = resp.done - start
        return resp

    @staticmethod
    def new_event_id() -> str:
        return str(uuid.uuid4())

    def _event(self, kind, client_id, event_id=None, chat_id=None, **fields) -> dict:
        ev = {"id": event_id or self.new_event_id(), "site_id": SITE_ID, "client_id": client_id,
              "chat_id": chat_id or self.chat_of(client_id), "event": kind}
        ev.update(fields)
        return ev

    def client_message(self, client_id, text, event_id=None, chat_id=None, name="John Smith",
                       page_url="https://shop.example.com/cart", agents_online=True, message=None) -> Response:
        """CLIENT_MESSAGE as in Jivo's documentation; ``message`` replaces the TEXT message."""
        ev = self._event("CLIENT_MESSAGE", client_id, event_id, chat_id, agents_online=agents_online,
                         sender={"id": int(client_id) if client_id.isdigit() else 1233, "name": name,
                                 "url": page_url, "has_contacts": False},
                         message=message or {"type": "TEXT", "text": text, "timestamp": int(time.time())},
                         channel={"id": "12345678", "type": "widget"})
        with self.lock:
            # before the post: the engine may answer while it is in flight
            self.sent_pairs.add((client_id, ev["chat_id"]))
        return self.post_event(ev)

    def agent_joined(self, client_id, agent=None, event_id=None, chat_id=None) -> Response:
        fields = {"agent": agent} if agent is not None else {}
        return self.post_event(self._event("AGENT_JOINED", client_id, event_id, chat_id, **fields))

    def agent_unavailable(self, client_id, event_id=None, chat_id=None) -> Response:
        return self.post_event(self._event("AGENT_UNAVAILABLE", client_id, event_id, chat_id))

    def chat_closed(self, client_id, event_id=None, chat_id=None) -> Response:
        return self.post_event(self._event("CHAT_CLOSED", client_id, event_id, chat_id))


__all__ = ["FakeJivo"]
