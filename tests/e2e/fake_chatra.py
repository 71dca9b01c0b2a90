"""A strict fake of Chatra's REST API and webhooks
(shared/providers/platforms.md section 2; docs/providers/chatra.md).

The engine calls the fake (``api_base`` = ``fake.url``), always with
``Authorization: Chatra.Simple <public key>:<secret key>``:

- ``POST /messages/`` (the trailing slash is part of the path): an agent's
  message to a client, ``{"clientId","text","agentId"}`` or
  ``{"clientId","text","agentEmail","agentName"[,"receivedFrom"]}``; the
  text is 1-5000 characters. An ``agentEmail`` the fake does not know creates
  that agent (kept in ``agents``, found by email with ``agent_by_email``).
  The message joins the client's chat, so a later transcript shows it (with
  its ``agentId`` and ``receivedFrom``), as Chatra's do.
- ``POST /pushedMessages/`` ``{"clientId","text"[,"agentId"][,"groupId"]}``.

Anything else (another path, a missing slash, a wrong key, a body that is not
a JSON object of exactly those fields, a client that never wrote, an unknown
agentId, a text too long or empty) is answered 4xx ``{"error"}`` and noted in
``violations`` (tests assert it is empty with ``assert_no_violations``).

Acting as Chatra: ``start_chat`` (chatStarted), ``client_says`` and
``agent_types`` (messages written in the widget and in Chatra's own
interface, held until posted), ``fragment`` (chatFragment: what was not
posted yet), ``transcript`` (chatTranscript: the whole chat, which then
ends) and ``repost_last`` (the last event again, as a retry) POST to ``engine_url`` and return the ``Response``. Messages carry an
``id`` and a ``timestamp`` (ms) unless the fake is made with
``message_ids=False`` / ``timestamps=False``; the client object carries
``groupId`` when the chat has a group.

Only the Python standard library is used.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse

from conftest import Response, http_request, wait_until
from fakes import JsonFake

MAX_TEXT = 5000

_ids = itertools.count(1)


def _nonempty_str(v):
    return isinstance(v, str) and v != ""


class Chat:
    """A client's current chat at Chatra: who the client is and what was said."""

    def __init__(self, client: dict):
        self.client = client
        self.messages: list[dict] = []
        self.posted = 0  # how many of messages a webhook carried already
        self.agents: dict[str, dict] = {}  # agents who wrote in this chat
        self.last_event: dict | None = None  # the last event the engine took


class FakeChatra(JsonFake):
    name = "chatra"

    def __init__(self, public_key="chatra-public-1", secret_key="chatra-secret-1", message_ids=True,
                 timestamps=True, port=0):
        self.public_key = public_key
        self.secret_key = secret_key
        self.message_ids = message_ids
        self.timestamps = timestamps
        self.engine_url: str | None = None
        self.agents: dict[str, dict] = {}  # id -> {"id","name","email"}
        self.chats: dict[str, Chat] = {}  # client id -> its current chat
        self.sent: list[dict] = []  # accepted POST /messages/ bodies, with "agent" (the agent's id)
        self.pushed: list[dict] = []  # accepted POST /pushedMessages/ bodies
        self._last_ms = 0
        super().__init__(port)

    # ---- scripting -------------------------------------------------------

    def add_agent(self, agent_id, name, email) -> dict:
        with self.lock:
            self.agents[agent_id] = {"id": agent_id, "name": name, "email": email}
            return self.agents[agent_id]

    def agent_by_email(self, email) -> dict | None:
        with self.lock:
            return next((a for a in self.agents.values() if a["email"] == email), None)

    # ---- answering -------------------------------------------------------

    def _error(self, req, status, problem, answer=None):
        """4xx: ``problem`` goes to violations, ``answer`` (default the problem) to the engine."""
        req.problems.append(problem)
        return status, {"error": answer or problem}, {}

    def _dispatch(self, req):
        want = f"Chatra.Simple {self.public_key}:{self.secret_key}"
        if req.header("Authorization") != want:
            # the answer does not repeat the header: it would put the key in a dead letter's reason
            return self._error(req, 401, f"Authorization is {req.header('Authorization')!r}, expected {want!r}",
                               "wrong or missing API keys")
        if req.method != "POST":
            return self._error(req, 405, f"method {req.method}, expected POST")
        if req.path not in ("/messages/", "/pushedMessages/"):
            return self._error(req, 404, f"no such call: POST {req.path} (Chatra's paths end with a slash)")
        if req.content_type != "application/json" or req.json_error is not None or not isinstance(req.json, dict):
            return self._error(req, 400, f"the body must be a JSON object, got {req.raw[:200]!r}")
        with self.lock:
            if req.path == "/messages/":
                return self._message(req, req.json)
            return self._pushed(req, req.json)

    def _common(self, b, allowed) -> list[str]:
        p = [f"{k} is not a field of this call" for k in sorted(b) if k not in allowed]
        if not _nonempty_str(b.get("clientId")):
            p.append(f"clientId is {b.get('clientId')!r}, expected a non-empty string")
        elif b["clientId"] not in self.chats:
            p.append(f"no client {b['clientId']!r} (none wrote in a chat)")
        text = b.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT:
            p.append(f"text must be 1-{MAX_TEXT} characters, got {len(text) if isinstance(text, str) else text!r}")
        return p

    def _message(self, req, b):
        p = self._common(b, ("clientId", "text", "agentId", "agentEmail", "agentName", "receivedFrom"))
        if "agentId" in b:
            if any(k in b for k in ("agentEmail", "agentName", "receivedFrom")):
                p.append("agentId goes alone: not with agentEmail, agentName or receivedFrom")
            if b["agentId"] not in self.agents:
                p.append(f"no agent with id {b['agentId']!r}")
        elif "agentEmail" in b:
            if not (_nonempty_str(b.get("agentEmail")) and "@" in b["agentEmail"]):
                p.append(f"agentEmail is {b.get('agentEmail')!r}, expected an email")
            if not _nonempty_str(b.get("agentName")):
                p.append(f"agentName is {b.get('agentName')!r}, required with agentEmail")
            if "receivedFrom" in b and not _nonempty_str(b["receivedFrom"]):
                p.append(f"receivedFrom is {b['receivedFrom']!r}, expected a non-empty string")
        else:
            p.append("the agent is missing: agentId, or agentEmail and agentName")
        if p:
            req.problems.extend(p)
            return 400, {"error": "; ".join(p)}, {}
        if "agentId" in b:
            agent = self.agents[b["agentId"]]
        else:
            agent = self.agent_by_email(b["agentEmail"]) or self.add_agent(
                f"agent-{next(_ids)}", b["agentName"], b["agentEmail"])
        m = self._new_message(b["clientId"], "agent", b["text"], agent, b.get("receivedFrom"))
        self.sent.append(dict(b, agent=agent["id"]))
        return 200, {"id": m.get("id") or f"m-{next(_ids)}"}, {}

    def _pushed(self, req, b):
        p = self._common(b, ("clientId", "text", "agentId", "groupId"))
        if "agentId" in b and b["agentId"] not in self.agents:
            p.append(f"no agent with id {b['agentId']!r}")
        if "groupId" in b and not _nonempty_str(b["groupId"]):
            p.append(f"groupId is {b['groupId']!r}, expected a non-empty string")
        if p:
            req.problems.extend(p)
            return 400, {"error": "; ".join(p)}, {}
        self.pushed.append(dict(b))
        return 200, {"id": f"p-{next(_ids)}"}, {}

    # ---- inspection ------------------------------------------------------

    def sent_to(self, client_id) -> list[dict]:
        with self.lock:
            return [dict(b) for b in self.sent if b["clientId"] == client_id]

    def wait_sent(self, client_id, n=1, timeout=15.0) -> list[dict]:
        return wait_until(lambda: (lambda s: s if len(s) >= n else None)(self.sent_to(client_id)), timeout=timeout,
                          message=f"{n} POST /messages/ for client {client_id} at Chatra (so far: "
                                  f"{self.sent_to(client_id)!r}; violations: {self.violations!r})")

    # ---- acting as Chatra ------------------------------------------------

    def _new_message(self, client_id, kind, text, agent=None, received_from=None) -> dict:
        chat = self.chats[client_id]
        m = {"type": kind, "message": text}
        if self.message_ids:
            m["id"] = f"msg-{next(_ids)}"
        if self.timestamps:
            # milliseconds, one apart at least: two messages are never at the same time
            self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
            m["timestamp"] = self._last_ms
        if agent is not None:
            m["agentId"] = agent["id"]
            chat.agents[agent["id"]] = {"id": agent["id"], "name": agent["name"]}
        if received_from is not None:
            m["receivedFrom"] = received_from
        chat.messages.append(m)
        return m

    def start_chat(self, client_id, text=None, group_id=None, name="Peter", **client) -> Response:
        """A client opens the widget and writes: chatStarted with the first message.
        ``client``: more fields of the client object (``email``, ``phone``, ``info`` ...)."""
        c = {"id": client_id, "displayedName": name, **client}
        if group_id is not None:
            c["groupId"] = group_id
        with self.lock:
            self.chats[client_id] = Chat(c)
            if text is not None:
                self._new_message(client_id, "client", text)
        return self._post("chatStarted", client_id)

    def client_says(self, client_id, text):
        with self.lock:
            self._new_message(client_id, "client", text)

    def agent_types(self, client_id, text, agent_id):
        """An agent writes in Chatra's own interface."""
        with self.lock:
            self._new_message(client_id, "agent", text, self.agents[agent_id])

    def fragment(self, client_id) -> Response:
        """chatFragment: the messages no webhook carried yet."""
        return self._post("chatFragment", client_id)

    def transcript(self, client_id) -> Response:
        """chatTranscript: the whole chat, which ends."""
        return self._post("chatTranscript", client_id)

    def event(self, client_id, event_name):
        """The body of the event Chatra would post now (nothing is marked posted)."""
        with self.lock:
            chat = self.chats[client_id]
            messages = chat.messages if event_name == "chatTranscript" else chat.messages[chat.posted:]
            return {"eventName": event_name, "client": json.loads(json.dumps(chat.client)),
                    "agents": list(chat.agents.values()), "messages": [dict(m) for m in messages]}

    def repost_last(self, client_id) -> Response:
        """The last event posted for this client, again (Chatra retrying it)."""
        with self.lock:
            body = self.chats[client_id].last_event
        assert body is not None, f"no event was posted for {client_id}"
        return self.post_event(body)

    def _post(self, event_name, client_id) -> Response:
        body = self.event(client_id, event_name)
        resp = self.post_event(body)
        if resp.status == 200:
            with self.lock:
                chat = self.chats[client_id]
                chat.last_event = body
                chat.posted = len(chat.messages)
                if event_name == "chatTranscript":
                    chat.messages, chat.posted, chat.agents = [], 0, {}
        return resp

    def post_event(self, body, raw=None, url=None, timeout=30) -> Response:
        """POST an event (a dict, or ``raw`` bytes) to the engine."""
        url = url or self.engine_url
        assert url, "engine_url is not set"
        parts = urllib.parse.urlsplit(url)
        data = raw if raw is not None else json.dumps(body).encode()
        return http_request(parts.hostname, parts.port or 80, "POST", parts.path, body=data,
                            headers={"Content-Type": "application/json"}, timeout=timeout)


__all__ = ["FakeChatra"]
