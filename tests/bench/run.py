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
  5. memory: bytes of resident memory per conversation held in memory (open
     conversations, one client message each, created through the webhook
     channel with no bot);
  6. restart: seconds from starting the daemon on a store of 100,000
     conversations and 1,000,000 messages to its first /healthz answer.
Prints Markdown tables; nothing here asserts on time.
Environment: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (default 64),
SWITCHBOARD_BIN (the binary measured, default ./switchboard: point it at
another build to compare), BENCH_ONLY (comma-separated row groups:
throughput, memory, restart).
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
BINARY = os.environ.get("SWITCHBOARD_BIN", os.path.join(ROOT, "switchboard"))
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "throughput,memory,restart").split(",")))


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


def loadgen(port, path, secret=None, callback_port=None, clients=None, duration=None, count=None):
    cmd = pin(1) + [LOADGEN, "--port", str(port), "--path", path, "--connections", str(CONNECTIONS),
                    "--duration", str(duration or DURATION)]
    if clients:
        cmd += ["--clients", str(clients)]
    if count:
        cmd += ["--count", str(count)]
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


def cpu_seconds(pid):
    """User + system CPU time of a process, all its threads."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_engine(conf, path, env, secret=None, with_callback=False):
    port = free_port()
    cb = free_port() if with_callback else None
    tmp = tempfile.mkdtemp(prefix="sb-bench-")
    env = dict(os.environ, SWITCHBOARD_BENCH_DIR=BENCH, SWITCHBOARD_BENCH_DATA=os.path.join(tmp, "var"), **env)
    if cb:
        env["SWITCHBOARD_BENCH_CALLBACK"] = "http://127.0.0.1:%d/callback" % cb
    proc = subprocess.Popen(pin(0) + [BINARY, "-c", os.path.join(BENCH, conf),
                                      "--listen", "127.0.0.1:%d" % port], env=env)
    try:
        wait_up("http://127.0.0.1:%d/healthz" % port, proc)
        cpu0 = cpu_seconds(proc.pid)
        r = loadgen(port, path, secret, cb)
        # the daemon's CPU per acknowledged request: the cost of the path,
        # steadier than a rate on a shared machine
        r["cpu_us"] = (cpu_seconds(proc.pid) - cpu0) / r["acked"] * 1e6 if r.get("acked") else 0
        return r
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def metric(port, name, label=None):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (label is None or label in line):
            total += float(line.split()[-1])
    return total


def run_memory(conversations=100000):
    """Resident memory per conversation held in memory: RSS before and after
    `conversations` clients sent one message each (no bot)."""
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="sb-bench-")
    env = dict(os.environ, SWITCHBOARD_BENCH_DIR=BENCH, SWITCHBOARD_BENCH_DATA=os.path.join(tmp, "var"),
               SWITCHBOARD_BENCH_SYNC="off", SWITCHBOARD_BENCH_BOT="none")
    proc = subprocess.Popen(pin(0) + [BINARY, "-c", os.path.join(BENCH, "bench.conf.lua"),
                                      "--listen", "127.0.0.1:%d" % port], env=env)
    try:
        wait_up("http://127.0.0.1:%d/healthz" % port, proc)
        before = rss_bytes(proc.pid)
        heap_before = metric(port, "switchboard_memory_heap_bytes") - metric(port, "switchboard_store_memory_bytes")
        # one pass over every client; the duration only bounds it
        loadgen(port, "/v1/channels/bench/messages", "bench-secret", clients=conversations,
                duration=300, count=conversations)
        time.sleep(1)
        held = metric(port, "switchboard_conversations", 'state="loaded"') or \
            metric(port, "switchboard_conversations", 'state="all"')
        after = rss_bytes(proc.pid)
        heap_after = metric(port, "switchboard_memory_heap_bytes") - metric(port, "switchboard_store_memory_bytes")
        return {"conversations": held, "rss_before": before, "rss_after": after,
                "per_conversation": (after - before) / held if held else 0,
                "heap_per_conversation": (heap_after - heap_before) / held if held else 0}
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def run_restart(conversations=100000, messages=1000000):
    """Seconds from start to the first /healthz answer on a store holding
    `conversations` conversations and `messages` messages (written straight
    into the database the binary created)."""
    import sqlite3
    tmp = tempfile.mkdtemp(prefix="sb-bench-")
    data = os.path.join(tmp, "var")
    env = dict(os.environ, SWITCHBOARD_BENCH_DIR=BENCH, SWITCHBOARD_BENCH_DATA=data,
               SWITCHBOARD_BENCH_SYNC="off", SWITCHBOARD_BENCH_BOT="none")
    argv = [BINARY, "-c", os.path.join(BENCH, "bench.conf.lua")]
    try:
        port = free_port()
        proc = subprocess.Popen(argv + ["--listen", "127.0.0.1:%d" % port], env=env)
        wait_up("http://127.0.0.1:%d/healthz" % port, proc)
        stop(proc)
        con = sqlite3.connect(os.path.join(data, "switchboard.db"))
        now = time.time()
        per = messages // conversations
        con.executemany("INSERT INTO conversations(id, channel, client_id, state, status, created, updated, last_seq)"
                        " VALUES(?,?,?,?,?,?,?,?)",
                        (("%020x" % (i + 1), "bench", "client-%07d" % i, "bot", "open", now, now, per)
                         for i in range(conversations)))
        con.executemany("INSERT INTO messages(conversation_id, seq, id, author_kind, text, created)"
                        " VALUES(?,?,?,?,?,?)",
                        (("%020x" % (i // per + 1), i % per + 1, "m%019x" % i, "client",
                          "a stored message of about sixty bytes, as clients write them", now)
                         for i in range(messages)))
        con.commit()
        con.close()
        port = free_port()
        t0 = time.time()
        proc = subprocess.Popen(argv + ["--listen", "127.0.0.1:%d" % port], env=env)
        wait_up("http://127.0.0.1:%d/healthz" % port, proc, limit=120)
        serving = time.time() - t0
        rss = rss_bytes(proc.pid)
        stop(proc)
        return {"seconds": serving, "rss": rss, "conversations": conversations, "messages": messages}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    subprocess.run(["make", "-s", "-C", ROOT, "switchboard", "build/bench_bare", "build/bench_loadgen"], check=True)
    print("binary: %s" % BINARY)
    if "memory" in ONLY:
        m = run_memory()
        print("\n| memory | conversations held | RSS before | RSS after | RSS per conversation |"
              " heap per conversation (SQLite's cache apart) |")
        print("|---|---:|---:|---:|---:|---:|")
        print("| one client message each, no bot | %d | %.1f MB | %.1f MB | %.0f B | %s |" % (
            m["conversations"], m["rss_before"] / 1e6, m["rss_after"] / 1e6, m["per_conversation"],
            "%.0f B" % m["heap_per_conversation"] if m["heap_per_conversation"] > 0 else "-"))
    if "restart" in ONLY:
        r = run_restart()
        print("\n| restart | stored | serving after | RSS then |")
        print("|---|---|---:|---:|")
        print("| first /healthz answer | %d conversations, %d messages | %.2f s | %.1f MB |" % (
            r["conversations"], r["messages"], r["seconds"], r["rss"] / 1e6))
    if "throughput" not in ONLY:
        return 0
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
    print("| row | acknowledged/s | of ceiling | delivered/s | of ceiling | p50 ms | p99 ms | failed |"
          " daemon CPU us per request |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        delivered = r.get("delivered_per_s", 0)
        has_cb = r.get("delivered", 0) > 0
        print("| %s | %.0f | %.0f%% | %s | %s | %s | %s | %d | %s |" % (
            name, r["acked_per_s"], 100.0 * r["acked_per_s"] / ceiling,
            "%.0f" % delivered if has_cb else "-",
            "%.0f%%" % (100.0 * delivered / ceiling) if has_cb else "-",
            "%.2f" % r["p50_ms"] if has_cb else "-", "%.2f" % r["p99_ms"] if has_cb else "-",
            r["failed"], "%.0f" % r["cpu_us"] if "cpu_us" in r else "-"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
