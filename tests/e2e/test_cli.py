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
