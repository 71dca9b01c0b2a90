"""Script budgets: CPU per resume, CPU per job, memory, and job wall-clock
timeout. Each runaway is stopped, reported, counted, and the engine keeps
serving."""

import threading

import pytest

from conftest import assert_json_error, wait_until

BUDGET_SCRIPT = """
function spin(req)
  while true do end
end
function pcall_spin(req)
  pcall(function() while true do end end)
  return 200, "escaped the budget"
end
function pcall_loop_spin(req)
  while true do
    pcall(function() while true do end end)
  end
end
function xpcall_spin(req)
  xpcall(function() while true do end end, function(e) return e end)
  return 200, "escaped the budget"
end
function memory_bomb(req)
  local t = {}
  local chunk = string.rep("x", 1024 * 1024)
  for i = 1, 1e9 do t[i] = chunk .. i end
  return 200, "unreachable"
end
function pcall_memory_bomb(req)
  local t = {}
  pcall(function()
    local chunk = string.rep("x", 1024 * 1024)
    for i = 1, 1e9 do t[i] = chunk .. i end
  end)
  return 200, "escaped the budget, kept " .. #t .. " MB"
end
function nap(req)
  sleep(30)
  return 200, "woke up"
end
function chew(req)
  -- each resume stays under cpu_ms_per_resume, the whole job does not
  for i = 1, 200 do
    local t0 = now()
    while now() - t0 < 0.05 do end
    sleep(0.001)
  end
  return 200, "chewed"
end
function wait_upstream(req)
  local status = http.request{url = config.upstream .. "/hang", timeout = 60}
  return 200, "upstream answered"
end
function bounded_spin(req)
  -- a runaway, one whose pcall tries to keep going, and one after a wait
  local ok, msg = bounded(50, function() while true do end end)
  local stubborn = { bounded(50, function() while true do pcall(function() while true do end end) end end) }
  local waited = { bounded(50, function() sleep(0.01) while true do end end) }
  local fine = { bounded(50, function(a, b) return a .. b end, "went ", "on") }
  return 200, { ok = ok, message = msg, stubborn = stubborn, waited = waited, fine = fine }
end
function ok(req) return 200, "ok" end
route("GET", "/bounded-spin", "bounded_spin")
route("GET", "/spin", "spin")
route("GET", "/pcall-spin", "pcall_spin")
route("GET", "/pcall-loop-spin", "pcall_loop_spin")
route("GET", "/xpcall-spin", "xpcall_spin")
route("GET", "/memory-bomb", "memory_bomb")
route("GET", "/pcall-memory-bomb", "pcall_memory_bomb")
route("GET", "/nap", "nap")
route("GET", "/chew", "chew")
route("GET", "/wait-upstream", "wait_upstream")
route("GET", "/ok", "ok")
"""

LUA_LIMITS = {"memory_limit_mb": 32, "cpu_ms_per_resume": 200, "cpu_ms_per_job": 1000, "job_timeout": 2}


@pytest.fixture
def budget_daemon(daemon, fake_server):
    gate = threading.Event()
    upstream = fake_server(gate=gate)
    daemon.write_config(lua=LUA_LIMITS, upstream=upstream.url)
    daemon.write_script("scripts/budget.lua", BUDGET_SCRIPT)
    daemon.start()
    daemon.upstream = upstream
    return daemon


def assert_stopped(d, path, reason, status=500, code="script_budget_exceeded"):
    before = d.metric("switchboard_budget_kills_total", reason=reason)
    n_logs = len(d.find_logs(msg="script stopped", reason=reason))
    resp = d.get(path)
    assert_json_error(resp, status, code)
    # logged ...
    wait_until(lambda: len(d.find_logs(msg="script stopped", reason=reason)) > n_logs, timeout=10,
               message=f'log line msg="script stopped" reason={reason}')
    rec = d.find_logs(msg="script stopped", reason=reason)[-1]
    assert rec["level"] == "error", rec
    assert "budget.lua" in rec.get("script", ""), rec
    # ... counted ...
    d.wait_metric("switchboard_budget_kills_total", lambda v: v >= before + 1, reason=reason)
    assert d.metric("switchboard_budget_kills_total", reason=reason) == before + 1
    # ... and the engine keeps serving, Lua routes included
    assert d.health()["status"] == "ok"
    assert d.get("/ok").text == "ok"


@pytest.mark.parametrize("path", ["/spin", "/pcall-spin", "/pcall-loop-spin", "/xpcall-spin"])
def test_infinite_loop_is_stopped_by_cpu_budget(budget_daemon, path):
    assert_stopped(budget_daemon, path, "cpu")


def test_cpu_budget_per_job(daemon):
    # generous wall-clock limit so that only the per-job CPU budget can trip
    daemon.write_config(lua=dict(LUA_LIMITS, cpu_ms_per_job=500, job_timeout=30), upstream="http://127.0.0.1:9")
    daemon.write_script("scripts/budget.lua", BUDGET_SCRIPT)
    daemon.start()
    assert_stopped(daemon, "/chew", "cpu")


def test_memory_bomb_is_stopped(budget_daemon):
    assert_stopped(budget_daemon, "/memory-bomb", "memory")


def test_pcall_wrapped_memory_bomb_is_stopped(budget_daemon):
    assert_stopped(budget_daemon, "/pcall-memory-bomb", "memory")


def test_job_timeout_while_sleeping_is_504(budget_daemon):
    assert_stopped(budget_daemon, "/nap", "deadline", status=504, code="job_timeout")


def test_job_timeout_while_waiting_on_upstream_is_504(budget_daemon):
    assert_stopped(budget_daemon, "/wait-upstream", "deadline", status=504, code="job_timeout")


def test_a_runaway_under_bounded_comes_back_and_the_request_answers(budget_daemon):
    d = budget_daemon
    resp = d.get("/bounded-spin")
    assert resp.status == 200, resp
    body = resp.json()
    assert body["ok"] is False
    assert body["message"].startswith("budget exceeded: 50 ms at scripts/budget.lua:"), body
    assert body["stubborn"][0] is False and body["stubborn"][1].startswith("budget exceeded: 50 ms at "), body
    assert body["waited"][0] is False and body["waited"][1].startswith("budget exceeded: 50 ms at "), body
    assert body["fine"] == [True, "went on"]
    # not a stop: nothing counted or logged as one
    assert d.metric("switchboard_budget_kills_total", reason="cpu") == 0
    assert not d.find_logs(msg="script stopped")


def test_repeated_kills_do_not_degrade_the_engine(budget_daemon):
    d = budget_daemon
    for _ in range(3):
        assert_json_error(d.get("/spin"), 500, "script_budget_exceeded")
        assert_json_error(d.get("/memory-bomb"), 500, "script_budget_exceeded")
    assert d.get("/ok").text == "ok"
    assert d.metric("switchboard_budget_kills_total", reason="cpu") == 3
    assert d.metric("switchboard_budget_kills_total", reason="memory") == 3


def test_runaway_timer_handler_is_stopped(daemon):
    daemon.write_config(lua=LUA_LIMITS)
    daemon.write_script("scripts/budget.lua", """
        function runaway(data, id)
          while true do end
        end
        function arm(req)
          timer.after(0.05, "runaway", {})
          return 200, "armed"
        end
        function ok(req) return 200, "ok" end
        route("POST", "/arm", "arm")
        route("GET", "/ok", "ok")
    """)
    daemon.start()
    assert daemon.post("/arm", body="").status == 200
    rec = daemon.wait_for_log(msg="script stopped", reason="cpu")
    assert rec["level"] == "error"
    daemon.wait_metric("switchboard_budget_kills_total", lambda v: v >= 1, reason="cpu")
    assert daemon.get("/ok").text == "ok"


def test_infinite_loop_at_top_level_fails_the_reload(daemon):
    daemon.write_config(lua=LUA_LIMITS)
    daemon.write_script("scripts/a.lua", """
        function ok(req) return 200, "ok" end
        route("GET", "/ok", "ok")
    """)
    daemon.start()
    daemon.write_script("scripts/loop.lua", "-- line 1\nwhile true do end\n", raw=True)
    resp = daemon.reload()
    err = assert_json_error(resp, 422, "reload_failed")
    assert err.get("file") == "scripts/loop.lua", err
    assert daemon.generation() == 1
    assert daemon.get("/ok").text == "ok"
