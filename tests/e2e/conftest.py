"""End-to-end test helpers for the Switchboard daemon.

Every test gets its own working directory (pytest's ``tmp_path``) holding
its config file and Lua scripts; the daemon is started with that directory
as its cwd, on 127.0.0.1 and a free ephemeral port, and is stopped by PID
at the end of the test.

Run with::

    /usr/bin/python3 -m pytest tests/e2e -q

The binary defaults to ``<repo>/switchboard``; set ``SWITCHBOARD_BIN`` to
test another build.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("SWITCHBOARD_BIN", str(REPO_ROOT / "switchboard")))

ADMIN_TOKEN = "test-admin-token"
START_TIMEOUT = 10.0  # seconds to wait for /healthz after start
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL
REQUEST_TIMEOUT = 30.0


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.05, message="condition"):
    """Poll ``predicate`` until it returns a truthy value; return that value.

    Raises AssertionError after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last exception: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{extra}")
        time.sleep(interval)


def dedent(text: str) -> str:
    """Dedent a triple-quoted script and drop the first newline only."""
    text = textwrap.dedent(text)
    if text.startswith("\n"):
        text = text[1:]
    return text


def to_lua(value, indent=0) -> str:
    """Render a Python value as a Lua literal (dicts -> tables)."""
    pad = "  " * (indent + 1)
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are valid Lua escapes
    if isinstance(value, LuaExpr):
        return value.code
    if isinstance(value, dict):
        items = [f"{pad}[{json.dumps(str(k))}] = {to_lua(v, indent + 1)}," for k, v in value.items() if v is not None]
        return "{\n" + "\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, (list, tuple)):
        items = [f"{pad}{to_lua(v, indent + 1)}," for v in value]
        return "{\n" + "\n".join(items) + "\n" + "  " * indent + "}"
    raise TypeError(f"cannot render {value!r} as Lua")


class LuaExpr:
    """Raw Lua code to embed in a generated config (e.g. ``env("X")``)."""

    def __init__(self, code: str):
        self.code = code


_LOGFMT_PAIR = re.compile(r'([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_LOGFMT_LINE = re.compile(r'^[^\s="]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)(?: [^\s="]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]*))*$')
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def parse_logfmt(line: str) -> dict:
    rec = {}
    for m in _LOGFMT_PAIR.finditer(line):
        key, val = m.group(1), m.group(2)
        if val.startswith('"'):
            val = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), e.group(1)), val[1:-1])
        rec[key] = val
    return rec


def is_logfmt_line(line: str) -> bool:
    return bool(_LOGFMT_LINE.match(line))


_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$")
_METRIC_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict:
    """Prometheus text -> {(name, ((label, value), ...)): float}."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if not m:
            raise AssertionError(f"unparseable metrics line: {line!r}")
        name, labels_txt, value = m.group(1), m.group(3) or "", m.group(4)
        labels = tuple(sorted((k, v.replace('\\"', '"').replace("\\\\", "\\")) for k, v in _METRIC_LABEL.findall(labels_txt)))
        out[(name, labels)] = float(value)
    return out


class Response:
    def __init__(self, status: int, reason: str, headers, body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers  # http.client.HTTPMessage (case-insensitive .get)
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise AssertionError(f"response body is not JSON (status {self.status}): {self.body[:500]!r}") from exc

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "") or ""

    def __repr__(self):
        return f"<Response {self.status} {self.content_type!r} {self.body[:200]!r}>"


def http_request(host, port, method, path, body=None, headers=None, timeout=REQUEST_TIMEOUT) -> Response:
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.reason, resp.headers, data)
    finally:
        conn.close()


def assert_json_error(resp: Response, status: int, code: str | None = None) -> dict:
    """The spec's error shape: JSON {"error":{"code":...,"message":...}}."""
    assert resp.status == status, f"expected HTTP {status}, got {resp!r}"
    assert resp.content_type.split(";")[0].strip().lower() == "application/json", f"error Content-Type: {resp!r}"
    doc = resp.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), dict), f"error body shape: {doc!r}"
    err = doc["error"]
    assert isinstance(err.get("code"), str) and err["code"], f"error.code missing: {doc!r}"
    assert isinstance(err.get("message"), str), f"error.message missing: {doc!r}"
    if code is not None:
        assert err["code"] == code, f"expected error code {code!r}, got {doc!r}"
    return err


# --------------------------------------------------------------------------
# the daemon
# --------------------------------------------------------------------------


class Daemon:
    """One switchboard process living in its own directory."""

    def __init__(self, workdir: Path, binary: Path = BINARY):
        self.workdir = Path(workdir)
        self.binary = Path(binary)
        self.host = "127.0.0.1"
        self.port = None
        self.proc = None
        self.config_path = self.workdir / "switchboard.conf.lua"
        self.stderr_path = self.workdir / "daemon.stderr.log"
        self.stdout_path = self.workdir / "daemon.stdout.log"
        self.admin_token = ADMIN_TOKEN
        self._stderr_file = None
        self._stdout_file = None
        self.returncode = None

    # ---- files -----------------------------------------------------------

    def write_config(self, **keys):
        """Write the config file from Python values.

        Defaults: data_dir="./var", log={level="info"}, admin_token=ADMIN_TOKEN.
        Passing ``key=None`` removes a default. Use ``LuaExpr`` for raw Lua.
        """
        cfg = {"data_dir": "./var", "log": {"level": "info"}, "admin_token": ADMIN_TOKEN}
        cfg.update(keys)
        cfg = {k: v for k, v in cfg.items() if v is not None}
        self.admin_token = cfg.get("admin_token") if isinstance(cfg.get("admin_token"), str) else None
        self.write_config_raw("return " + to_lua(cfg) + "\n")

    def write_config_raw(self, text: str):
        self.config_path.write_text(text)

    def write_script(self, relpath: str, text: str, raw: bool = False):
        """Write a Lua file relative to the daemon's cwd (e.g. scripts/a.lua)."""
        path = self.workdir / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text if raw else dedent(text))
        return path

    def remove_script(self, relpath: str):
        (self.workdir / relpath).unlink()

    # ---- process ---------------------------------------------------------

    def start(self, args=None, env=None, wait=True, listen=True, preexec_fn=None):
        """``preexec_fn`` runs in the child before exec (e.g. to set rlimits)."""
        assert self.proc is None, "daemon already started"
        if not self.binary.exists():
            pytest.fail(f"switchboard binary not found at {self.binary} (run `make` first)")
        if not self.config_path.exists():
            self.write_config()
        self.port = free_port()
        argv = [str(self.binary), "-c", str(self.config_path)]
        if listen:
            argv += ["--listen", f"{self.host}:{self.port}"]
        argv += list(args or [])
        self._stderr_file = open(self.stderr_path, "ab")
        self._stdout_file = open(self.stdout_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            cwd=str(self.workdir),
            env=daemon_env(env),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout_file,
            stderr=self._stderr_file,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with code {self.proc.returncode} during start-up; stderr:\n{self.log_text()}"
                )
            try:
                resp = self.request("GET", "/healthz", timeout=2)
                if resp.status == 200:
                    return resp
                last = resp
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        raise AssertionError(f"daemon did not answer /healthz within {timeout}s (last: {last!r}); stderr:\n{self.log_text()}")

    @property
    def pid(self):
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def sighup(self):
        self.send_signal(signal.SIGHUP)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        """Wait for the process to exit; return its code (None on timeout)."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Send ``sig``, wait up to ``timeout``, then SIGKILL. Returns exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            if self.wait_exit(timeout) is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.returncode = "killed"
        elif self.returncode is None:
            self.returncode = self.proc.returncode
        self._close_files()
        return self.returncode

    def restart(self, sig=signal.SIGTERM, args=None, env=None, wait=True, timeout=STOP_TIMEOUT):
        """Stop the process with ``sig`` (SIGKILL for a crash) and start a new
        one in the same directory (same config, same data dir, a new port).

        Returns the old process's exit code (negative for a signal). The
        ``daemon`` fixture's teardown then deals with the new process.
        """
        code = self.stop(sig, timeout=timeout)
        self.proc = None
        self.returncode = None
        self.start(args=args, env=env, wait=wait)
        return code

    def _close_files(self):
        for f in (self._stderr_file, self._stdout_file):
            if f is not None and not f.closed:
                f.close()

    # ---- HTTP ------------------------------------------------------------

    def url(self, path="/"):
        return f"http://{self.host}:{self.port}{path}"

    def request(self, method, path, body=None, headers=None, timeout=REQUEST_TIMEOUT) -> Response:
        return http_request(self.host, self.port, method, path, body=body, headers=headers, timeout=timeout)

    def get(self, path, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw) -> Response:
        return self.request("POST", path, body=body, **kw)

    def health(self) -> dict:
        resp = self.get("/healthz")
        assert resp.status == 200, resp
        return resp.json()

    def generation(self) -> int:
        return self.health()["generation"]

    def reload(self, token="__default__") -> Response:
        """POST /admin/reload (with the configured admin token by default)."""
        if token == "__default__":
            token = self.admin_token
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.post("/admin/reload", headers=headers)

    def reload_ok(self) -> int:
        resp = self.reload()
        assert resp.status == 200, f"reload failed: {resp!r}"
        return resp.json()["generation"]

    # ---- metrics ---------------------------------------------------------

    def metrics_response(self) -> Response:
        return self.get("/metrics")

    def metrics(self) -> dict:
        resp = self.metrics_response()
        assert resp.status == 200, resp
        return parse_metrics(resp.text)

    def metric(self, name, default=0.0, **labels):
        key = (name, tuple(sorted(labels.items())))
        return self.metrics().get(key, default)

    def wait_metric(self, name, predicate, timeout=10.0, **labels):
        return wait_until(
            lambda: (lambda v: (v,) if predicate(v) else None)(self.metric(name, **labels)),
            timeout=timeout,
            message=f"metric {name}{labels} to satisfy predicate (last value {self.metric(name, **labels)})",
        )[0]

    # ---- logs ------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self):
        return [l for l in self.log_text().splitlines() if l.strip()]

    def log_records(self):
        return [parse_logfmt(l) for l in self.log_lines()]

    def find_logs(self, **match):
        """Records whose keys equal the given values (callables act as predicates)."""
        out = []
        for rec in self.log_records():
            ok = True
            for k, want in match.items():
                if k not in rec:
                    ok = False
                    break
                if callable(want):
                    if not want(rec[k]):
                        ok = False
                        break
                elif rec[k] != str(want):
                    ok = False
                    break
            if ok:
                out.append(rec)
        return out

    def wait_for_log(self, timeout=10.0, **match):
        recs = wait_until(
            lambda: self.find_logs(**match),
            timeout=timeout,
            message=f"log line matching {match}; log so far:\n{self.log_text()[-4000:]}",
        )
        return recs[-1]


def daemon_env(extra=None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(extra or {})
    return env


def run_cli(args, cwd, env=None, timeout=20) -> subprocess.CompletedProcess:
    """Run the binary to completion (for --check/--version/usage tests)."""
    if not BINARY.exists():
        pytest.fail(f"switchboard binary not found at {BINARY} (run `make` first)")
    return subprocess.run(
        [str(BINARY), *args],
        cwd=str(cwd),
        env=daemon_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------
# fake upstream servers
# --------------------------------------------------------------------------


class Recorded:
    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.headers = headers  # email.message.Message, case-insensitive
        self.body = body

    def __repr__(self):
        return f"<Recorded {self.method} {self.path} {self.body[:100]!r}>"


class FakeServer:
    """A ThreadingHTTPServer on 127.0.0.1:0 that records every request.

    ``status``/``body``/``headers`` give the canned answer; ``gate`` (a
    threading.Event) makes each answer wait until the event is set, and
    ``delay`` makes it sleep first.
    """

    def __init__(self, status=200, body=b"ok", headers=None, delay=0.0, gate=None):
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = headers or {}
        self.delay = delay
        self.gate = gate
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with fake._lock:
                    fake.requests.append(Recorded(self.command, self.path, self.headers, body))
                if fake.delay:
                    time.sleep(fake.delay)
                if fake.gate is not None:
                    fake.gate.wait(60)
                try:
                    self.send_response(fake.status)
                    for k, v in fake.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(fake.body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(fake.body)
                except OSError:
                    pass
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for_requests(self, n=1, timeout=10.0):
        wait_until(lambda: len(self.requests) >= n, timeout=timeout, message=f"{n} request(s) at fake server")
        return self.requests

    def close(self):
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def daemon(tmp_path, request):
    """A Daemon (not yet started) in its own tmp dir; stopped at teardown.

    On failure the tail of the daemon's stderr is printed (shown by pytest).
    """
    d = Daemon(tmp_path)
    yield d
    still_running = d.proc is not None and d.proc.poll() is None
    code = d.stop(signal.SIGTERM, timeout=STOP_TIMEOUT) if d.proc is not None else None
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"---- daemon stderr ({d.stderr_path}) tail ----")
        print(d.log_text()[-6000:])
    if d.proc is not None:
        # Under `make sanitize` a memory error or a leak shows up here: the
        # sanitizers print a report and make the exit code non-zero.
        text = d.log_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            assert marker not in text, f"sanitizer report in daemon stderr:\n{text[-6000:]}"
        if still_running:
            assert code == 0, f"daemon exited with {code} on SIGTERM at teardown"


@pytest.fixture
def fake_server():
    """Factory: ``fake_server(status=..., body=..., headers=..., delay=..., gate=...)``."""
    servers = []

    def make(**kw):
        srv = FakeServer(**kw)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.close()


def run_in_thread(fn, *args, **kwargs):
    """Run fn in a thread; returns (thread, result dict with 'value'/'error')."""
    result = {}

    def target():
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, result


def line_of(script: str, needle: str) -> int:
    """1-based line number of ``needle`` in a script as written by write_script."""
    for i, line in enumerate(dedent(script).splitlines(), 1):
        if needle in line:
            return i
    raise ValueError(f"{needle!r} not in script")
