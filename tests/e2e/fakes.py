"""Strict local fakes for the conversation layer's end-to-end tests.

Each fake is an HTTP server on 127.0.0.1 (a ThreadingHTTPServer on port 0,
served from a daemon thread, HTTP/1.1 with keep-alive) that records every
request it gets: arrival time, method, path, headers, raw body and the body
parsed as JSON. A fake checks what the spec or the platform documentation
promises about the request; a request that breaks a promise is answered
with a 4xx and noted in ``violations``, which the tests assert to be empty.

- ``CallbackReceiver``: the webhook channel's ``callback_url``
  (docs/providers/webhook.md), with scripted failures.
- ``FakeBot``: an external bot (``type = "http"``, docs/conversations.md,
  "Bots"), answering with configurable replies.
- ``FakeTelegram``: the Telegram Bot API subset of
  shared/providers/platforms.md section 6 (sendMessage,
  answerCallbackQuery, setWebhook), plus builders of ``Update`` payloads.

Only the Python standard library is used.
"""

from __future__ import annotations

import collections
import email.utils
import http.server
import itertools
import json
import threading
import time
import urllib.parse

from conftest import wait_until


# --------------------------------------------------------------------------
# recording and scripting
# --------------------------------------------------------------------------


class Request:
    """One request as a fake saw it."""

    def __init__(self, t, wall, method, path, headers, raw):
        self.t = t  # time.monotonic() at arrival
        self.wall = wall  # time.time() at arrival
        self.method = method
        self.raw_path = path
        parts = urllib.parse.urlsplit(path)
        self.path = parts.path
        self.query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        self.headers = headers  # email.message.Message: case-insensitive .get()
        self.raw = raw
        self.json = None
        self.json_error = None
        if raw:
            try:
                self.json = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                self.json_error = str(exc)
        self.status = None  # the status the fake answered with
        self.problems = []  # what the fake found wrong with the request

    def header(self, name, default=None):
        return self.headers.get(name, default)

    @property
    def content_type(self):
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    @property
    def idempotency_key(self):
        return self.headers.get("Idempotency-Key")

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300

    def __repr__(self):
        return f"<Request {self.method} {self.raw_path} -> {self.status} {self.raw[:160]!r}>"


def post_json_problems(req, expected_path) -> list[str]:
    """What is wrong with ``req`` as a JSON POST to ``expected_path``."""
    p = []
    if req.method != "POST":
        p.append(f"method {req.method}, expected POST")
    if req.path != expected_path:
        p.append(f"path {req.path!r}, expected {expected_path!r}")
    if req.content_type != "application/json":
        p.append(f"Content-Type {req.header('Content-Type')!r}, expected application/json")
    return p


class Scripted:
    """A scripted answer used for the next ``times`` matching requests
    (``times=None``: for ever)."""

    def __init__(self, status, headers=None, body=None, times=1, match=None, delay=0.0):
        self.status = status
        self.delay = delay
        self.headers = headers if callable(headers) else dict(headers or {})
        self.body = body
        self.times = times
        self.match = match

    def take(self, req) -> bool:
        if self.match is not None and not self.match(req):
            return False
        if self.times is not None:
            if self.times <= 0:
                return False
            self.times -= 1
        return True

    def answer(self, req):
        """(status, body, headers); ``headers`` may be a function of the request."""
        if self.delay:
            time.sleep(self.delay)  # called outside the fake's lock
        headers = self.headers(req) if callable(self.headers) else self.headers
        return self.status, self.body, headers


def _read_body(handler) -> bytes:
    te = (handler.headers.get("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        chunks = []
        while True:
            line = handler.rfile.readline()
            if not line:
                break
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # trailers up to the empty line
                while True:
                    trailer = handler.rfile.readline()
                    if not trailer or trailer in (b"\r\n", b"\n"):
                        break
                break
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()  # CRLF after the chunk
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class JsonFake:
    """Base: a recording HTTP server; subclasses implement ``respond``.

    ``respond(req)`` returns ``(status, body, headers)`` where ``body`` is a
    dict/list (sent as JSON), bytes/str, or None.
    """

    name = "fake"

    def __init__(self, port=0):
        self.closed = False
        self.requests: list[Request] = []
        self.violations: list[tuple[Request, list[str]]] = []
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.delay = 0.0
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                raw = _read_body(self)
                req = Request(time.monotonic(), time.time(), self.command, self.path, self.headers, raw)
                with fake.lock:
                    fake.requests.append(req)  # in arrival order; .status is set once answered
                try:
                    if fake.delay:
                        time.sleep(fake.delay)
                    status, body, headers = fake._dispatch(req)
                except Exception as exc:  # noqa: BLE001 - a fake bug must be visible
                    req.problems.append(f"fake raised {exc!r}")
                    status, body, headers = 500, {"error": f"fake raised {exc!r}"}, {}
                if isinstance(body, (dict, list)):
                    data = json.dumps(body).encode()
                    headers = {"Content-Type": "application/json", **(headers or {})}
                elif isinstance(body, str):
                    data = body.encode()
                else:
                    data = body or b""
                if status in (204, 304) or 100 <= status < 200:
                    data = b""  # no body allowed
                    headers = {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}
                with fake.lock:
                    req.status = status
                    if req.problems:
                        fake.violations.append((req, list(req.problems)))
                    fake.changed.notify_all()
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, str(v))
                    if status not in (204, 304):
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    self.wfile.flush()
                except OSError:
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"{self.name}-{self.port}", daemon=True)
        self._thread.start()

    def _dispatch(self, req):
        return self.respond(req)

    def respond(self, req):  # pragma: no cover - abstract
        raise NotImplementedError

    def _pick(self, req, script, always=None):
        """The first scripted answer that takes this request, else ``always``."""
        with self.lock:
            for s in script:
                if s.take(req):
                    return s
            return always

    # ---- inspection ------------------------------------------------------

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def wait_for(self, predicate, timeout=15.0, message=None):
        """Poll until ``predicate(snapshot)`` is truthy; return its value."""
        return wait_until(
            lambda: predicate(self.snapshot()),
            timeout=timeout,
            message=message or f"condition on {self.name} requests (so far: {self.snapshot()[-5:]!r})",
        )

    def wait_for_requests(self, n=1, timeout=15.0):
        return self.wait_for(lambda reqs: reqs if len(reqs) >= n else None, timeout=timeout,
                             message=f"{n} request(s) at {self.name}")

    def assert_no_violations(self):
        with self.lock:
            bad = list(self.violations)
        assert not bad, f"{self.name} got requests that break the contract: " + "; ".join(
            f"{r!r}: {probs}" for r, probs in bad
        )

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.server.shutdown()
        self.server.server_close()


def _check_bearer(req, secret, problems):
    if secret is None:
        return True
    got = req.header("Authorization")
    if got != f"Bearer {secret}":
        problems.append(f"Authorization is {got!r}, expected 'Bearer {secret}'")
        return False
    return True


def _is_str(v):
    return isinstance(v, str)


# --------------------------------------------------------------------------
# the webhook channel's callback
# --------------------------------------------------------------------------


class CallbackReceiver(JsonFake):
    """The webhook channel's ``callback_url``.

    Every request must be ``POST`` with ``Content-Type: application/json``,
    an ``Idempotency-Key`` header (and ``Authorization: Bearer <secret>``
    when ``secret`` is given) and the body
    ``{"conversation_id","client_id","message":{"id","author":{"kind","name"},"text",...}}``.
    A request that breaks this gets 400 (a 401 for a wrong secret) and is
    noted in ``violations``.

    Scripted failures apply to valid requests, first match first:
    ``fail_first(n, status)``, ``retry_after_once(value)``,
    ``always_fail(status)``, ``fail_when(predicate, status, times)``;
    ``heal()`` drops them all. Otherwise the answer is 200 ``{"ok": true}``.
    """

    name = "callback"

    def __init__(self, secret=None, path="/callback", port=0):
        self.secret = secret
        self.expected_path = path
        self.script: list[Scripted] = []
        self.always: Scripted | None = None
        super().__init__(port)
        self.callback_url = self.url + path

    # ---- scripting -------------------------------------------------------

    def fail_first(self, n, status=500, headers=None):
        with self.lock:
            self.script.append(Scripted(status, headers, {"error": f"scripted {status}"}, times=n))
        return self

    def stall_first(self, n, seconds, status=200):
        """Answer the next ``n`` requests only after ``seconds``."""
        with self.lock:
            self.script.append(Scripted(status, None, {"ok": True}, times=n, delay=seconds))
        return self

    def retry_after_once(self, value, status=429):
        """One ``status`` answer with ``Retry-After: value``; ``value`` may be
        a function of the request (e.g. to compute an HTTP date then)."""
        headers = (lambda req: {"Retry-After": str(value(req))}) if callable(value) else {"Retry-After": str(value)}
        return self.fail_first(1, status, headers=headers)

    def fail_when(self, predicate, status=500, times=1, headers=None):
        with self.lock:
            self.script.append(Scripted(status, headers, {"error": f"scripted {status}"}, times=times, match=predicate))
        return self

    def always_fail(self, status=500, headers=None):
        with self.lock:
            self.always = Scripted(status, headers, {"error": f"scripted {status}"}, times=None)
        return self

    def always_answer(self, status, headers=None, body=None):
        """Answer every valid request with ``status`` (e.g. another 2xx)."""
        with self.lock:
            self.always = Scripted(status, headers, body if body is not None else {"ok": True}, times=None)
        return self

    def heal(self):
        with self.lock:
            self.script.clear()
            self.always = None
        return self

    # ---- answering -------------------------------------------------------

    def validate(self, req) -> list[str]:
        p = []
        p.extend(post_json_problems(req, self.expected_path))
        if not req.idempotency_key:
            p.append("no Idempotency-Key header")
        body = req.json
        if req.json_error is not None or not isinstance(body, dict):
            p.append(f"body is not a JSON object: {req.raw[:200]!r} ({req.json_error})")
            return p
        for k in ("conversation_id", "client_id"):
            if not _is_str(body.get(k)) or not body.get(k):
                p.append(f"{k} is {body.get(k)!r}, expected a non-empty string")
        msg = body.get("message")
        if not isinstance(msg, dict):
            p.append(f"message is {msg!r}, expected an object")
            return p
        if not _is_str(msg.get("id")) or not msg.get("id"):
            p.append(f"message.id is {msg.get('id')!r}, expected a non-empty string")
        author = msg.get("author")
        if not isinstance(author, dict):
            p.append(f"message.author is {author!r}, expected an object")
        else:
            if author.get("kind") not in ("bot", "agent", "system"):
                p.append(f"message.author.kind is {author.get('kind')!r}, expected bot|agent|system")
            if "name" in author and author["name"] is not None and not _is_str(author["name"]):
                p.append(f"message.author.name is {author['name']!r}, expected a string")
        attachments = msg.get("attachments", [])
        if not isinstance(attachments, list) or not all(isinstance(a, dict) and _is_str(a.get("url")) for a in attachments):
            p.append(f"message.attachments is {attachments!r}, expected [{{url, name?, type?}}]")
            attachments = []
        text = msg.get("text")
        if not (_is_str(text) or (text is None and attachments)):
            p.append(f"message.text is {text!r}, expected a string")
        buttons = msg.get("buttons", [])
        if not isinstance(buttons, list) or not all(isinstance(b, dict) and _is_str(b.get("text")) for b in buttons):
            p.append(f"message.buttons is {buttons!r}, expected [{{text, payload?}}]")
        return p

    def _dispatch(self, req):
        problems = []
        if not _check_bearer(req, self.secret, problems):
            req.problems.extend(problems)
            return 401, {"error": "unauthorized"}, {}
        req.problems.extend(self.validate(req))
        if req.problems:
            return 400, {"error": "; ".join(req.problems)}, {}
        picked = self._pick(req, self.script, self.always)
        if picked is not None:
            return picked.answer(req)
        return 200, {"ok": True}, {}

    # ---- inspection ------------------------------------------------------

    def attempts(self) -> list[Request]:
        """Every valid request answered so far, in arrival order (failed ones included)."""
        return [r for r in self.snapshot() if r.status is not None and not r.problems]

    def accepted(self) -> list[Request]:
        """The requests answered with a 2xx, in arrival order."""
        return [r for r in self.snapshot() if r.ok]

    def accepted_messages(self) -> list[dict]:
        """The bodies' ``message`` objects of accepted requests, in order."""
        return [r.json["message"] for r in self.accepted()]

    def accepted_texts(self) -> list[str]:
        return [m.get("text") for m in self.accepted_messages()]

    def accepted_count_by_message_id(self) -> collections.Counter:
        return collections.Counter(r.json["message"]["id"] for r in self.accepted())

    def attempts_for(self, message_id) -> list[Request]:
        return [r for r in self.attempts() if r.json["message"]["id"] == message_id]

    def wait_for_accepted(self, n=1, timeout=15.0) -> list[Request]:
        def pred():
            acc = self.accepted()
            return acc if len(acc) >= n else None

        return wait_until(pred, timeout=timeout,
                          message=f"{n} accepted callback(s) (accepted so far: {self.accepted_texts()!r}; "
                                  f"violations: {self.violations!r})")

    def wait_for_text(self, text, timeout=15.0) -> dict:
        def pred():
            for m in self.accepted_messages():
                if m.get("text") == text:
                    return m
            return None

        return wait_until(pred, timeout=timeout,
                          message=f"callback message with text {text!r} (accepted so far: {self.accepted_texts()!r}; "
                                  f"violations: {self.violations!r})")

    def wait_for_texts(self, texts, timeout=15.0) -> list[dict]:
        """Wait until every text in ``texts`` was accepted at least once."""
        want = set(texts)
        deadline = time.monotonic() + timeout
        while True:
            got = set(self.accepted_texts())
            if want <= got:
                return self.accepted_messages()
            if time.monotonic() >= deadline:
                missing = sorted(want - got)
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {len(missing)} callback text(s), e.g. {missing[:10]!r}; "
                    f"accepted {len(self.accepted())}, attempts {len(self.attempts())}, "
                    f"violations {self.violations[:3]!r}"
                )
            time.sleep(0.05)


# --------------------------------------------------------------------------
# an external bot
# --------------------------------------------------------------------------


def echo_replies(body):
    """The default bot: one text reply ``you said: <text>``."""
    return {"replies": [{"type": "text", "text": f"you said: {body.get('text')}"}]}


class FakeBot(JsonFake):
    """An external bot (``type = "http"``).

    Checks ``POST``, JSON, the ``Authorization: Bearer <secret>`` header when
    ``secret`` is set, and the body
    ``{"conversation_id","client_id","channel","text","client","event":"message","message_id"}``.
    ``reply`` is a function of the parsed body returning the response body
    (a dict such as ``{"replies": [...]}``, a list, or None for an empty
    body); the default echoes ``you said: <text>``. Scripted failures as in
    ``CallbackReceiver`` (``fail_first``, ``always_fail``, ``heal``).
    """

    name = "bot"

    def __init__(self, secret=None, reply=echo_replies, path="/bot", port=0):
        self.secret = secret
        self.reply = reply
        self.expected_path = path
        self.script: list[Scripted] = []
        self.always: Scripted | None = None
        super().__init__(port)
        self.bot_url = self.url + path

    def fail_first(self, n, status=500, headers=None):
        with self.lock:
            self.script.append(Scripted(status, headers, {"error": f"scripted {status}"}, times=n))
        return self

    def always_fail(self, status=500):
        with self.lock:
            self.always = Scripted(status, None, {"error": f"scripted {status}"}, times=None)
        return self

    def heal(self):
        with self.lock:
            self.script.clear()
            self.always = None
        return self

    def validate(self, req) -> list[str]:
        p = []
        p.extend(post_json_problems(req, self.expected_path))
        body = req.json
        if req.json_error is not None or not isinstance(body, dict):
            p.append(f"body is not a JSON object: {req.raw[:200]!r}")
            return p
        for k in ("conversation_id", "client_id", "channel", "text", "message_id"):
            if not _is_str(body.get(k)):
                p.append(f"{k} is {body.get(k)!r}, expected a string")
        if body.get("event") != "message":
            p.append(f"event is {body.get('event')!r}, expected 'message'")
        if "client" in body and not isinstance(body["client"], dict):
            p.append(f"client is {body['client']!r}, expected an object")
        return p

    def _dispatch(self, req):
        problems = []
        if not _check_bearer(req, self.secret, problems):
            req.problems.extend(problems)
            return 401, {"error": "unauthorized"}, {}
        req.problems.extend(self.validate(req))
        if req.problems:
            return 400, {"error": "; ".join(req.problems)}, {}
        picked = self._pick(req, self.script, self.always)
        if picked is not None:
            return picked.answer(req)
        body = self.reply(req.json)
        return 200, body, {}

    def calls(self) -> list[Request]:
        """Valid calls answered so far, in arrival order."""
        return [r for r in self.snapshot() if r.status is not None and not r.problems]

    def texts(self) -> list[str]:
        return [r.json["text"] for r in self.calls()]


# --------------------------------------------------------------------------
# Telegram Bot API
# --------------------------------------------------------------------------


TELEGRAM_TEXT_MAX = 4096
TELEGRAM_CALLBACK_DATA_MAX = 64  # bytes


class FakeTelegram(JsonFake):
    """The Telegram Bot API subset of platforms.md section 6.

    ``POST|GET /bot<token>/<method>``; parameters from the query string, a
    form body or a JSON body. Implemented methods: ``sendMessage``
    (``chat_id``, ``text`` 1-4096 characters, optional ``reply_markup``
    with ``inline_keyboard`` rows of ``{text, callback_data (1-64 bytes)}``)
    -> the sent Message with a fresh ``message_id``; ``answerCallbackQuery``
    (``callback_query_id``) -> ``true``; ``setWebhook`` (``url``: ``https://``
    on port 443, 80, 88 or 8443, or ``""`` to remove it; ``secret_token``
    1-256 characters of ``A-Z a-z 0-9 _ -``; optional ``allowed_updates``, a
    list of update type names, ``max_connections`` 1-100,
    ``drop_pending_updates``) -> ``true``, the webhook kept in ``webhook``
    (``{"url", "secret_token", "allowed_updates"}``). A wrong token is 401
    ``Unauthorized``, an unknown method 404 ``Not Found``, bad parameters 400
    ``Bad Request: ...``, always as ``{"ok": false, "error_code", "description"}``.

    ``fail_first(n, error_code, description, retry_after=None)`` scripts
    API errors for the next ``n`` valid calls of ``method``.
    """

    name = "telegram"

    def __init__(self, token="123456:TEST-token", bot_id=987654321, bot_username="switchboard_test_bot", port=0):
        self.token = token
        self.bot_id = bot_id
        self.bot_username = bot_username
        self._message_ids = itertools.count(5001)
        self.script: dict[str, list[Scripted]] = collections.defaultdict(list)
        self.webhook: dict | None = None
        super().__init__(port)
        self.api_base = self.url

    # ---- scripting -------------------------------------------------------

    def fail_first(self, n, error_code=500, description="Internal Server Error", method="sendMessage",
                   retry_after=None):
        body = {"ok": False, "error_code": error_code, "description": description}
        if retry_after is not None:
            body["parameters"] = {"retry_after": retry_after}
        with self.lock:
            self.script[method].append(Scripted(error_code, None, body, times=n))
        return self

    # ---- answering -------------------------------------------------------

    @staticmethod
    def _error(code, description):
        return code, {"ok": False, "error_code": code, "description": description}, {}

    def _params(self, req):
        params = dict(req.query)
        if req.raw:
            ct = req.content_type
            if ct == "application/json":
                if req.json_error is not None or not isinstance(req.json, dict):
                    return None, "Bad Request: can't parse JSON object"
                params.update(req.json)
            elif ct == "application/x-www-form-urlencoded":
                params.update(urllib.parse.parse_qsl(req.raw.decode("utf-8", "replace"), keep_blank_values=True))
            else:
                return None, f"Bad Request: unsupported Content-Type {ct!r}"
        return params, None

    def _dispatch(self, req):
        parts = req.path.split("/")
        # "", "bot<token>", "<method>"
        if len(parts) != 3 or not parts[1].startswith("bot"):
            req.problems.append(f"path {req.path!r} is not /bot<token>/<method>")
            return self._error(404, "Not Found")
        token, method = parts[1][3:], parts[2]
        if token != self.token:
            req.problems.append(f"token {token!r}, expected {self.token!r}")
            return self._error(401, "Unauthorized")
        if req.method not in ("GET", "POST"):
            req.problems.append(f"method {req.method}")
            return self._error(404, "Not Found")
        handler = {"sendMessage": self._send_message, "answerCallbackQuery": self._answer_callback_query,
                   "setWebhook": self._set_webhook}.get(method)
        if handler is None:
            req.problems.append(f"unknown method {method!r}")
            return self._error(404, "Not Found")
        params, err = self._params(req)
        if err:
            req.problems.append(err)
            return self._error(400, err)
        req.params = params
        req.api_method = method
        problem = handler(req, params, check_only=True)
        if problem:
            req.problems.append(problem)
            return self._error(400, problem)
        picked = self._pick(req, self.script[method])
        if picked is not None:
            return picked.answer(req)
        return handler(req, params, check_only=False)

    def _send_message(self, req, params, check_only):
        if check_only:
            chat_id = params.get("chat_id")
            if chat_id is None or chat_id == "":
                return "Bad Request: chat_id is empty"
            if isinstance(chat_id, bool) or not isinstance(chat_id, (int, str)):
                return f"Bad Request: chat_id must be an integer or a string, got {chat_id!r}"
            if isinstance(chat_id, str) and not (chat_id.lstrip("-").isdigit() or chat_id.startswith("@")):
                return "Bad Request: chat not found"
            text = params.get("text")
            if not isinstance(text, str) or not text.strip():
                return "Bad Request: message text is empty"
            if len(text) > TELEGRAM_TEXT_MAX:
                return "Bad Request: message is too long"
            if "parse_mode" in params and params["parse_mode"] not in ("HTML", "MarkdownV2", "Markdown"):
                return f"Bad Request: unsupported parse_mode {params['parse_mode']!r}"
            if "reply_markup" in params:
                return self._check_reply_markup(params["reply_markup"])
            return None
        chat_id = params["chat_id"]
        mid = next(self._message_ids)
        req.result_message_id = mid
        try:
            chat_id_val = int(chat_id)
        except (TypeError, ValueError):
            chat_id_val = chat_id
        result = {
            "message_id": mid,
            "from": {"id": self.bot_id, "is_bot": True, "first_name": "Switchboard", "username": self.bot_username},
            "chat": {"id": chat_id_val, "type": "private"},
            "date": int(time.time()),
            "text": params["text"],
        }
        if "reply_markup" in params:
            markup = params["reply_markup"]
            result["reply_markup"] = json.loads(markup) if isinstance(markup, str) else markup
        return 200, {"ok": True, "result": result}, {}

    @staticmethod
    def _check_reply_markup(markup):
        if isinstance(markup, str):  # form/query parameters carry JSON-serialized objects
            try:
                markup = json.loads(markup)
            except ValueError:
                return "Bad Request: can't parse reply keyboard markup JSON object"
        if not isinstance(markup, dict):
            return "Bad Request: reply_markup must be an object"
        if "inline_keyboard" not in markup:
            return None  # other keyboards are not part of this fake's checks
        kb = markup["inline_keyboard"]
        if not isinstance(kb, list):
            return "Bad Request: field \"inline_keyboard\" must be an Array"
        for row in kb:
            if not isinstance(row, list):
                return "Bad Request: field \"inline_keyboard\" must be an Array of Arrays"
            for button in row:
                if not isinstance(button, dict) or not isinstance(button.get("text"), str) or not button["text"]:
                    return "Bad Request: inline keyboard button text must be a non-empty string"
                actions = [k for k in ("callback_data", "url") if k in button]
                if len(actions) != 1:
                    return "Bad Request: inline keyboard button must have exactly one of callback_data, url"
                data = button.get("callback_data")
                if data is not None:
                    if not isinstance(data, str) or not 1 <= len(data.encode()) <= TELEGRAM_CALLBACK_DATA_MAX:
                        return "Bad Request: BUTTON_DATA_INVALID"
        return None

    def _answer_callback_query(self, req, params, check_only):
        if check_only:
            qid = params.get("callback_query_id")
            if not isinstance(qid, str) or not qid:
                return "Bad Request: query_id is empty"  # wording is ours
            return None
        return 200, {"ok": True, "result": True}, {}

    _WEBHOOK_PORTS = (443, 80, 88, 8443)
    _UPDATE_TYPES = {"message", "edited_message", "channel_post", "edited_channel_post", "business_connection",
                     "business_message", "edited_business_message", "deleted_business_messages",
                     "message_reaction", "message_reaction_count", "inline_query", "chosen_inline_result",
                     "callback_query", "shipping_query", "pre_checkout_query", "purchased_paid_media", "poll",
                     "poll_answer", "my_chat_member", "chat_member", "chat_join_request", "chat_boost",
                     "removed_chat_boost"}

    def _set_webhook(self, req, params, check_only):
        if check_only:
            url = params.get("url")
            if not isinstance(url, str):
                return "Bad Request: url must be a string"   # wording is ours
            if url != "":
                parts = urllib.parse.urlsplit(url)
                if parts.scheme != "https" or not parts.hostname:
                    return "Bad Request: bad webhook: HTTPS url must be provided for webhook"
                if (parts.port or 443) not in self._WEBHOOK_PORTS:
                    return "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443"
            secret = params.get("secret_token")
            if secret is not None:
                if (not isinstance(secret, str) or not 1 <= len(secret) <= 256
                        or not all(c.isascii() and (c.isalnum() or c in "_-") for c in secret)):
                    return "Bad Request: secret token contains unallowed characters"   # wording is ours
            allowed = params.get("allowed_updates")
            if isinstance(allowed, str):  # form/query parameters carry JSON-serialized arrays
                try:
                    allowed = json.loads(allowed)
                except ValueError:
                    return "Bad Request: can't parse allowed updates JSON array"
            if allowed is not None and (not isinstance(allowed, list)
                                        or not all(isinstance(u, str) and u in self._UPDATE_TYPES for u in allowed)):
                return f"Bad Request: allowed_updates must be a list of update types, got {allowed!r}"
            mc = params.get("max_connections")
            if mc is not None and (isinstance(mc, bool) or not isinstance(mc, int) or not 1 <= mc <= 100):
                return "Bad Request: max_connections must be 1-100"
            return None
        with self.lock:
            self.webhook = {"url": params["url"], "secret_token": params.get("secret_token"),
                            "allowed_updates": params.get("allowed_updates")} if params["url"] else None
        return 200, {"ok": True, "result": True, "description": "Webhook was set"}, {}

    # ---- inspection ------------------------------------------------------

    def calls(self, method=None) -> list[Request]:
        """Valid API calls (answered or failed by script), in order."""
        out = []
        for r in self.snapshot():
            if r.status is None or r.problems or not hasattr(r, "api_method"):
                continue
            if method is None or r.api_method == method:
                out.append(r)
        return out

    def sent_messages(self) -> list[Request]:
        """Successful sendMessage calls; ``.params`` and ``.result_message_id`` set."""
        return [r for r in self.calls("sendMessage") if r.ok]

    def wait_for_sent(self, n=1, timeout=15.0, text=None):
        def pred():
            sent = self.sent_messages()
            if text is not None:
                sent = [r for r in sent if r.params.get("text") == text]
            return sent if len(sent) >= n else None

        return wait_until(pred, timeout=timeout,
                          message=f"{n} sendMessage call(s){' with text ' + repr(text) if text else ''} "
                                  f"(calls so far: {self.snapshot()[-5:]!r}; violations: {self.violations!r})")


_update_ids = itertools.count(700000)


def tg_user(user_id=1111111, first_name="Ivan", last_name=None, username="ivan", language_code="ru"):
    u = {"id": user_id, "is_bot": False, "first_name": first_name}
    if last_name:
        u["last_name"] = last_name
    if username:
        u["username"] = username
    if language_code:
        u["language_code"] = language_code
    return u


def tg_chat(user):
    chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
    if user.get("last_name"):
        chat["last_name"] = user["last_name"]
    if user.get("username"):
        chat["username"] = user["username"]
    return chat


def tg_text_update(text, user=None, update_id=None, message_id=None):
    """An Update with a text message from a private chat (platforms.md section 6)."""
    user = user or tg_user()
    uid = next(_update_ids) if update_id is None else update_id
    return {
        "update_id": uid,
        "message": {
            "message_id": message_id if message_id is not None else uid % 100000,
            "date": int(time.time()),
            "from": user,
            "chat": tg_chat(user),
            "text": text,
        },
    }


def tg_callback_update(data, user=None, update_id=None, query_id=None, message_id=4242, message_text="Pick one"):
    """An Update with a callback_query (an inline button press)."""
    user = user or tg_user()
    uid = next(_update_ids) if update_id is None else update_id
    return {
        "update_id": uid,
        "callback_query": {
            "id": query_id or f"cbq-{uid}",
            "from": user,
            "chat_instance": "-1234567890",
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "from": {"id": 987654321, "is_bot": True, "first_name": "Switchboard"},
                "chat": tg_chat(user),
                "text": message_text,
            },
            "data": data,
        },
    }


def http_date(epoch: float) -> str:
    """An IMF-fixdate (RFC 9110) for Retry-After."""
    return email.utils.formatdate(epoch, usegmt=True)
