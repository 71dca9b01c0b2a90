"""Reloading via POST /admin/reload and SIGHUP: new code is served, state and
handler-created timers survive, failures leave the old code serving and name
file:line."""

import threading

import pytest

from conftest import assert_json_error, wait_until


def version_script(version: str) -> str:
    return f"""
VERSION = "{version}"
function v(req) return 200, VERSION end
function slow(req)
  sleep(0.2)
  return 200, VERSION
end
route("GET", "/v", "v")
route("GET", "/slow", "slow")
"""


@pytest.fixture
def v1_daemon(daemon):
    daemon.write_script("scripts/version.lua", version_script("v1"))
    daemon.start()
    assert daemon.get("/v").text == "v1"
    return daemon


def wait_generation(daemon, gen, timeout=10):
    wait_until(lambda: daemon.generation() == gen, timeout=timeout, message=f"generation {gen}")


# ------------------------------------------------------------ successful reload


def test_admin_reload_serves_new_code_and_increments_generation(v1_daemon):
    d = v1_daemon
    ok_before = d.metric("switchboard_reloads_total", result="ok")
    d.write_script("scripts/version.lua", version_script("v2"))
    d.write_script("scripts/added.lua", """
        function added(req) return 200, "added" end
        route("GET", "/added", "added")
    """)
    resp = d.reload()
    assert resp.status == 200, resp
    assert resp.json() == {"generation": 2}
    assert d.get("/v").text == "v2"
    assert d.get("/added").text == "added"
    assert d.health() == {"status": "ok", "generation": 2}
    assert d.metric("switchboard_runtime_generation") == 2
    assert d.metric("switchboard_reloads_total", result="ok") == ok_before + 1

    # a removed script's routes disappear
    d.remove_script("scripts/added.lua")
    assert d.reload().json() == {"generation": 3}
    assert_json_error(d.get("/added"), 404, "not_found")
    assert d.get("/v").text == "v2"


def test_sighup_reload(v1_daemon):
    d = v1_daemon
    d.write_script("scripts/version.lua", version_script("v2"))
    d.sighup()
    d.wait_for_log(msg="reload ok", generation="2")
    assert d.generation() == 2
    assert d.get("/v").text == "v2"

    d.write_script("scripts/version.lua", version_script("v3"))
    d.sighup()
    d.wait_for_log(msg="reload ok", generation="3")
    assert d.get("/v").text == "v3"
    assert d.metric("switchboard_runtime_generation") == 3


def test_reload_rereads_config(daemon):
    daemon.write_config(greeting="hello")
    daemon.write_script("scripts/g.lua", """
        function g(req) return 200, config.greeting end
        route("GET", "/g", "g")
    """)
    daemon.start()
    assert daemon.get("/g").text == "hello"
    daemon.write_config(greeting="bonjour")
    assert daemon.reload().status == 200
    assert daemon.get("/g").text == "bonjour"


def test_state_survives_reload(daemon):
    daemon.write_script("scripts/s.lua", """
        function put(req) state.set("k", {n = tonumber(req.query.n)}) return 200, "ok" end
        function get(req) return 200, {value = state.get("k")} end
        route("POST", "/put", "put")
        route("GET", "/get", "get")
    """)
    daemon.start()
    assert daemon.post("/put?n=41", body="").status == 200
    assert daemon.reload().status == 200
    assert daemon.get("/get").json() == {"value": {"n": 41}}
    daemon.sighup()
    daemon.wait_for_log(msg="reload ok", generation="3")
    assert daemon.get("/get").json() == {"value": {"n": 41}}


# ------------------------------------------------------------------- timers


def timer_script(version: str) -> str:
    return f"""
-- a top-level timer belongs to this load and is replaced by a reload
timer.every(0.1, "top_tick", {{}})
function top_tick(data, id)
  state.set("top_tick_version", "{version}")
  state.set("top_count", (state.get("top_count") or 0) + 1)
end
-- a timer created in a handler survives reloads; its handler is looked up
-- by name in whatever runtime is current when it fires
function tick(data, id)
  state.set("tick_version", "{version}")
end
function start(req)
  return 200, {{id = timer.every(0.1, "tick", {{}})}}
end
function show(req)
  return 200, {{tick = state.get("tick_version"), top = state.get("top_tick_version"),
                top_count = state.get("top_count") or 0}}
end
route("POST", "/start", "start")
route("GET", "/show", "show")
"""


def test_top_level_timers_are_replaced_not_duplicated(daemon):
    daemon.write_script("scripts/timers.lua", timer_script("v1"))
    daemon.start()
    assert daemon.metric("switchboard_timers_pending") == 1
    wait_until(lambda: daemon.get("/show").json()["top"] == "v1", timeout=10, message="top-level timer v1")
    for n in range(2, 5):
        daemon.write_script("scripts/timers.lua", timer_script(f"v{n}"))
        assert daemon.reload().status == 200
        assert daemon.metric("switchboard_timers_pending") == 1, "top-level timer duplicated by reload"
    wait_until(lambda: daemon.get("/show").json()["top"] == "v4", timeout=10, message="top-level timer v4")


def test_handler_timers_survive_reload_and_run_new_code(daemon):
    daemon.write_script("scripts/timers.lua", timer_script("v1"))
    daemon.start()
    assert daemon.post("/start", body="").status == 200
    assert daemon.metric("switchboard_timers_pending") == 2
    wait_until(lambda: daemon.get("/show").json()["tick"] == "v1", timeout=10, message="handler timer v1")
    daemon.write_script("scripts/timers.lua", timer_script("v2"))
    assert daemon.reload().status == 200
    assert daemon.metric("switchboard_timers_pending") == 2
    wait_until(lambda: daemon.get("/show").json()["tick"] == "v2", timeout=10,
               message="handler-created timer to run the reloaded tick()")


# ------------------------------------------------------------- failed reload

SYNTAX_ERROR = "\n".join([
    "-- line 1",
    "local a = 1",
    "local b = = 2",  # line 3
    "",
])
RUNTIME_ERROR = "\n".join([
    "-- line 1",
    "local t = nil",
    "local x = t.field",  # line 3: attempt to index a nil value
    "",
])
MISSING_HANDLER = "\n".join([
    "-- line 1",
    'route("GET", "/missing-handler", "no_such_function")',  # line 2
    "",
])


@pytest.mark.parametrize(
    "content,line",
    [(SYNTAX_ERROR, 3), (RUNTIME_ERROR, 3), (MISSING_HANDLER, 2)],
    ids=["syntax-error", "runtime-error", "missing-handler"],
)
def test_admin_reload_failure_is_422_and_old_code_keeps_serving(v1_daemon, content, line):
    d = v1_daemon
    failed_before = d.metric("switchboard_reloads_total", result="failed")
    d.write_script("scripts/version.lua", version_script("v2"))   # a good change...
    d.write_script("scripts/bad.lua", content, raw=True)          # ...plus a broken file
    resp = d.reload()
    err = assert_json_error(resp, 422, "reload_failed")
    assert err.get("file") == "scripts/bad.lua", err
    assert err.get("line") == line, err
    assert err["message"], err
    if content is MISSING_HANDLER:
        assert "no_such_function" in err["message"], err

    # nothing of the failed load is live
    assert d.get("/v").text == "v1"
    assert d.generation() == 1
    assert_json_error(d.get("/missing-handler"), 404, "not_found")
    assert d.metric("switchboard_reloads_total", result="failed") == failed_before + 1

    # fixing the file makes the next reload succeed
    d.remove_script("scripts/bad.lua")
    assert d.reload().json() == {"generation": 2}
    assert d.get("/v").text == "v2"


@pytest.mark.parametrize(
    "content,line",
    [(SYNTAX_ERROR, 3), (RUNTIME_ERROR, 3)],
    ids=["syntax-error", "runtime-error"],
)
def test_sighup_reload_failure_is_logged_with_file_and_line(v1_daemon, content, line):
    d = v1_daemon
    d.write_script("scripts/version.lua", version_script("v2"))
    d.write_script("scripts/bad.lua", content, raw=True)
    d.sighup()
    rec = d.wait_for_log(msg="reload failed")
    assert rec.get("file") == "scripts/bad.lua", rec
    assert rec.get("line") == str(line), rec
    assert rec.get("error"), rec
    assert d.get("/v").text == "v1"
    assert d.generation() == 1
    wait_until(lambda: d.metric("switchboard_reloads_total", result="failed") >= 1, timeout=5,
               message="reloads_total{result=failed}")


def test_failed_config_reload_keeps_old_config(daemon):
    daemon.write_config(greeting="hello")
    daemon.write_script("scripts/g.lua", """
        function g(req) return 200, config.greeting end
        route("GET", "/g", "g")
    """)
    daemon.start()
    daemon.write_config_raw("return {\n  greeting = ,\n}\n")
    resp = daemon.reload()
    err = assert_json_error(resp, 422, "reload_failed")
    assert err.get("line") == 2, err
    assert str(err.get("file", "")).endswith("switchboard.conf.lua"), err
    assert daemon.get("/g").text == "hello"
    assert daemon.generation() == 1


# --------------------------------------------------------- reload under load


def test_reloads_while_requests_are_in_flight(v1_daemon):
    """A stream of requests runs during several admin and SIGHUP reloads;
    none fails, and each reload's new code is served afterwards."""
    d = v1_daemon
    stop = threading.Event()
    results = []
    lock = threading.Lock()

    def worker(paths):
        i = 0
        while not stop.is_set():
            path = paths[i % len(paths)]
            i += 1
            try:
                resp = d.get(path, timeout=20)
                item = (path, resp.status, resp.text)
            except Exception as exc:  # noqa: BLE001
                item = (path, "exception", repr(exc))
            with lock:
                results.append(item)

    threads = [threading.Thread(target=worker, args=(p,), daemon=True)
               for p in (["/v"], ["/slow"], ["/slow", "/v"], ["/healthz", "/v"])]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(results) >= 8, timeout=10, message="requests flowing")
        for gen in range(2, 8):
            version = f"v{gen}"
            d.write_script("scripts/version.lua", version_script(version))
            seen_before = len(results)
            if gen % 2 == 0:
                resp = d.reload()
                assert resp.status == 200, resp
                assert resp.json() == {"generation": gen}
            else:
                d.sighup()
                d.wait_for_log(msg="reload ok", generation=str(gen))
                wait_generation(d, gen)
            assert d.get("/v").text == version
            # let some traffic run against the new generation
            wait_until(lambda: len(results) >= seen_before + 4, timeout=10, message="more requests")
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    versions = {f"v{n}" for n in range(1, 8)}
    failures = [r for r in results if r[1] != 200]
    assert not failures, f"{len(failures)} of {len(results)} requests failed during reloads: {failures[:10]}"
    bad_bodies = [r for r in results if r[0] != "/healthz" and r[2] not in versions]
    assert not bad_bodies, bad_bodies[:10]
    assert d.generation() == 7
    assert d.metric("switchboard_reloads_total", result="ok") == 6


def test_failed_reload_keeps_old_top_level_timers(daemon):
    daemon.write_script("scripts/timers.lua", timer_script("v1"))
    daemon.start()
    wait_until(lambda: daemon.get("/show").json()["top"] == "v1", timeout=10, message="top-level timer v1")
    daemon.write_script("scripts/timers.lua", timer_script("v2"))
    daemon.write_script("scripts/zz_bad.lua", SYNTAX_ERROR, raw=True)
    assert_json_error(daemon.reload(), 422, "reload_failed")
    assert daemon.generation() == 1
    assert daemon.metric("switchboard_timers_pending") == 1
    # the old top-level timer keeps firing, and the failed load's did not start
    count = daemon.get("/show").json()["top_count"]
    wait_until(lambda: daemon.get("/show").json()["top_count"] >= count + 3, timeout=10,
               message="old top-level timer to keep firing after a failed reload")
    assert daemon.get("/show").json()["top"] == "v1"


def test_job_in_flight_finishes_on_its_runtime_which_then_closes(v1_daemon):
    """A request waiting when a reload happens is answered by the code it
    started on; the retired runtime lives exactly as long as that job."""
    d = v1_daemon
    d.write_script("scripts/version.lua", version_script("v1").replace("sleep(0.2)", "sleep(1.5)"))
    assert d.reload().status == 200
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("resp", d.get("/slow")))
    t.start()
    wait_until(lambda: d.metric("switchboard_jobs_in_flight") == 1, message="slow job in flight")
    d.write_script("scripts/version.lua", version_script("v2"))
    assert d.reload().status == 200
    assert d.get("/v").text == "v2"
    # the old generation is retired but still alive for its job
    assert d.metric("switchboard_runtimes_live") == 2
    t.join(10)
    assert result["resp"].status == 200
    assert result["resp"].text == "v1"
    wait_until(lambda: d.metric("switchboard_runtimes_live") == 1, message="retired runtime closed")


def test_generation_names_the_runtime_the_code_runs_in(daemon, fake_server):
    """generation(): +1 per reload; a job that began before a reload ends on
    its runtime and still says its number."""
    gate = threading.Event()
    upstream = fake_server(gate=gate)
    daemon.write_config(upstream=upstream.url)
    daemon.write_script("scripts/gen.lua", """
        function gen(req) return 200, { generation = generation() } end
        function gen_after_wait(req)
          local before = generation()
          http.request{ url = config.upstream .. "/wait" }
          return 200, { before = before, after = generation() }
        end
        route("GET", "/gen", "gen")
        route("GET", "/gen-after-wait", "gen_after_wait")
    """)
    daemon.start()
    assert daemon.get("/gen").json() == {"generation": 1}
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("resp", daemon.get("/gen-after-wait")))
    t.start()
    upstream.wait_for_requests(1)
    assert daemon.reload_ok() == 2
    assert daemon.get("/gen").json() == {"generation": 2}
    gate.set()
    t.join(10)
    assert result["resp"].status == 200, result["resp"]
    assert result["resp"].json() == {"before": 1, "after": 1}
    assert daemon.reload_ok() == 3
    assert daemon.get("/gen").json() == {"generation": daemon.generation()} == {"generation": 3}
