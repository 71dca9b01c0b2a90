"""A strict fake of Acme Chat, the made-up platform of
docs/writing-an-adapter.md: what its API takes, and the events it signs.

- ``PUT /v1/webhook`` ``{"url", "secret"}`` (``Authorization: Bearer
  <token>``): where Acme posts events; kept in ``webhook``.
- ``POST /v1/chats/<chat_id>/messages`` ``{"text"}`` (1-2000 characters, no
  other field): answered 201 ``{"id"}``; kept in ``messages``.

Anything else is answered 4xx ``{"error": {"message"}}`` and noted in
``violations``. ``sign(secret, body, ts)`` makes the headers Acme sends with
an event.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import urllib.parse

from fakes import JsonFake


class FakeAcme(JsonFake):
    name = "acme"

    def __init__(self, token="acme-api-token"):
        self.token = token
        self.webhook = None
        self.messages = []  # (chat_id, text), in order
        self._ids = itertools.count(1)
        super().__init__()

    def _error(self, req, status, message):
        req.problems.append(message)
        return status, {"error": {"message": message}}, {}

    def _dispatch(self, req):
        if req.header("Authorization") != f"Bearer {self.token}":
            return self._error(req, 401, "wrong or missing API token")
        if req.content_type != "application/json" or not isinstance(req.json, dict):
            return self._error(req, 400, "the body must be a JSON object")
        parts = req.path.split("/")
        if req.method == "PUT" and req.path == "/v1/webhook":
            url, secret = req.json.get("url"), req.json.get("secret")
            if urllib.parse.urlsplit(url or "").scheme not in ("http", "https") or not isinstance(secret, str):
                return self._error(req, 400, "url (an http(s) URL) and secret (a string) are required")
            with self.lock:
                self.webhook = {"url": url, "secret": secret}
            return 200, {"ok": True}, {}
        if req.method == "POST" and len(parts) == 5 and parts[1:3] == ["v1", "chats"] and parts[4] == "messages":
            text = req.json.get("text")
            if set(req.json) != {"text"} or not isinstance(text, str) or not 1 <= len(text) <= 2000:
                return self._error(req, 400, "text must be 1-2000 characters, and the only field")
            with self.lock:
                self.messages.append((urllib.parse.unquote(parts[3]), text))
            return 201, {"id": f"m-{next(self._ids)}"}, {}
        return self._error(req, 404, f"no such call: {req.method} {req.path}")

    @staticmethod
    def sign(secret, body: bytes, ts: str) -> dict:
        mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        return {"X-Acme-Timestamp": ts, "X-Acme-Signature": "sha256=" + mac}
