"""Connection limits, accept() failures, libevent's log lines, request
framing and over-long route parameters."""

import http.client
import json
import resource
import signal
import socket
import threading
import time

import pytest

from conftest import assert_json_error, is_logfmt_line, parse_metrics, wait_until


@pytest.fixture(autouse=True, scope="module")
def enough_files_for_the_test_process():
    """The floods below hold several hundred client sockets at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_files_limit(soft, hard):
    """preexec_fn giving the daemon this RLIMIT_NOFILE."""

    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


class KeepAlive:
    """One client connection reused for every request, to tell whether the
    server kept it open."""

    def __init__(self, daemon):
        self.conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=10)
        self.conn.connect()
        self.local = self.conn.sock.getsockname()

    def request(self, method, path, body=None):
        self.conn.request(method, path, body=body)
        resp = self.conn.getresponse()
        data = resp.read()
        assert self.conn.sock is not None and self.conn.sock.getsockname() == self.local, "connection was replaced"
        return resp.status, data

    def metrics(self):
        status, data = self.request("GET", "/metrics")
        assert status == 200
        return parse_metrics(data.decode())

    def metric(self, name, **labels):
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def close(self):
        self.conn.close()


def peer_closed(sock) -> bool:
    sock.setblocking(False)  # a socket with a timeout would wait in recv
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def connect_many(daemon, n):
    return [socket.create_connection((daemon.host, daemon.port), timeout=10) for _ in range(n)]


def close_all(socks):
    for s in socks:
        s.close()


# ---------------------------------------------------------------- the cap


def test_idle_flood_is_shed_oldest_first_and_established_clients_are_served(daemon):
    daemon.write_config(http={"max_connections": 50})
    daemon.start()
    k = KeepAlive(daemon)
    try:
        assert k.request("GET", "/healthz")[0] == 200
        idle = connect_many(daemon, 200)
        try:
            # k and the 200 idle ones against a cap of 50: 151 must go
            wait_until(lambda: k.metric("switchboard_http_connections_shed_total") >= 151, timeout=15,
                       message="151 connections shed")
            assert k.metric("switchboard_http_connections") <= 50
            # a new client and the one that was here before the flood are both served
            assert daemon.get("/healthz").json()["status"] == "ok"
            status, body = k.request("GET", "/healthz")
            assert status == 200 and json.loads(body)["status"] == "ok"
            # every shed connection is one of the idle ones: the 151, plus
            # the one the /healthz client above displaced
            shed = k.metric("switchboard_http_connections_shed_total")
            assert shed in (151, 152), shed
            wait_until(lambda: sum(map(peer_closed, idle)) == shed, timeout=10,
                       message=f"{shed} idle sockets closed by the server")
            assert peer_closed(idle[0]) and not peer_closed(idle[-1]), "the oldest go first"
            assert k.metric("switchboard_http_connections") <= 50
        finally:
            close_all(idle)
    finally:
        k.close()
    lines = daemon.log_lines()
    assert len(lines) < 20, "\n".join(lines)
    assert all(is_logfmt_line(l) for l in lines), lines
    assert 1 <= len(daemon.find_logs(msg=lambda m: m.startswith("connection cap reached"))) <= 2


def test_a_low_open_files_limit_lowers_the_cap_and_a_flood_stays_quiet(daemon):
    daemon.write_config(http={"max_connections": 4096})
    daemon.start(preexec_fn=open_files_limit(256, 256))
    rec = daemon.wait_for_log(msg="connection cap lowered to fit the open files limit")
    effective, reserve = int(rec["effective"]), int(rec["reserve"])
    assert rec["max_connections"] == "4096" and rec["open_files_limit"] == "256", rec
    assert effective == 256 - reserve and 0 < effective < 256, rec
    assert rec["level"] == "warn"

    k = KeepAlive(daemon)
    try:
        assert k.request("GET", "/healthz")[0] == 200  # a client, not a half-open connection
        socks = connect_many(daemon, 600)
        try:
            wait_until(lambda: k.metric("switchboard_http_connections_shed_total") >= 601 - effective,
                       timeout=20, message="the flood shed down to the cap")
            assert k.metric("switchboard_http_connections") <= effective
            assert daemon.get("/healthz").json()["status"] == "ok"
            assert k.request("GET", "/healthz")[0] == 200
        finally:
            close_all(socks)
    finally:
        k.close()
    lines = daemon.log_lines()
    assert len(lines) < 20, "\n".join(lines[:50])
    assert all(is_logfmt_line(l) for l in lines), lines[:20]


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(daemon):
    daemon.start(preexec_fn=open_files_limit(300, 700))
    rec = daemon.wait_for_log(msg="open files limit raised")
    assert (rec["from"], rec["to"]) == ("300", "700"), rec
    cap = daemon.wait_for_log(msg="connection cap lowered to fit the open files limit")
    assert cap["open_files_limit"] == "700"
    assert int(cap["effective"]) == 700 - int(cap["reserve"])


HOLD_SCRIPT = """
function hold()
  -- nil, message when the daemon has no file left for the socket
  http.request{url = config.upstream .. "/held", timeout = 60}
end
function start_holding(req)
  for i = 1, tonumber(req.query.n) do timer.after(0, "hold") end
  return 200, "holding"
end
route("POST", "/hold", "start_holding")
"""


def test_accept_failures_pause_accepting_with_one_log_line(daemon, fake_server):
    gate = threading.Event()
    upstream = fake_server(gate=gate)
    # a small reserve, so that outbound transfers can take every file left
    daemon.write_config(upstream=upstream.url, http_client={"max_connections": 1}, outbox={"concurrency": 1})
    daemon.write_script("scripts/hold.lua", HOLD_SCRIPT)
    daemon.start(preexec_fn=open_files_limit(128, 128))
    k = KeepAlive(daemon)
    waiting = []
    try:
        assert k.request("POST", "/hold?n=200")[0] == 200
        # some transfers failed for want of a file: the daemon has none left
        wait_until(lambda: k.metric("switchboard_outbound_requests_total", status="error") >= 1, timeout=20,
                   message="outbound transfers to exhaust the open files")
        waiting = connect_many(daemon, 20)
        rec = daemon.wait_for_log(msg="accept failed: new connections paused")
        assert rec["error"] == "Too many open files", rec
        assert int(rec["pause_ms"]) > 0
        time.sleep(0.5)  # several pause/retry rounds while still out of files
        lines = daemon.log_lines()
        assert len(lines) < 20, "\n".join(lines[:50])

        gate.set()
        wait_until(lambda: daemon.get("/healthz", timeout=3).status == 200, timeout=20,
                   message="/healthz once files are back")
        assert k.request("GET", "/healthz")[0] == 200
    finally:
        gate.set()
        close_all(waiting)
        k.close()
    lines = daemon.log_lines()
    assert all(is_logfmt_line(l) for l in lines), lines[:20]
    assert len(daemon.find_logs(msg="accept failed: new connections paused")) <= 2


def test_libevent_messages_are_logfmt_lines_from_source_libevent(daemon):
    # libevent names its backend at start-up when this variable is set
    daemon.start(env={"EVENT_SHOW_METHOD": "1"})
    rec = daemon.wait_for_log(source="libevent")
    assert rec["msg"].startswith("libevent using: "), rec
    assert rec["level"] == "info"
    lines = daemon.log_lines()
    assert all(is_logfmt_line(l) for l in lines), lines


# ---------------------------------------------------------------- framing

FRAMING_SCRIPT = """
function upload(req)
  log.info("upload handled", { size = #req.body })
  return 200, { size = #req.body, body = req.body }
end
function smuggled(req)
  log.info("smuggled request handled")
  return 200, "smuggled"
end
function param(req)
  log.info("param handled")
  return 200, { n = #req.params.x }
end
route("POST", "/upload", "upload")
route("GET", "/smuggled", "smuggled")
route("GET", "/p/{x}", "param")
"""


@pytest.fixture
def framing_daemon(daemon):
    daemon.write_script("scripts/framing.lua", FRAMING_SCRIPT)
    daemon.start()
    return daemon


def raw_responses(daemon, payload: bytes, timeout=5):
    """Sends payload and reads until the server closes (or goes quiet for
    `timeout`); returns (status, content type, connection, body) per response."""
    sock = socket.create_connection((daemon.host, daemon.port), timeout=timeout)
    data = b""
    try:
        sock.sendall(payload)
        while True:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        n = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), headers.get("content-type", ""), headers.get("connection", ""), rest[:n]))
        data = rest[n:]
    return out


SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "head, message",
    [
        (b"Content-Length: 5\r\nContent-Length: 6\r\n", "conflicting Content-Length headers"),
        (b"Content-Length: 5\r\nContent-Length: 5x\r\n", "invalid Content-Length"),
        (b"Transfer-Encoding: gzip\r\n", "Transfer-Encoding must end with chunked"),
    ],
    ids=["two-lengths", "second-length-invalid", "te-not-chunked"],
)
def test_ambiguous_framing_is_400_and_closes_the_connection(framing_daemon, head, message):
    d = framing_daemon
    payload = b"POST /upload HTTP/1.1\r\nHost: x\r\n" + head + b"\r\nhello" + b"X" + SMUGGLE
    responses = raw_responses(d, payload)
    assert len(responses) == 1, responses
    status, ctype, connection, body = responses[0]
    assert status == 400 and ctype == "application/json", responses
    assert connection.lower() == "close"
    assert json.loads(body) == {"error": {"code": "bad_request", "message": message}}
    assert d.find_logs(msg="upload handled") == []
    assert d.find_logs(msg="smuggled request handled") == []


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",  # evhttp itself refuses this one
        b"Content-Length: 5, 6\r\n",  # and this one (not a number)
    ],
    ids=["length-and-chunked", "length-list"],
)
def test_framing_evhttp_refuses_is_a_json_400(framing_daemon, head):
    payload = b"POST /upload HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n5\r\nhello\r\n0\r\n\r\n"
    status, ctype, _, body = raw_responses(framing_daemon, payload)[0]
    assert (status, ctype) == (400, "application/json"), body
    assert json.loads(body)["error"]["code"] == "bad_request"
    assert framing_daemon.find_logs(msg="upload handled") == []


def test_unambiguous_framing_is_served(framing_daemon):
    d = framing_daemon
    same = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\nhello"
    chunked = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" \
              b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    responses = raw_responses(d, same + chunked)
    assert [(s, json.loads(b)) for s, _, _, b in responses] == [
        (200, {"size": 5, "body": "hello"}),
        (200, {"size": 5, "body": "hello"}),
    ]


# ---------------------------------------------------------------- route parameters


def test_route_parameter_over_1023_bytes_is_414_before_any_job(framing_daemon):
    d = framing_daemon
    ok = d.get("/p/" + "a" * 1023)
    assert ok.status == 200 and ok.json() == {"n": 1023}, ok
    handled = len(d.find_logs(msg="param handled"))
    resp = d.get("/p/" + "a" * 1024)
    assert_json_error(resp, 414, "uri_too_long")
    # percent-encoded bytes count as sent: 342 x "%41" is 1026 bytes
    assert_json_error(d.get("/p/" + "%41" * 342), 414, "uri_too_long")
    assert len(d.find_logs(msg="param handled")) == handled
    assert d.metric("switchboard_http_requests_total", route="/p/{x}", status="414") == 2
