"""Built-in HTTP endpoints, metrics, and the JSON error responses."""

import http.client
import socket

import pytest

from conftest import LuaExpr, assert_json_error, line_of, parse_metrics, wait_until

ECHO_SCRIPT = """
function echo(req)
  return 200, "hello " .. req.params.name
end
function upload(req)
  return 200, {size = #req.body}
end
function boom(req)
  local x = 1
  error("boom")
end
function teapot(req)
  http_error(418, "teapot", "short and stout")
end
route("GET", "/echo/{name}", "echo")
route("POST", "/upload", "upload")
route("GET", "/boom", "boom")
route("GET", "/teapot", "teapot")
"""


@pytest.fixture
def echo_daemon(daemon):
    daemon.write_config(http={"max_body_bytes": 2048})
    daemon.write_script("scripts/echo.lua", ECHO_SCRIPT)
    daemon.start()
    return daemon


# ---------------------------------------------------------------- health


def test_healthz_reports_ok_and_generation_1(daemon):
    daemon.start()
    resp = daemon.get("/healthz")
    assert resp.status == 200
    assert resp.json() == {"status": "ok", "generation": 1}


def test_healthz_without_any_script_folder(daemon):
    # no scripts/, providers/, rules/ folders at all: missing folders are empty
    daemon.start()
    assert daemon.health()["status"] == "ok"
    assert_json_error(daemon.get("/nothing-here"), 404, "not_found")


# ---------------------------------------------------------------- metrics


def test_metrics_content_type_and_metric_names(echo_daemon):
    d = echo_daemon
    assert d.get("/echo/a").status == 200
    resp = d.metrics_response()
    assert resp.status == 200
    ctype = resp.content_type.replace(" ", "").lower()
    assert ctype.startswith("text/plain;") and "version=0.0.4" in ctype, resp.content_type
    m = parse_metrics(resp.text)
    names = {name for name, _ in m}
    for required in (
        "switchboard_http_requests_total",
        "switchboard_jobs_in_flight",
        "switchboard_lua_errors_total",
        "switchboard_runtime_generation",
        "switchboard_timers_pending",
    ):
        assert required in names, f"{required} missing from /metrics:\n{resp.text}"
    assert m[("switchboard_runtime_generation", ())] == 1
    assert m[("switchboard_jobs_in_flight", ())] == 0
    assert m[("switchboard_timers_pending", ())] == 0


def test_http_requests_counter_moves_per_route_pattern_and_status(echo_daemon):
    d = echo_daemon
    name = "switchboard_http_requests_total"
    before_h = d.metric(name, route="/healthz", status="200")
    before_e = d.metric(name, route="/echo/{name}", status="200")
    before_u = d.metric(name, route="unmatched", status="404")
    for who in ("a", "b", "c"):
        assert d.get(f"/echo/{who}").text == f"hello {who}"
        assert d.get("/healthz").status == 200
    assert d.get("/no/such/path").status == 404
    assert d.get("/another/missing").status == 404

    d.wait_metric(name, lambda v: v >= before_h + 3, route="/healthz", status="200")
    m = d.metrics()
    assert m.get((name, (("route", "/healthz"), ("status", "200")))) == before_h + 3
    assert m.get((name, (("route", "/echo/{name}"), ("status", "200")))) == before_e + 3
    assert m.get((name, (("route", "unmatched"), ("status", "404")))) == before_u + 2


def test_lua_errors_counter_moves(echo_daemon):
    d = echo_daemon
    before = d.metric("switchboard_lua_errors_total")
    assert d.get("/boom").status == 500
    assert d.get("/boom").status == 500
    d.wait_metric("switchboard_lua_errors_total", lambda v: v >= before + 2)
    assert d.metric("switchboard_lua_errors_total") == before + 2


# ---------------------------------------------------------------- errors


def test_unknown_path_is_404_not_found(echo_daemon):
    resp = echo_daemon.get("/definitely/not/here")
    assert_json_error(resp, 404, "not_found")


def test_param_pattern_does_not_match_extra_segments(echo_daemon):
    assert_json_error(echo_daemon.get("/echo/a/b"), 404, "not_found")


def test_wrong_method_on_lua_route_is_405_with_allow(echo_daemon):
    resp = echo_daemon.request("DELETE", "/echo/x")
    assert_json_error(resp, 405, "method_not_allowed")
    allow = resp.headers.get("Allow", "")
    assert "GET" in [a.strip() for a in allow.split(",")], f"Allow header: {allow!r}"


def test_wrong_method_on_builtin_is_405_with_allow(echo_daemon):
    resp = echo_daemon.post("/healthz", body="")
    assert_json_error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers.get("Allow", ""), resp.headers.get("Allow")

    resp = echo_daemon.get("/admin/reload")
    assert_json_error(resp, 405, "method_not_allowed")
    assert "POST" in resp.headers.get("Allow", ""), resp.headers.get("Allow")


def test_body_over_limit_is_413_payload_too_large(echo_daemon):
    d = echo_daemon
    # exactly at the limit is accepted
    ok = d.post("/upload", body=b"x" * 2048, headers={"Content-Type": "application/octet-stream"})
    assert ok.status == 200, ok
    assert ok.json() == {"size": 2048}
    # one byte over is refused
    resp = d.post("/upload", body=b"x" * 2049, headers={"Content-Type": "application/octet-stream"})
    assert_json_error(resp, 413, "payload_too_large")
    resp = d.post("/upload", body=b"y" * 10000)
    assert_json_error(resp, 413, "payload_too_large")
    assert d.health()["status"] == "ok"


def _raw_exchange(daemon, payload: bytes):
    sock = socket.create_connection((daemon.host, daemon.port), timeout=10)
    try:
        sock.sendall(payload)
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        sock.close()


@pytest.mark.parametrize(
    "payload",
    [
        b"THIS IS NOT HTTP AT ALL\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nthis header has no colon\r\n\r\n",
    ],
    ids=["garbage-request-line", "header-without-colon"],
)
def test_malformed_http_is_400_bad_request(echo_daemon, payload):
    import json

    status, ctype, body = _raw_exchange(echo_daemon, payload)
    assert status == 400, (status, body)
    assert ctype.split(";")[0].strip() == "application/json"
    assert json.loads(body)["error"]["code"] == "bad_request"
    # still serving
    assert echo_daemon.health()["status"] == "ok"


def test_oversized_headers_are_rejected_with_json_error(daemon):
    daemon.write_config(http={"max_header_bytes": 2048})
    daemon.start()
    resp = daemon.get("/healthz", headers={"X-Big": "a" * 8192})
    assert 400 <= resp.status < 500, resp
    assert_json_error(resp, resp.status)
    assert daemon.health()["status"] == "ok"


def test_lua_error_is_500_script_error_and_logged_with_file_line(echo_daemon):
    d = echo_daemon
    resp = d.get("/boom")
    assert_json_error(resp, 500, "script_error")
    rec = d.wait_for_log(level="error", msg="script error")
    line = line_of(ECHO_SCRIPT, 'error("boom")')
    assert f"scripts/echo.lua:{line}: boom" in rec.get("error", ""), rec
    assert d.get("/echo/still").text == "hello still"


def test_http_error_from_lua_becomes_json_error(echo_daemon):
    resp = echo_daemon.get("/teapot")
    err = assert_json_error(resp, 418, "teapot")
    assert err["message"] == "short and stout"


# ---------------------------------------------------------------- admin auth


def test_admin_reload_requires_bearer_token(echo_daemon):
    d = echo_daemon
    assert_json_error(d.reload(token=None), 401)
    assert_json_error(d.reload(token="wrong-token"), 401)
    resp = d.post("/admin/reload", headers={"Authorization": "Basic dGVzdDp0ZXN0"})
    assert_json_error(resp, 401)
    assert d.generation() == 1
    resp = d.reload()
    assert resp.status == 200, resp
    assert resp.json() == {"generation": 2}
    assert d.generation() == 2


def test_admin_without_configured_token_is_403(daemon):
    daemon.write_config(admin_token=None)
    daemon.start()
    assert_json_error(daemon.reload(token=None), 403)
    assert_json_error(daemon.reload(token="anything"), 403)
    assert daemon.generation() == 1


def test_admin_token_from_environment(daemon):
    daemon.write_config(admin_token=LuaExpr('env("SWITCHBOARD_ADMIN_TOKEN")'))
    daemon.start(env={"SWITCHBOARD_ADMIN_TOKEN": "from-env-123"})
    assert_json_error(daemon.reload(token="test-admin-token"), 401)
    resp = daemon.reload(token="from-env-123")
    assert resp.status == 200, resp
    assert resp.json()["generation"] == 2


def test_daemon_keeps_serving_after_many_errors(echo_daemon):
    d = echo_daemon
    for _ in range(5):
        d.get("/boom")
        d.get("/missing")
        d.request("PUT", "/echo/x")
    wait_until(lambda: d.get("/echo/ok").text == "hello ok", timeout=5)
