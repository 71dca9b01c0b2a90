"""Command line: --version, usage errors, --check, --listen/--data-dir, the
default config path, and the logfmt log format."""

import re

from conftest import Daemon, dedent, free_port, is_logfmt_line, run_cli, to_lua

GOOD_SCRIPT = """
function hello(req) return 200, "hello" end
route("GET", "/hello", "hello")
"""


def write(tmp_path, rel, text):
    p = tmp_path / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def write_config(tmp_path, name="switchboard.conf.lua", **keys):
    cfg = {"data_dir": "./var", "log": {"level": "info"}}
    cfg.update(keys)
    return write(tmp_path, name, "return " + to_lua(cfg) + "\n")


# ------------------------------------------------------------ version/usage


def test_version(tmp_path):
    res = run_cli(["--version"], cwd=tmp_path)
    assert res.returncode == 0, res
    assert re.fullmatch(r"switchboard \d+\.\d+\.\d+\n?", res.stdout), repr(res.stdout)


def test_unknown_flag_prints_usage_and_exits_2(tmp_path):
    res = run_cli(["--no-such-flag"], cwd=tmp_path)
    assert res.returncode == 2, res
    assert "usage" in res.stderr.lower(), res.stderr


# ------------------------------------------------------------------ --check


def test_check_ok(tmp_path):
    cfg = write_config(tmp_path)
    write(tmp_path, "scripts/hello.lua", dedent(GOOD_SCRIPT))
    write(tmp_path, "providers/p.lua", "-- empty provider\n")
    res = run_cli(["--check", "-c", str(cfg)], cwd=tmp_path)
    assert res.returncode == 0, res
    assert res.stdout.strip() == "ok", res.stdout


def test_check_uses_default_config_path(tmp_path):
    write_config(tmp_path, name="examples/switchboard.conf.lua")
    write(tmp_path, "scripts/hello.lua", dedent(GOOD_SCRIPT))
    res = run_cli(["--check"], cwd=tmp_path)
    assert res.returncode == 0, res
    assert res.stdout.strip() == "ok"

    write(tmp_path, "scripts/bad.lua", "-- 1\nlocal = 2\n")
    res = run_cli(["--check"], cwd=tmp_path)
    assert res.returncode == 1, res
    assert "scripts/bad.lua:2:" in res.stderr, res.stderr


def test_check_syntax_error_reports_file_line(tmp_path):
    cfg = write_config(tmp_path)
    write(tmp_path, "scripts/hello.lua", dedent(GOOD_SCRIPT))
    write(tmp_path, "scripts/bad.lua", "-- line 1\nlocal a = 1\nlocal b = = 2\n")
    res = run_cli(["--check", "-c", str(cfg)], cwd=tmp_path)
    assert res.returncode == 1, res
    assert "ok" not in res.stdout.split()
    assert re.search(r"^scripts/bad\.lua:3: .+", res.stderr, re.M), res.stderr


def test_check_runtime_error_reports_file_line(tmp_path):
    cfg = write_config(tmp_path)
    write(tmp_path, "rules/r.lua", "-- line 1\nlocal t = nil\nlocal x = t.field\n")
    res = run_cli(["--check", "-c", str(cfg)], cwd=tmp_path)
    assert res.returncode == 1, res
    assert re.search(r"^rules/r\.lua:3: .+", res.stderr, re.M), res.stderr


def test_check_missing_handler_is_an_error(tmp_path):
    cfg = write_config(tmp_path)
    write(tmp_path, "scripts/routes.lua", '-- line 1\nroute("GET", "/x", "nope_handler")\n')
    res = run_cli(["--check", "-c", str(cfg)], cwd=tmp_path)
    assert res.returncode == 1, res
    assert re.search(r"^scripts/routes\.lua:2: .*nope_handler", res.stderr, re.M), res.stderr


def test_check_reports_each_error(tmp_path):
    cfg = write_config(tmp_path)
    write(tmp_path, "scripts/a_bad.lua", "local = 1\n")
    write(tmp_path, "providers/b_bad.lua", "-- 1\n-- 2\nerror('top level failure')\n")
    res = run_cli(["--check", "-c", str(cfg)], cwd=tmp_path)
    assert res.returncode == 1, res
    assert re.search(r"^scripts/a_bad\.lua:1: .+", res.stderr, re.M), res.stderr
    assert re.search(r"^providers/b_bad\.lua:3: .*top level failure", res.stderr, re.M), res.stderr


def test_check_config_error_reports_file_line(tmp_path):
    cfg = write(tmp_path, "switchboard.conf.lua", "return {\n  listen = ,\n}\n")
    res = run_cli(["--check", "-c", "switchboard.conf.lua"], cwd=tmp_path)
    assert res.returncode == 1, res
    assert re.search(r"^switchboard\.conf\.lua:2: .+", res.stderr, re.M), res.stderr
    assert cfg.exists()


def test_check_does_not_listen(tmp_path):
    # --check must not try to bind: a taken port does not matter
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        cfg = write_config(tmp_path, listen=f"127.0.0.1:{port}")
        res = run_cli(["--check", "-c", str(cfg)], cwd=tmp_path)
    assert res.returncode == 0, res
    assert res.stdout.strip() == "ok"


# ------------------------------------------------------------ switchboard test

# A stand-in for the rules engine's spec runner: each spec file calls
# test(name, fn) at its top level; a file whose label says "garbage" gets
# a result that is not a list.
RULES_SPEC = """
local M = {}
function M.run(label, source)
  if label:find("garbage", 1, true) then return "not a list" end
  local results = {}
  local env = setmetatable({
    test = function(name, fn)
      local ok, err = pcall(fn)
      results[#results + 1] = { name = name, ok = ok, message = (not ok) and tostring(err) or nil }
    end,
  }, { __index = _G })
  assert(load(source, "@" .. label, "t", env))()
  return results
end
return M
"""


def spec_tree(tmp_path, files=None):
    """A config, the runner module, a real rule file and spec files."""
    cfg = write_config(tmp_path)
    write(tmp_path, "scripts/rules_spec.lua", dedent(RULES_SPEC))
    # loaded as a rule: proves rules load while spec files next to them do not
    write(tmp_path, "rules/greeting.lua", "GREETING = 'hello'\n")
    for rel, text in (files or {}).items():
        write(tmp_path, rel, dedent(text))
    return cfg


def test_test_runs_the_rules_folder_specs(tmp_path):
    cfg = spec_tree(tmp_path, {
        "rules/greeting_spec.lua": """
            test("the rule loaded", function() assert(GREETING == "hello") end)
            test("arithmetic fails", function() error("expected 3,\\ngot 4", 0) end)
        """,
        "rules/deep/more/runaway_spec.lua": """
            test("a runaway under bounded comes back", function()
              local ok, msg = bounded(10, function() while true do end end)
              assert(ok == false and msg:find("^budget exceeded: 10 ms at "), msg)
            end)
        """,
        "rules/deep/helper.lua": "error('never run')\n",
    })
    res = run_cli(["test", "-c", str(cfg)], cwd=tmp_path)
    assert res.returncode == 1, res
    assert res.stdout.splitlines() == [
        "ok   rules/deep/more/runaway_spec.lua: a runaway under bounded comes back",
        "ok   rules/greeting_spec.lua: the rule loaded",
        "FAIL rules/greeting_spec.lua: arithmetic fails: expected 3,",
        "    got 4",
        "2 passed, 1 failed",
    ], res.stdout
    # no store: the data folder is not even created
    assert not (tmp_path / "var").exists()


def test_test_paths_and_exit_codes(tmp_path):
    cfg = spec_tree(tmp_path, {
        "specs/good_spec.lua": 'test("one", function() end)\ntest("two", function() end)\n',
        "specs/bad_spec.lua": 'test("broken", function() assert(false, "nope") end)\n',
    })
    res = run_cli(["-c", str(cfg), "test", "specs/good_spec.lua"], cwd=tmp_path)
    assert res.returncode == 0, res
    assert res.stdout.splitlines() == ["ok   specs/good_spec.lua: one", "ok   specs/good_spec.lua: two",
                                       "2 passed, 0 failed"]
    # folders in the order given, files sorted inside
    res = run_cli(["test", "-c", str(cfg), "specs/", "specs/good_spec.lua"], cwd=tmp_path)
    assert res.returncode == 1, res
    assert res.stdout.splitlines()[0] == "FAIL specs/bad_spec.lua: broken: specs/bad_spec.lua:1: nope"
    assert res.stdout.splitlines()[-1] == "4 passed, 1 failed"
    # no spec in the rules folder: nothing to fail
    res = run_cli(["test", "-c", str(cfg)], cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, "0 passed, 0 failed\n"), res
    res = run_cli(["test", "-c", str(cfg), "specs/missing_spec.lua"], cwd=tmp_path)
    assert res.returncode == 2 and "specs/missing_spec.lua" in res.stderr, res
    res = run_cli(["--check", "-c", str(cfg), "test"], cwd=tmp_path)
    assert res.returncode == 2 and "usage" in res.stderr, res


def test_test_a_spec_that_raises_runs_away_or_returns_garbage_is_one_failure(tmp_path):
    cfg = spec_tree(tmp_path, {
        "specs/a_raises_spec.lua": 'test("before", function() end)\nerror("top level boom")\n',
        "specs/b_garbage_spec.lua": 'test("ignored", function() end)\n',
        "specs/c_runaway_spec.lua": "while true do end\n",
        "specs/d_fine_spec.lua": 'test("still runs", function() end)\n',
        "specs/e_writes_spec.lua": """
            test("writes are dropped, waits refused", function()
              state.set("written", true)
              assert(not pcall(http.request, { url = "http://127.0.0.1:9/" }))
            end)
        """,
    })
    res = run_cli(["test", "-c", str(cfg), "specs"], cwd=tmp_path)
    assert res.returncode == 1, res
    lines = res.stdout.splitlines()
    assert lines[0] == "FAIL specs/a_raises_spec.lua: specs/a_raises_spec.lua:2: top level boom", lines
    assert lines[1] == "FAIL specs/b_garbage_spec.lua: rules_spec.run returned string, not a list of results"
    assert lines[2].startswith("FAIL specs/c_runaway_spec.lua: specs/c_runaway_spec.lua:1: ") and \
        "cpu budget exceeded" in lines[2], lines
    assert lines[3:] == ["ok   specs/d_fine_spec.lua: still runs",
                         "ok   specs/e_writes_spec.lua: writes are dropped, waits refused",
                         "2 passed, 3 failed"]
    assert not (tmp_path / "var").exists()


def test_test_load_errors_and_a_missing_runner_exit_1(tmp_path):
    cfg = spec_tree(tmp_path, {"rules/x_spec.lua": 'test("x", function() end)\n'})
    write(tmp_path, "rules/broken.lua", "-- 1\nlocal = 2\n")
    res = run_cli(["test", "-c", str(cfg)], cwd=tmp_path)
    assert res.returncode == 1, res
    assert "rules/broken.lua:2:" in res.stderr and "passed" not in res.stdout, res
    (tmp_path / "rules/broken.lua").unlink()
    (tmp_path / "scripts/rules_spec.lua").unlink()
    res = run_cli(["test", "-c", str(cfg)], cwd=tmp_path)
    assert res.returncode == 1, res
    assert 'require("rules_spec")' in res.stderr and "passed" not in res.stdout, res


# ------------------------------------------------------ listen / data dir


def test_listen_from_config_file(tmp_path):
    d = Daemon(tmp_path)
    port = free_port()
    d.write_config(listen=f"127.0.0.1:{port}")
    try:
        d.start(listen=False, wait=False)
        d.port = port
        d.wait_healthy()
        assert d.generation() == 1
    finally:
        d.stop()


def test_listen_flag_overrides_config(daemon):
    other = free_port()
    daemon.write_config(listen=f"127.0.0.1:{other}")
    daemon.start()  # passes --listen 127.0.0.1:<daemon.port>
    assert daemon.port != other
    assert daemon.health()["status"] == "ok"
    rec = daemon.wait_for_log(msg="listening")
    assert rec.get("addr") == f"127.0.0.1:{daemon.port}", rec


def test_data_dir_flag_is_accepted(daemon):
    daemon.start(args=["--data-dir", str(daemon.workdir / "other-var")])
    assert daemon.health()["status"] == "ok"


# ------------------------------------------------------------------- logs


def test_log_lines_are_logfmt(daemon):
    daemon.write_script("scripts/hello.lua", GOOD_SCRIPT)
    daemon.write_script("scripts/noisy.lua", """
        function noisy(req)
          log.warn('quote " and backslash \\\\ and spaces', {v = 'a "b" c'})
          return 200, "ok"
        end
        route("GET", "/noisy", "noisy")
    """)
    daemon.start()
    assert daemon.get("/hello").text == "hello"
    assert daemon.get("/noisy").status == 200
    rec = daemon.wait_for_log(msg='quote " and backslash \\ and spaces')
    assert rec["v"] == 'a "b" c'
    daemon.stop()
    lines = daemon.log_lines()
    assert lines, "daemon wrote no log lines"
    for line in lines:
        assert is_logfmt_line(line), f"not logfmt: {line!r}"
    ts_re = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
    for rec in daemon.log_records():
        assert {"ts", "level", "msg"} <= rec.keys(), rec
        assert ts_re.match(rec["ts"]), rec["ts"]
        assert rec["level"] in ("debug", "info", "warn", "error"), rec
    listening = daemon.find_logs(msg="listening")
    assert listening and listening[0]["level"] == "info"
    assert listening[0]["addr"] == f"127.0.0.1:{daemon.port}"


# ------------------------------------------------------------ the shipped example configs


EXAMPLE_ENV = {  # what the examples read with env(): set, as a user would
    "SWITCHBOARD_API_TOKEN": "api-token", "SWITCHBOARD_ADMIN_TOKEN": "admin-token",
    "SWITCHBOARD_WEB_SECRET": "web-secret", "CHAT2DESK_TOKEN": "c2d-token", "C2D_CHANNEL_ID": "17",
    "C2D_WEBHOOK_SECRET": "c2d-hook", "C2D_DEFAULT_GROUP": "Support", "JIVO_PROVIDER_ID": "jivo-provider",
    "JIVO_BOT_TOKEN": "jivo-token", "JIVO_SECRET": "jivo-secret", "CHATRA_PUBLIC_KEY": "chatra-public",
    "CHATRA_SECRET_KEY": "chatra-secret", "CHATRA_WEBHOOK_SECRET": "chatra-hook", "DESK_TOKEN_ANN": "ann-token-1",
    "DESK_TOKEN_BOB": "bob-token-1", "CHAPORT_TOKEN": "chaport-token", "CHAPORT_WEBHOOK_SECRET": "chaport-hook",
    "DESK_ANN_TOKEN": "ann-token-2", "DESK_BOB_TOKEN": "bob-token-2",
}


def test_every_example_config_passes_check(tmp_path):
    """Each examples/*.conf.lua loads with the repository's scripts and
    providers, as `switchboard --check -c examples/<name>` run from the
    repository would; the check writes nothing outside its data folder."""
    import os
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for folder in ("scripts", "providers", "rules", "examples"):
        shutil.copytree(repo / folder, tmp_path / folder)
    configs = sorted((tmp_path / "examples").glob("*.conf.lua"))
    assert len(configs) >= 2, configs
    env = dict(os.environ, **EXAMPLE_ENV)
    for cfg in configs:
        res = run_cli(["--check", "-c", str(cfg)], cwd=tmp_path, env=env)
        assert res.returncode == 0 and res.stdout.strip() == "ok", (cfg.name, res)
