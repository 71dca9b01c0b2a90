"""SIGTERM/SIGINT: stop accepting, drain in-flight jobs (up to
shutdown_grace), exit 0."""

import json
import signal
import threading

import pytest

from conftest import http_request, run_in_thread, wait_until

SHUTDOWN_SCRIPT = """
function nap(req)
  log.info("nap started", {})
  sleep(1)
  return 200, "done"
end
function wait_upstream(req)
  local status, headers, body = http.request{url = config.upstream .. "/gate", timeout = 60}
  return 200, "upstream said " .. tostring(body)
end
route("GET", "/nap", "nap")
route("GET", "/wait-upstream", "wait_upstream")
"""


def probe_new_connection(d):
    """One fresh connection: 'refused', 'shutting_down' (503), 'ok' (200),
    'hang' (accepted but not answered) or another outcome string."""
    try:
        resp = http_request(d.host, d.port, "GET", "/healthz", timeout=3)
    except ConnectionRefusedError:
        return "refused"
    except (ConnectionResetError, BrokenPipeError):
        return "refused"
    except TimeoutError:
        return "hang"
    except OSError as exc:
        if "timed out" in str(exc):
            return "hang"
        return f"oserror:{exc!r}"
    if resp.status == 503:
        try:
            code = json.loads(resp.body)["error"]["code"]
        except Exception:  # noqa: BLE001
            return f"503 without JSON error: {resp.body[:200]!r}"
        return "shutting_down" if code == "shutting_down" else f"503 code={code}"
    if resp.status == 200:
        return "ok"
    return f"status {resp.status}"


@pytest.fixture
def shutdown_daemon(daemon, fake_server):
    gate = threading.Event()
    upstream = fake_server(body="released", gate=gate)
    daemon.write_config(upstream=upstream.url, shutdown_grace=10)
    daemon.write_script("scripts/shutdown.lua", SHUTDOWN_SCRIPT)
    daemon.start()
    daemon.gate = gate
    daemon.upstream = upstream
    return daemon


def test_sigterm_lets_in_flight_sleep_finish_and_exits_0(shutdown_daemon):
    d = shutdown_daemon
    thread, result = run_in_thread(d.get, "/nap")
    d.wait_for_log(msg="nap started")
    d.send_signal(signal.SIGTERM)
    thread.join(20)
    assert not thread.is_alive(), "in-flight request never completed"
    assert "error" not in result, f"in-flight request failed after SIGTERM: {result['error']!r}"
    assert result["value"].status == 200, result["value"]
    assert result["value"].text == "done"
    assert d.wait_exit(15) == 0, f"exit code {d.proc.returncode}"
    assert probe_new_connection(d) == "refused"


def test_new_connections_after_sigterm_are_refused_or_503(shutdown_daemon):
    d = shutdown_daemon
    thread, result = run_in_thread(d.get, "/wait-upstream")
    d.upstream.wait_for_requests(1)  # the job is in flight, held by the gate
    d.send_signal(signal.SIGTERM)
    outcomes = []
    try:
        def refused_or_503():
            outcome = probe_new_connection(d)
            outcomes.append(outcome)
            return outcome in ("refused", "shutting_down", "hang") or outcome.startswith(("503", "status", "oserror"))

        wait_until(refused_or_503, timeout=10, message="new connections to be refused or answered 503")
        assert outcomes[-1] in ("refused", "shutting_down"), f"after SIGTERM new connections got: {outcomes}"
        assert thread.is_alive(), "in-flight request ended before the upstream answered"
        assert d.running(), "daemon exited while a job was still in flight"
    finally:
        d.gate.set()
    thread.join(20)
    assert "error" not in result, f"in-flight request failed: {result.get('error')!r}"
    assert result["value"].status == 200, result["value"]
    assert result["value"].text == "upstream said released"
    assert d.wait_exit(15) == 0, f"exit code {d.proc.returncode}"


def test_sigint_exits_0(shutdown_daemon):
    d = shutdown_daemon
    d.send_signal(signal.SIGINT)
    assert d.wait_exit(15) == 0, f"exit code {d.proc.returncode}"


def test_sigterm_idle_exits_0(shutdown_daemon):
    d = shutdown_daemon
    assert d.health()["status"] == "ok"
    d.send_signal(signal.SIGTERM)
    assert d.wait_exit(15) == 0, f"exit code {d.proc.returncode}"


def test_shutdown_grace_bounds_the_wait(daemon, fake_server):
    gate = threading.Event()  # never released before the daemon exits
    upstream = fake_server(gate=gate)
    daemon.write_config(upstream=upstream.url, shutdown_grace=1)
    daemon.write_script("scripts/shutdown.lua", SHUTDOWN_SCRIPT)
    daemon.start()
    thread, result = run_in_thread(daemon.get, "/wait-upstream", timeout=30)
    upstream.wait_for_requests(1)
    daemon.send_signal(signal.SIGTERM)
    code = daemon.wait_exit(15)
    assert code is not None, "daemon did not exit although shutdown_grace (1 s) had passed"
    assert code == 0, f"exit code {code}"
    thread.join(20)
