"""Lua scripts: routes and requests, http.request, sleep, timers, state,
log, json, config and the sandbox."""

import json
import threading
import time

import pytest

from conftest import LuaExpr, assert_json_error, free_port, run_in_thread, wait_until

# ====================================================================== routes

ROUTES_SCRIPT = """
function echo(req)
  return 200, {
    method = req.method,
    path = req.path,
    params = req.params,
    query = req.query,
    headers = req.headers,
    body = req.body,
  }
end
function created(req)
  return 201, "created", {["X-Thing"] = "yes"}
end
function html(req)
  return 200, "<p>hi</p>", {["Content-Type"] = "text/html"}
end
function any(req)
  return 200, req.method
end
mymod = {}
function mymod.fn(req)
  return 200, "dotted " .. req.params.id
end
function decode(req)
  local doc = req:json()
  return 200, {got = doc.value, kind = type(doc.list), n = #doc.list}
end
route("POST", "/echo/{name}", "echo")
route("GET", "/echo/{name}/{other}", "echo")
route("POST", "/created", "created")
route("GET", "/html", "html")
route("*", "/any", "any")
route("GET", "/dotted/{id}", "mymod.fn")
route("POST", "/decode", "decode")
"""


@pytest.fixture
def routes_daemon(daemon):
    daemon.write_script("scripts/routes.lua", ROUTES_SCRIPT)
    daemon.start()
    return daemon


def test_request_fields_reach_the_handler(routes_daemon):
    resp = routes_daemon.post(
        "/echo/alice?x=1&y=two",
        body="hello body",
        headers={"X-Custom-Header": "Val 1", "Content-Type": "text/plain"},
    )
    assert resp.status == 200, resp
    assert resp.content_type.split(";")[0] == "application/json"
    doc = resp.json()
    assert doc["method"] == "POST"
    assert doc["path"] == "/echo/alice"
    assert doc["params"] == {"name": "alice"}
    assert doc["query"] == {"x": "1", "y": "two"}
    assert doc["headers"]["x-custom-header"] == "Val 1"
    assert "X-Custom-Header" not in doc["headers"]
    assert doc["body"] == "hello body"


def test_two_captures(routes_daemon):
    doc = routes_daemon.get("/echo/one/two").json()
    assert doc["params"] == {"name": "one", "other": "two"}
    assert doc["method"] == "GET"


def test_query_args_are_percent_decoded(routes_daemon):
    doc = routes_daemon.post("/echo/q?msg=hello%20world&k=a%2Bb", body="").json()
    assert doc["query"]["msg"] == "hello world"
    assert doc["query"]["k"] == "a+b"


def test_string_body_status_and_headers(routes_daemon):
    resp = routes_daemon.post("/created", body="")
    assert resp.status == 201
    assert resp.text == "created"
    assert resp.content_type.startswith("text/plain")
    assert resp.headers.get("X-Thing") == "yes"


def test_handler_can_set_content_type(routes_daemon):
    resp = routes_daemon.get("/html")
    assert resp.status == 200
    assert resp.content_type.startswith("text/html")
    assert resp.text == "<p>hi</p>"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
def test_wildcard_method_route(routes_daemon, method):
    resp = routes_daemon.request(method, "/any", body="" if method != "GET" else None)
    assert resp.status == 200, resp
    assert resp.text == method


def test_dotted_handler_name(routes_daemon):
    resp = routes_daemon.get("/dotted/42")
    assert resp.status == 200
    assert resp.text == "dotted 42"


def test_req_json_decodes_valid_body(routes_daemon):
    resp = routes_daemon.post("/decode", body=json.dumps({"value": "v", "list": [1, 2, 3]}),
                              headers={"Content-Type": "application/json"})
    assert resp.status == 200, resp
    assert resp.json() == {"got": "v", "kind": "table", "n": 3}


@pytest.mark.parametrize("body", ['{"value": ', "not json at all", "{'single': 'quotes'}", ""])
def test_req_json_malformed_body_is_400(routes_daemon, body):
    resp = routes_daemon.post("/decode", body=body, headers={"Content-Type": "application/json"})
    assert_json_error(resp, 400, "malformed_json")


def test_script_folders_load_in_order_and_subfolders_only_via_require(daemon):
    daemon.write_script("scripts/10_first.lua", """
        ORDER = {"first"}
    """)
    daemon.write_script("scripts/20_second.lua", """
        table.insert(ORDER, "second")
        local helper = require("lib.helper")
        function order(req) return 200, table.concat(ORDER, ",") end
        function greet(req) return 200, helper.greet(req.params.who) end
        route("GET", "/order", "order")
        route("GET", "/greet/{who}", "greet")
    """)
    daemon.write_script("scripts/lib/helper.lua", """
        return { greet = function(who) return "hi " .. who end }
    """)
    # a file in a subfolder is not loaded on its own
    daemon.write_script("scripts/sub/auto.lua", """
        function nope(req) return 200, "should not be routed" end
        route("GET", "/from-subfolder", "nope")
    """)
    daemon.write_script("providers/p.lua", """
        function provider(req) return 200, "provider" end
        route("GET", "/provider", "provider")
    """)
    daemon.write_script("rules/r.lua", """
        function rule(req) return 200, "rule" end
        route("GET", "/rule", "rule")
    """)
    daemon.write_script("scripts/not_lua.txt", "this is not lua (((", raw=True)
    daemon.start()
    assert daemon.get("/order").text == "first,second"
    assert daemon.get("/greet/bob").text == "hi bob"
    assert daemon.get("/provider").text == "provider"
    assert daemon.get("/rule").text == "rule"
    assert_json_error(daemon.get("/from-subfolder"), 404, "not_found")


def test_custom_script_folders(daemon):
    daemon.write_config(paths={"scripts": "lua/s", "providers": "lua/p", "rules": "does-not-exist"})
    daemon.write_script("lua/s/a.lua", """
        function a(req) return 200, "a" end
        route("GET", "/a", "a")
    """)
    daemon.write_script("lua/p/b.lua", """
        function b(req) return 200, "b" end
        route("GET", "/b", "b")
    """)
    daemon.write_script("scripts/ignored.lua", """
        function c(req) return 200, "c" end
        route("GET", "/c", "c")
    """)
    daemon.start()
    assert daemon.get("/a").text == "a"
    assert daemon.get("/b").text == "b"
    assert daemon.get("/c").status == 404


# ================================================================ http.request

PROXY_SCRIPT = """
function proxy(req)
  local status, headers, body = http.request{
    method = "PUT",
    url = config.upstream .. "/target/path?q=1",
    headers = {["X-Forwarded-Thing"] = "abc", ["Content-Type"] = "application/json"},
    body = '{"a":1}',
    timeout = 5,
  }
  local reply
  for k, v in pairs(headers or {}) do
    if string.lower(k) == "x-reply" then reply = v end
  end
  return 200, {status = status, body = body, reply = reply}
end
function broken(req)
  local status, err = http.request{method = "GET", url = config.closed_url, timeout = 5}
  return 200, {is_nil = (status == nil), err = err}
end
function slow(req)
  local status, headers, body = http.request{url = config.upstream .. "/slow", timeout = 30}
  return 200, {status = status, body = body}
end
function short_timeout(req)
  local status, err = http.request{url = config.upstream .. "/hang", timeout = 0.5}
  return 200, {is_nil = (status == nil), err = err}
end
function fast(req) return 200, "fast" end
route("POST", "/proxy", "proxy")
route("GET", "/broken", "broken")
route("GET", "/slow", "slow")
route("GET", "/short-timeout", "short_timeout")
route("GET", "/fast", "fast")
"""


def _proxy_daemon(daemon, upstream_url):
    daemon.write_config(upstream=upstream_url, closed_url=f"http://127.0.0.1:{free_port()}/x")
    daemon.write_script("scripts/proxy.lua", PROXY_SCRIPT)
    daemon.start()
    return daemon


def test_http_request_passes_method_headers_body(daemon, fake_server):
    fake = fake_server(status=202, body="pong", headers={"X-Reply": "yes"})
    d = _proxy_daemon(daemon, fake.url)
    before = d.metric("switchboard_outbound_requests_total", status="202")
    resp = d.post("/proxy", body="")
    assert resp.status == 200, resp
    assert resp.json() == {"status": 202, "body": "pong", "reply": "yes"}

    assert len(fake.requests) == 1
    got = fake.requests[0]
    assert got.method == "PUT"
    assert got.path == "/target/path?q=1"
    assert got.headers.get("X-Forwarded-Thing") == "abc"
    assert got.headers.get("Content-Type") == "application/json"
    assert got.body == b'{"a":1}'

    d.wait_metric("switchboard_outbound_requests_total", lambda v: v >= before + 1, status="202")
    assert d.metric("switchboard_outbound_requests_total", status="202") == before + 1


def test_http_request_network_error_returns_nil_and_message(daemon, fake_server):
    fake = fake_server()
    d = _proxy_daemon(daemon, fake.url)
    before = d.metric("switchboard_outbound_requests_total", status="error")
    resp = d.get("/broken")
    assert resp.status == 200, resp
    doc = resp.json()
    assert doc["is_nil"] is True
    assert isinstance(doc["err"], str) and doc["err"]
    d.wait_metric("switchboard_outbound_requests_total", lambda v: v >= before + 1, status="error")


def test_http_request_timeout_returns_nil_and_message(daemon, fake_server):
    gate = threading.Event()
    fake = fake_server(gate=gate)
    d = _proxy_daemon(daemon, fake.url)
    resp = d.get("/short-timeout")
    gate.set()
    assert resp.status == 200, resp
    doc = resp.json()
    assert doc["is_nil"] is True
    assert isinstance(doc["err"], str) and doc["err"]


def test_slow_upstream_does_not_block_other_requests(daemon, fake_server):
    """While one job waits on a slow upstream, the daemon keeps answering."""
    gate = threading.Event()
    fake = fake_server(body="slow-body", gate=gate)
    d = _proxy_daemon(daemon, fake.url)

    thread, result = run_in_thread(d.get, "/slow")
    try:
        fake.wait_for_requests(1)  # the slow job is now waiting on the upstream
        assert d.get("/healthz").status == 200
        assert d.get("/fast").text == "fast"
        assert d.metric("switchboard_jobs_in_flight") >= 1
        assert thread.is_alive() and not result, "slow request finished before the upstream answered"
    finally:
        gate.set()
    thread.join(15)
    assert not thread.is_alive()
    assert "error" not in result, result
    assert result["value"].status == 200
    assert result["value"].json() == {"status": 200, "body": "slow-body"}
    wait_until(lambda: d.metric("switchboard_jobs_in_flight") == 0, timeout=10, message="jobs_in_flight back to 0")


def test_slow_upstream_with_real_delay(daemon, fake_server):
    """Same as above with a fake that simply takes 2 s to answer."""
    fake = fake_server(body="late", delay=2.0)
    d = _proxy_daemon(daemon, fake.url)
    thread, result = run_in_thread(d.get, "/slow")
    fake.wait_for_requests(1)
    health = d.get("/healthz")
    finished_before = not thread.is_alive()
    thread.join(15)
    assert health.status == 200
    assert result["value"].json() == {"status": 200, "body": "late"}
    # /healthz went out after the upstream got the request and (with a 2 s
    # upstream) must be answered before the slow request completes
    assert not finished_before, "/healthz was only answered after the slow request completed"


# ===================================================================== sleep


def test_sleep_yields_and_returns(daemon):
    daemon.write_script("scripts/sleep.lua", """
        function nap(req)
          local t0 = now()
          sleep(0.3)
          return 200, {slept = now() - t0}
        end
        route("GET", "/nap", "nap")
    """)
    daemon.start()
    thread, result = run_in_thread(daemon.get, "/nap")
    assert daemon.get("/healthz").status == 200
    thread.join(15)
    resp = result["value"]
    assert resp.status == 200, resp
    assert resp.json()["slept"] >= 0.25


# ==================================================================== timers

TIMER_SCRIPT = """
function arm(req)
  local id = timer.after(0.2, "on_fire", {v = req.query.v or "hello"})
  return 200, {id = id}
end
function on_fire(data, id)
  state.set("fired", {v = data.v, id = id})
end
function fired(req)
  local f = state.get("fired")
  if f == nil then return 200, {fired = false} end
  return 200, {fired = true, v = f.v, id = f.id}
end
function start_every(req)
  state.set("ticks", 0)
  local id = timer.every(0.1, "tick", {step = 1})
  return 200, {id = id}
end
function tick(data, id)
  state.set("ticks", (state.get("ticks") or 0) + data.step)
  state.set("tick_id", id)
end
function cancel(req)
  return 200, {cancelled = timer.cancel(tonumber(req.query.id))}
end
function ticks(req)
  return 200, {ticks = state.get("ticks") or 0, id = state.get("tick_id")}
end
route("POST", "/arm", "arm")
route("GET", "/fired", "fired")
route("POST", "/every", "start_every")
route("POST", "/cancel", "cancel")
route("GET", "/ticks", "ticks")
"""


@pytest.fixture
def timer_daemon(daemon):
    daemon.write_script("scripts/timers.lua", TIMER_SCRIPT)
    daemon.start()
    return daemon


def test_timer_after_fires_once_with_data_and_id(timer_daemon):
    d = timer_daemon
    assert d.get("/fired").json() == {"fired": False}
    resp = d.post("/arm?v=payload", body="")
    assert resp.status == 200, resp
    timer_id = resp.json()["id"]
    assert isinstance(timer_id, int)
    doc = wait_until(lambda: (lambda j: j if j["fired"] else None)(d.get("/fired").json()),
                     timeout=10, message="timer.after handler to write state")
    assert doc == {"fired": True, "v": "payload", "id": timer_id}
    wait_until(lambda: d.metric("switchboard_timers_pending") == 0, timeout=5,
               message="timers_pending back to 0 after a one-shot timer")


def test_timer_every_fires_repeatedly_and_cancel_stops_it(timer_daemon):
    d = timer_daemon
    timer_id = d.post("/every", body="").json()["id"]
    assert d.metric("switchboard_timers_pending") == 1
    wait_until(lambda: d.get("/ticks").json()["ticks"] >= 3, timeout=10, message="3 ticks")
    assert d.get("/ticks").json()["id"] == timer_id

    assert d.post(f"/cancel?id={timer_id}", body="").json() == {"cancelled": True}
    after_cancel = d.get("/ticks").json()["ticks"]
    time.sleep(0.6)  # six intervals: a live timer would tick again
    later = d.get("/ticks").json()["ticks"]
    assert later <= after_cancel + 1, f"timer kept firing after cancel: {after_cancel} -> {later}"
    assert d.metric("switchboard_timers_pending") == 0
    # cancelling again / an unknown id -> false
    assert d.post(f"/cancel?id={timer_id}", body="").json() == {"cancelled": False}
    assert d.post("/cancel?id=987654", body="").json() == {"cancelled": False}


def test_timer_data_must_be_json_encodable(daemon):
    daemon.write_script("scripts/t.lua", """
        function handler() end
        function bad(req)
          local ok, err = pcall(timer.after, 1, "handler", {f = function() end})
          return 200, {ok = ok}
        end
        route("GET", "/bad", "bad")
    """)
    daemon.start()
    resp = daemon.get("/bad")
    assert resp.status == 200, resp
    assert resp.json() == {"ok": False}
    assert daemon.metric("switchboard_timers_pending") == 0


# ===================================================================== state


def test_state_set_get_delete_and_ttl(daemon):
    daemon.write_script("scripts/state.lua", """
        function put(req)
          state.set(req.params.k, req:json())
          return 204, ""
        end
        function get(req)
          local v = state.get(req.params.k)
          if v == nil then return 404, {missing = true} end
          return 200, {value = v}
        end
        function del(req)
          state.delete(req.params.k)
          return 204, ""
        end
        function ttl(req)
          state.set("short", "lived", 0.5)
          return 200, {value = state.get("short")}
        end
        route("PUT", "/kv/{k}", "put")
        route("GET", "/kv/{k}", "get")
        route("DELETE", "/kv/{k}", "del")
        route("POST", "/ttl", "ttl")
    """)
    daemon.start()
    value = {"a": 1, "b": ["x", "y"], "c": {"nested": True}}
    assert daemon.request("PUT", "/kv/thing", body=json.dumps(value)).status == 204
    resp = daemon.get("/kv/thing")
    assert resp.status == 200
    assert resp.json() == {"value": value}
    assert daemon.request("DELETE", "/kv/thing").status == 204
    assert daemon.get("/kv/thing").status == 404

    assert daemon.post("/ttl", body="").json() == {"value": "lived"}
    wait_until(lambda: daemon.get("/kv/short").status == 404, timeout=10, message="ttl expiry")


# ======================================================= log, json, now, config


def test_log_functions_write_logfmt_with_fields(daemon):
    daemon.write_script("scripts/log.lua", """
        function hello(req)
          log.info('say "hi"', {user = "bob smith", n = 3})
          log.warn("careful", {what = "x"})
          log.debug("hidden at info level", {})
          return 200, "ok"
        end
        route("GET", "/hello", "hello")
    """)
    daemon.start()
    assert daemon.get("/hello").status == 200
    rec = daemon.wait_for_log(msg='say "hi"')
    assert rec["level"] == "info"
    assert rec["user"] == "bob smith"
    assert rec["n"] == "3"
    assert "ts" in rec
    rec = daemon.wait_for_log(msg="careful")
    assert rec["level"] == "warn" and rec["what"] == "x"
    assert not daemon.find_logs(msg="hidden at info level")


def test_log_level_config_filters(daemon):
    daemon.write_config(log={"level": "warn"})
    daemon.write_script("scripts/log.lua", """
        function hello(req)
          log.info("info line", {})
          log.error("error line", {})
          return 200, "ok"
        end
        route("GET", "/hello", "hello")
    """)
    daemon.start()
    assert daemon.get("/hello").status == 200
    daemon.wait_for_log(msg="error line", level="error")
    assert not daemon.find_logs(msg="info line")


def test_json_now_and_config(daemon):
    daemon.write_config(custom={"greeting": "hej", "n": 7})
    daemon.write_script("scripts/misc.lua", """
        function misc(req)
          local doc = json.decode('{"x":[1,2,3],"s":"t","z":null}')
          return 200, {
            second = doc.x[2],
            s = doc.s,
            z_is_null = (doc.z == json.null or doc.z == nil),
            encoded = json.encode({k = "v"}),
            null_encoded = json.encode(json.null),
            now = now(),
            greeting = config.custom.greeting,
            n = config.custom.n,
          }
        end
        route("GET", "/misc", "misc")
    """)
    daemon.start()
    doc = daemon.get("/misc").json()
    assert doc["second"] == 2
    assert doc["s"] == "t"
    assert doc["z_is_null"] is True
    assert json.loads(doc["encoded"]) == {"k": "v"}
    assert doc["null_encoded"] == "null"
    assert isinstance(doc["now"], (int, float))
    assert abs(doc["now"] - time.time()) < 60
    assert doc["greeting"] == "hej" and doc["n"] == 7


def test_config_env_function(daemon):
    daemon.write_config(greeting=LuaExpr('env("SB_E2E_GREETING")'), unset=LuaExpr('env("SB_E2E_UNSET") == nil'))
    daemon.write_script("scripts/env.lua", """
        function g(req) return 200, {greeting = config.greeting, unset = config.unset} end
        route("GET", "/g", "g")
    """)
    daemon.start(env={"SB_E2E_GREETING": "from the environment"})
    assert daemon.get("/g").json() == {"greeting": "from the environment", "unset": True}


# =================================================================== sandbox


def test_sandbox_globals_are_absent(daemon):
    daemon.write_script("scripts/sandbox.lua", """
        function probe(req)
          return 200, {
            io = (io == nil),
            os_execute = (os == nil or os.execute == nil),
            os_exit = (os == nil or os.exit == nil),
            loadfile = (loadfile == nil),
            dofile = (dofile == nil),
          }
        end
        route("GET", "/probe", "probe")
    """)
    daemon.start()
    assert daemon.get("/probe").json() == {
        "io": True, "os_execute": True, "os_exit": True, "loadfile": True, "dofile": True,
    }


def test_config_is_read_only(daemon):
    daemon.write_config(custom={"x": 1})
    daemon.write_script("scripts/ro.lua", """
        function write_top(req)
          local ok = pcall(function() config.newkey = 1 end)
          return 200, {ok = ok, still_nil = (config.newkey == nil)}
        end
        function write_nested(req)
          local ok = pcall(function() config.custom.x = 2 end)
          return 200, {ok = ok, x = config.custom.x}
        end
        function write_unprotected(req)
          config.listen = "0.0.0.0:1"
          return 200, "wrote"
        end
        route("GET", "/top", "write_top")
        route("GET", "/nested", "write_nested")
        route("GET", "/unprotected", "write_unprotected")
    """)
    daemon.start()
    assert daemon.get("/top").json() == {"ok": False, "still_nil": True}
    assert daemon.get("/nested").json() == {"ok": False, "x": 1}
    assert_json_error(daemon.get("/unprotected"), 500, "script_error")


def test_require_only_finds_script_folder_modules(daemon):
    # a module in the daemon's cwd (on Lua's default ./?.lua path) must not load
    (daemon.workdir / "evil.lua").write_text('return "evil loaded"\n')
    daemon.write_script("scripts/lib/good.lua", 'return "good loaded"\n', raw=True)
    daemon.write_script("scripts/req.lua", """
        function r(req)
          local ok_good, good = pcall(require, "lib.good")
          local ok_evil = pcall(require, "evil")
          local ok_missing = pcall(require, "no.such.module")
          return 200, {good = ok_good and good or false, evil = ok_evil, missing = ok_missing}
        end
        route("GET", "/r", "r")
    """)
    daemon.start()
    assert daemon.get("/r").json() == {"good": "good loaded", "evil": False, "missing": False}


def test_route_outside_load_time_is_an_error(daemon):
    daemon.write_script("scripts/late.lua", """
        function late(req) return 200, "late" end
        function register(req)
          route("GET", "/late", "late")
          return 200, "registered"
        end
        route("POST", "/register", "register")
    """)
    daemon.start()
    assert_json_error(daemon.post("/register", body=""), 500, "script_error")
    assert_json_error(daemon.get("/late"), 404, "not_found")
