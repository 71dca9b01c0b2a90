#!/usr/bin/python3
"""Benchmark (not a test): loopback throughput and latency.

One run measures, with tests/bench/loadgen.c as the closed-loop load
generator (and callback receiver) pinned to core 1 and the server pinned to
core 0:
  1. the ceiling: a bare libevent evhttp server answering a ~400-byte JSON POST;
  2. switchboard, a Lua route that decodes and encodes JSON (no store);
  3. switchboard, client messages through the webhook channel with no bot:
     acknowledged ingest alone (each 202 sent after its writes commit);
  4. switchboard, client messages through the webhook channel, a Lua echo bot
     and the callback receiver, with store.sync = "normal" and "full":
     messages/s acknowledged (202 after commit), messages/s delivered to the
     callback, p50/p99 from sending a message to receiving the bot's reply.
Prints a Markdown table; nothing here asserts on time.
Environment: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (default 64).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(ROOT, "tests", "bench")
DURATION = float(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
LOADGEN = os.path.join(ROOT, "build", "bench_loadgen")
BARE = os.path.join(ROOT, "build", "bench_bare")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(cpu):
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu)]
    return []


def wait_up(url, proc, limit=15.0):
    end = time.time() + limit
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            urllib.request.urlopen(url, timeout=0.5).read()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("server did not come up: " + url)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def loadgen(port, path, secret=None, callback_port=None):
    cmd = pin(1) + [LOADGEN, "--port", str(port), "--path", path, "--connections", str(CONNECTIONS),
                    "--duration", str(DURATION)]
    if secret:
        cmd += ["--secret", secret]
    if callback_port:
        cmd += ["--callback-port", str(callback_port), "--drain", "10"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out)}


def run_bare():
    port = free_port()
    proc = subprocess.Popen(pin(0) + [BARE, str(port)])
    try:
        wait_up("http://127.0.0.1:%d/" % port, proc)
        return loadgen(port, "/")
    finally:
        stop(proc)


def run_engine(conf, path, env, secret=None, with_callback=False):
    port = free_port()
    cb = free_port() if with_callback else None
    tmp = tempfile.mkdtemp(prefix="sb-bench-")
    env = dict(os.environ, SWITCHBOARD_BENCH_DIR=BENCH, SWITCHBOARD_BENCH_DATA=os.path.join(tmp, "var"), **env)
    if cb:
        env["SWITCHBOARD_BENCH_CALLBACK"] = "http://127.0.0.1:%d/callback" % cb
    proc = subprocess.Popen(pin(0) + [os.path.join(ROOT, "switchboard"), "-c", os.path.join(BENCH, conf),
                                      "--listen", "127.0.0.1:%d" % port], env=env)
    try:
        wait_up("http://127.0.0.1:%d/healthz" % port, proc)
        return loadgen(port, path, secret, cb)
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    subprocess.run(["make", "-s", "-C", ROOT, "switchboard", "build/bench_bare", "build/bench_loadgen"], check=True)
    rows = []
    rows.append(("bare evhttp (ceiling)", run_bare()))
    rows.append(("Lua route: JSON decode + encode, no store",
                 run_engine("echo.conf.lua", "/bench/echo", {})))
    rows.append(("webhook channel, ingest only (no bot), store.sync=normal",
                 run_engine("bench.conf.lua", "/v1/channels/bench/messages",
                            {"SWITCHBOARD_BENCH_SYNC": "normal", "SWITCHBOARD_BENCH_BOT": "none"},
                            secret="bench-secret")))
    for sync in ("normal", "full"):
        rows.append(("webhook channel + Lua echo bot + callback, store.sync=%s" % sync,
                     run_engine("bench.conf.lua", "/v1/channels/bench/messages", {"SWITCHBOARD_BENCH_SYNC": sync},
                                secret="bench-secret", with_callback=True)))
    ceiling = rows[0][1]["acked_per_s"]
    print("\n%d connections, %.0f s per row, ~400-byte JSON POST; load generator on core 1, server on core 0\n"
          % (CONNECTIONS, DURATION))
    print("| row | acknowledged/s | of ceiling | delivered/s | of ceiling | p50 ms | p99 ms | failed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        delivered = r.get("delivered_per_s", 0)
        has_cb = r.get("delivered", 0) > 0
        print("| %s | %.0f | %.0f%% | %s | %s | %s | %s | %d |" % (
            name, r["acked_per_s"], 100.0 * r["acked_per_s"] / ceiling,
            "%.0f" % delivered if has_cb else "-",
            "%.0f%%" % (100.0 * delivered / ceiling) if has_cb else "-",
            "%.2f" % r["p50_ms"] if has_cb else "-", "%.2f" % r["p99_ms"] if has_cb else "-",
            r["failed"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
