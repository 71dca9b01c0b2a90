#!/usr/bin/python3
"""Benchmark (not a test): loopback throughput and latency of the core.

Measures, in one run, with wrk as the load generator:
  1. a bare libevent evhttp server answering a ~400-byte JSON POST (the ceiling);
  2. switchboard answering the same POST through a Lua route that decodes the
     JSON body and encodes a JSON reply.
Server and load generator are pinned to different cores where possible.
Prints a Markdown table; nothing here asserts on time.
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
DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
BODY = ('{"client_id":"client-000042","text":"%s","client":{"name":"Ann Example",'
        '"email":"ann@example.com","page_url":"https://shop.example.com/checkout?step=2"},'
        '"message_id":"m-0000000000000042"}') % ("Hello, I would like to know where my order is. " * 5)[:230]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def taskset(cpu):
    if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1:
        return ["taskset", "-c", str(cpu)]
    return []


def wait_up(url, proc, limit=10.0):
    end = time.time() + limit
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            urllib.request.urlopen(url, timeout=0.5).read()
            return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("server did not come up: " + url)


def run_wrk(url, script):
    cmd = taskset(1) + ["wrk", "-t1", "-c%d" % CONNECTIONS, "-d%ds" % DURATION, "--latency", "-s", script, url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)" % p, out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": pct(50), "p99": pct(99), "non2xx": int(errors.group(1)) if errors else 0}


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main():
    tmp = tempfile.mkdtemp(prefix="sb-bench-")
    script = os.path.join(tmp, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        f.write("wrk.body = [[%s]]\n" % BODY)
    bare = os.path.join(ROOT, "build", "bench_bare")
    subprocess.run(["make", "-s", "-C", ROOT, "build/bench_bare"], check=True)

    results = []
    port = free_port()
    proc = subprocess.Popen(taskset(0) + [bare, str(port)])
    try:
        wait_up("http://127.0.0.1:%d/" % port, proc)
        results.append(("bare evhttp (ceiling)", run_wrk("http://127.0.0.1:%d/" % port, script)))
    finally:
        stop(proc)

    port = free_port()
    env = dict(os.environ, SWITCHBOARD_BENCH_DIR=BENCH, SWITCHBOARD_BENCH_DATA=os.path.join(tmp, "var"))
    proc = subprocess.Popen(taskset(0) + [os.path.join(ROOT, "switchboard"), "-c", os.path.join(BENCH, "bench.conf.lua"),
                                          "--listen", "127.0.0.1:%d" % port], env=env)
    try:
        wait_up("http://127.0.0.1:%d/healthz" % port, proc)
        results.append(("switchboard, Lua route (json decode + encode)",
                        run_wrk("http://127.0.0.1:%d/bench/echo" % port, script)))
    finally:
        stop(proc)
    shutil.rmtree(tmp, ignore_errors=True)

    ceiling = results[0][1]["rps"]
    print("\nbody %d bytes, %d connections, %d s per row, wrk on core 1, server on core 0\n"
          % (len(BODY), CONNECTIONS, DURATION))
    print("| server | requests/s | of ceiling | p50 ms | p99 ms | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results:
        print("| %s | %.0f | %.0f%% | %.2f | %.2f | %d |"
              % (name, r["rps"], 100.0 * r["rps"] / ceiling, r["p50"], r["p99"], r["non2xx"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
