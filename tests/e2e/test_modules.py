"""Modules, the frozen global environment of provider and rule files, and
handler names that pending durable work still uses (docs/lua-api.md,
"Modules and the global environment")."""

import pytest

from conftest import assert_json_error, wait_until
from convkit import install_lua_tree

GOOD_RULE = """
local M = {}
function M.hello(req) return 200, "hello from a module" end
route("GET", "/m", "rulemod.hello")
return M
"""


@pytest.fixture
def engine_daemon(daemon):
    """The engine's own Lua tree plus one good rule file, started."""
    install_lua_tree(daemon)
    daemon.write_script("rules/rulemod.lua", GOOD_RULE)
    daemon.start()
    assert daemon.get("/m").text == "hello from a module"
    return daemon


def refused(daemon, file, line=None):
    err = assert_json_error(daemon.reload(), 422, "reload_failed")
    assert err.get("file") == file, err
    if line is not None:
        assert err.get("line") == line, err
    assert daemon.generation() == 1
    assert daemon.get("/m").text == "hello from a module", "the old code keeps serving"
    return err["message"]


# ------------------------------------------------------------ the frozen environment


@pytest.mark.parametrize("name", ["json", "log", "conversations", "route", "string", "hasOperatorsOnline",
                                  "crypto", "events", "metrics", "inbound"])
def test_assigning_an_engine_global_fails_the_load_at_its_line(engine_daemon, name):
    engine_daemon.write_script("rules/bad.lua", f"local x = 1\n{name} = {{}}\n", raw=True)
    msg = refused(engine_daemon, "rules/bad.lua", 2)
    kind = "engine module" if name == "inbound" else "engine name"
    assert f"{kind} '{name}'" in msg, msg


def test_assigning_an_engine_module_says_how_to_use_it(engine_daemon):
    engine_daemon.write_script("rules/bad.lua", "channels = {}\n", raw=True)
    msg = refused(engine_daemon, "rules/bad.lua", 1)
    assert "engine module 'channels'" in msg and 'require("channels")' in msg, msg


def test_rawset_and_setmetatable_cannot_go_around_the_freeze(engine_daemon):
    engine_daemon.write_script("rules/bad.lua", 'rawset(_G, "http", {})\n', raw=True)
    assert "engine name" in refused(engine_daemon, "rules/bad.lua", 1)
    engine_daemon.write_script("rules/bad.lua", "setmetatable(_G, nil)\n", raw=True)
    assert "metatable" in refused(engine_daemon, "rules/bad.lua", 1)


def test_engine_names_stay_readable_and_own_globals_work(engine_daemon):
    d = engine_daemon
    d.write_script("rules/own.lua", """
        counter = 0                         -- a file's own global: allowed
        local channels = require("channels")
        route("GET", "/own", function(req)
          counter = counter + 1
          return 200, {
            counter = counter,
            same_module = channels == require("channels"),
            global_view = type(flow.client_message),   -- engine modules read as globals
          }
        end)
    """)
    assert d.reload_ok() == 2
    assert d.get("/own").json() == {"counter": 1, "same_module": True, "global_view": "function"}
    assert d.get("/own").json()["counter"] == 2


def test_assigning_an_engine_name_at_run_time_fails_that_job_only(engine_daemon):
    d = engine_daemon
    d.write_script("rules/own.lua", """
        route("POST", "/clobber", function(req) http = nil; return 200, "clobbered" end)
        route("GET", "/http", function(req) return 200, type(http.request) end)
    """)
    d.reload_ok()
    resp = d.post("/clobber", "")
    assert resp.status == 500, resp
    assert d.get("/http").text == "function"


def test_a_file_cannot_take_an_engine_modules_name(engine_daemon):
    engine_daemon.write_script("rules/channels.lua", "return {}\n")
    msg = refused(engine_daemon, "rules/channels.lua")
    assert "module name 'channels' is already taken by scripts/channels.lua" in msg, msg


# ------------------------------------------------------------ require and handler names


def test_modules_that_require_each_other_work_through_functions(engine_daemon):
    d = engine_daemon
    d.write_script("rules/lib/ping.lua", """
        local pong = require("lib.pong")
        local M = {}
        function M.ping(n) if n == 0 then return "ping" end return pong.pong(n - 1) end
        return M
    """)
    d.write_script("rules/lib/pong.lua", """
        local ping = require("lib.ping")   -- ping is still loading: a proxy
        local M = {}
        function M.pong(n) if n == 0 then return "pong" end return ping.ping(n - 1) end
        return M
    """)
    d.write_script("rules/game.lua", """
        local ping = require("lib.ping")
        route("GET", "/game", function(req) return 200, ping.ping(tonumber(req.query.n)) end)
    """)
    d.reload_ok()
    assert d.get("/game?n=3").text == "pong"
    assert d.get("/game?n=4").text == "ping"


def test_using_a_module_at_the_top_of_a_require_cycle_is_a_clear_load_error(engine_daemon):
    d = engine_daemon
    d.write_script("rules/lib/a.lua", 'local b = require("lib.b")\nreturn { x = 1 }\n')
    d.write_script("rules/lib/b.lua", 'local a = require("lib.a")\nlocal y = a.x\nreturn {}\n')
    d.write_script("rules/cyc.lua", 'require("lib.a")\n')
    err = assert_json_error(d.reload(), 422, "reload_failed")
    assert "require cycle" in err["message"] and "lib.a" in err["message"], err


def test_route_takes_a_function_and_handler_names_resolve_through_modules(engine_daemon):
    d = engine_daemon
    d.write_script("rules/tick.lua", """
        local M = {}
        function M.fire(data) state.set("fired", data.n) end
        route("POST", "/arm", function(req) timer.after(0, "tick.fire", { n = 7 }); return 202, "" end)
        route("GET", "/fired", function(req) return 200, { n = state.get("fired") } end)
        return M
    """)
    d.reload_ok()
    assert d.post("/arm", "").status == 202
    wait_until(lambda: d.get("/fired").json().get("n") == 7, timeout=10, message="timer handler by module name")


# ------------------------------------------------------------ pending durable work


DURABLE = """
local M = {}
function M.later(data) end
function M.flaky(data) return false end      -- an outbox job that keeps failing: stays pending
function M.on_result(result, ctx) end
route("POST", "/later", function(req) timer.after(3600, "durable.later", {}); return 202, "" end)
route("POST", "/job", function(req) outbox.call{ target = "durable.flaky", data = {} }; return 202, "" end)
route("POST", "/send", function(req)
  outbox.send{ target = "nowhere", url = req.query.url, body = {}, on_result = "durable.on_result" }
  return 202, ""
end)
return M
"""


def without(name):
    return DURABLE.replace(f"function M.{name}(", f"function M.{name}_renamed(")


@pytest.fixture
def durable_daemon(daemon):
    install_lua_tree(daemon)
    daemon.write_config(outbox={"backoff_base": 3600, "backoff_max": 3600, "max_attempts": 100})
    daemon.write_script("rules/rulemod.lua", GOOD_RULE)
    daemon.write_script("rules/durable.lua", DURABLE)
    daemon.start()
    return daemon


def test_reload_that_drops_a_pending_timers_handler_is_refused(durable_daemon):
    d = durable_daemon
    assert d.post("/later", "").status == 202
    assert d.post("/later", "").status == 202
    d.write_script("rules/durable.lua", without("later"))
    msg = refused(d, "")
    assert "timer 'durable.later'" in msg and "2 pending timers" in msg, msg
    d.write_script("rules/durable.lua", DURABLE)
    assert d.reload_ok() == 2


def test_reload_that_drops_a_pending_outbox_jobs_handler_is_refused_also_after_a_restart(durable_daemon):
    d = durable_daemon
    assert d.post("/job", "").status == 202
    d.wait_metric("switchboard_outbox_retried_total", lambda v: v >= 1)
    d.restart()   # the pending entry's handler is counted from the store at start
    d.write_script("rules/durable.lua", without("flaky"))
    msg = refused(d, "")
    assert "outbox job 'durable.flaky'" in msg and "1 pending outbox entry" in msg, msg


def test_reload_that_drops_a_pending_result_handler_is_refused(durable_daemon, fake_server):
    d = durable_daemon
    srv = fake_server(status=500)
    assert d.post(f"/send?url={srv.url}/x", "").status == 202
    srv.wait_for_requests(1)
    d.write_script("rules/durable.lua", without("on_result"))
    msg = refused(d, "")
    assert "outbox result handler 'durable.on_result'" in msg, msg
