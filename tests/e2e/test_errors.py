"""Every row of README's error table, checked against what the server
answers (rows the engine's own scripts produce run with them installed). The table is read from README.md, so a row
added there without a case here (or the other way round) fails."""

import http.client
import re
import resource
import signal
import socket
import threading

import pytest

from conftest import REPO_ROOT, Response, assert_json_error, wait_until
from convkit import install_lua_tree

SCRIPT = """
function upload(req) return 200, { size = #req.body } end
function param(req) return 200, { n = #req.params.x } end
function boom(req) error("boom") end
function spin(req) while true do end end
function nap(req) sleep(3) return 200, "late" end
function parse(req) return 200, req:json() end
function big(req) state.set("big", string.rep("x", 300000)) return 200, "stored" end
route("POST", "/upload", "upload")
route("GET", "/p/{x}", "param")
route("GET", "/boom", "boom")
route("GET", "/spin", "spin")
route("GET", "/nap", "nap")
route("POST", "/json", "parse")
route("POST", "/big", "big")
"""

CONFIG = {
    "http": {"max_body_bytes": 2048, "max_header_bytes": 2048},
    "lua": {"cpu_ms_per_resume": 50, "job_timeout": 1},
}


def raw(d, payload: bytes) -> Response:
    sock = socket.create_connection((d.host, d.port), timeout=10)
    try:
        sock.sendall(payload)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return Response(resp.status, resp.reason, resp.headers, resp.read())
    finally:
        sock.close()


def shutting_down(d):
    """A request on a keep-alive connection while the daemon stops."""
    keep = http.client.HTTPConnection(d.host, d.port, timeout=10)
    keep.request("GET", "/healthz")
    assert keep.getresponse().read()
    # a job in flight keeps the daemon in its drain
    t = threading.Thread(target=lambda: d.get("/nap"), daemon=True)
    t.start()
    wait_until(lambda: d.metric("switchboard_jobs_in_flight") >= 1, timeout=10, message="the /nap job")
    d.send_signal(signal.SIGTERM)
    d.wait_for_log(msg="stopping")
    keep.request("GET", "/healthz")
    r = keep.getresponse()
    resp = Response(r.status, r.reason, r.headers, r.read())
    keep.close()
    t.join(10)
    assert d.wait_exit() == 0
    return resp


def no_file_growth():
    """preexec_fn: the store cannot grow its files past 128 KiB."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (131072, 131072))


LONG = "a" * 3000

# (status, code) -> cases: (id, run(daemon) -> Response, config overrides, preexec_fn)
CASES = {
    (400, "bad_request"): [
        ("garbage", lambda d: raw(d, b"THIS IS NOT HTTP\r\n\r\n"), {}, None),
        ("header-without-colon", lambda d: raw(d, b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n"), {}, None),
        ("two-content-lengths", lambda d: raw(
            d, b"POST /upload HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"), {}, None),
        ("length-and-chunked", lambda d: raw(
            d, b"POST /upload HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), {}, None),
        ("coding-not-chunked", lambda d: raw(
            d, b"POST /upload HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), {}, None),
    ],
    (400, "malformed_json"): [("not-json", lambda d: d.post("/json", body="{nope"), {}, None)],
    (401, "unauthorized"): [("no-token", lambda d: d.reload(token=None), {}, None)],
    (403, "forbidden"): [("no-admin-token", lambda d: d.reload(token="x"), {"admin_token": None}, None)],
    (404, "not_found"): [("no-route", lambda d: d.get("/nowhere"), {}, None)],
    (405, "method_not_allowed"): [("delete-upload", lambda d: d.request("DELETE", "/upload"), {}, None)],
    (413, "payload_too_large"): [("body", lambda d: d.post("/upload", body=b"x" * 2049), {}, None)],
    (414, "uri_too_long"): [
        ("request-line", lambda d: d.get("/" + LONG), {}, None),
        ("route-parameter", lambda d: d.get("/p/" + "a" * 1024), {}, None),
    ],
    (417, "expectation_failed"): [("expect-tea", lambda d: raw(
        d, b"POST /upload HTTP/1.1\r\nExpect: tea\r\nContent-Length: 1\r\n\r\nx"), {}, None)],
    (431, "headers_too_large"): [("one-big-header", lambda d: d.get("/healthz", headers={"X-Big": LONG}), {}, None)],
    (500, "script_error"): [("error", lambda d: d.get("/boom"), {}, None)],
    (500, "script_budget_exceeded"): [("cpu", lambda d: d.get("/spin"), {}, None)],
    (501, "not_implemented"): [
        ("trace", lambda d: raw(d, b"TRACE / HTTP/1.1\r\n\r\n"), {}, None),
        ("unknown-method", lambda d: raw(d, b"BREW /pot HTTP/1.1\r\n\r\n"), {}, None),
    ],
    (503, "shutting_down"): [("keep-alive", shutting_down, {"lua": {"job_timeout": 10}}, None)],
    (503, "store_unavailable"): [("file-size-limit", lambda d: d.post("/big"), {}, no_file_growth)],
    (504, "job_timeout"): [("sleep", lambda d: d.get("/nap"), {}, None)],
    # produced by the engine's scripts (scripts/api.lua, providers/webhook.lua) and what they return
    (403, "insufficient_scope"): [("read-token-ends-a-chat", lambda d: d.post(
        "/v1/conversations/00000000000000000000/end", headers={"Authorization": "Bearer read-only"}),
        {"_engine": True, "api_tokens": [{"name": "ro", "token": "read-only", "scopes": ["read"]}]}, None)],
    (422, "invalid_field"): [("client-id-not-a-string", lambda d: d.post(
        "/v1/channels/web/messages", body='{"client_id": 5, "text": "x"}',
        headers={"Authorization": "Bearer web-secret", "Content-Type": "application/json"}),
        {"_engine": True, "channels": {"web": {"type": "webhook", "secret": "web-secret",
                                               "callback_url": "http://127.0.0.1:9/cb"}}}, None)],
    (503, "too_many_streams"): [("stream-cap-zero", lambda d: d.get(
        "/v1/events/stream", headers={"Authorization": "Bearer api-token"}),
        {"_engine": True, "api_token": "api-token", "events": {"stream_max": 0}}, None)],
}


def readme_rows():
    text = (REPO_ROOT / "README.md").read_text()
    table = text[text.index("| status | code | when |"):]
    table = table[: table.index("\n\n")]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        m = re.fullmatch(r"`([a-z_]+)`", cells[1])
        if cells[0].isdigit() and m:
            rows.append((int(cells[0]), m.group(1)))
    return rows


def test_readme_error_table_and_cases_list_the_same_rows():
    rows = readme_rows()
    assert len(rows) == len(set(rows)), rows
    assert set(rows) == set(CASES), f"README only: {set(rows) - set(CASES)}; cases only: {set(CASES) - set(rows)}"


@pytest.mark.parametrize(
    "status, code, run, overrides, preexec",
    [
        pytest.param(status, code, run, overrides, preexec, id=f"{status}-{code}-{case_id}")
        for (status, code), cases in CASES.items()
        for case_id, run, overrides, preexec in cases
    ],
)
def test_error_table_row(daemon, status, code, run, overrides, preexec):
    overrides = dict(overrides)
    if overrides.pop("_engine", False):
        install_lua_tree(daemon)
    cfg = {**CONFIG, **overrides}
    if "lua" in overrides:
        cfg["lua"] = {**CONFIG["lua"], **overrides["lua"]}
    daemon.write_config(**cfg)
    daemon.write_script("scripts/errors.lua", SCRIPT)
    daemon.start(preexec_fn=preexec)
    assert_json_error(run(daemon), status, code)
