#!/usr/bin/python3
"""Instructions per ingest request (not a test, not part of make bench).

Runs a tree's daemon under valgrind's callgrind with the bench config (no
bot, store.sync=normal), turns instrumentation on after start-up, sends
2,000 client messages one after the other through the webhook channel (100
clients), turns it off, stops the daemon and prints the instructions per
request. Unlike a timed run it does not depend on the machine's load, so
two trees compare exactly:

    tests/bench/count_instructions.py [TREE [OUT]]

TREE is a checkout with its own built ./switchboard (default: this one),
OUT the callgrind file (default /tmp/callgrind.switchboard.out; read it with
callgrind_annotate). Needs valgrind (Debian's package).
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

REQUESTS = 2000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    tree = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
    out = sys.argv[2] if len(sys.argv) > 2 else "/tmp/callgrind.switchboard.out"
    port = free_port()
    data = tempfile.mkdtemp(prefix="sb-count-")
    env = dict(os.environ, SWITCHBOARD_BENCH_DIR=os.path.join(tree, "tests", "bench"),
               SWITCHBOARD_BENCH_DATA=os.path.join(data, "var"), SWITCHBOARD_BENCH_SYNC="normal",
               SWITCHBOARD_BENCH_BOT="none")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=" + out,
                             os.path.join(tree, "switchboard"), "-c", os.path.join(tree, "tests", "bench", "bench.conf.lua"),
                             "--listen", "127.0.0.1:%d" % port], env=env, cwd=tree, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/healthz")
                c.getresponse().read()
                break
            except OSError:
                time.sleep(0.2)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], stdout=subprocess.DEVNULL, check=True)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(REQUESTS):
            body = json.dumps({"client_id": "c%d" % (i % 100), "text": "hello number %d with some words" % i,
                               "message_id": "m%d" % i})
            c.request("POST", "/v1/channels/bench/messages", body,
                      {"Authorization": "Bearer bench-secret", "Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            if r.status != 202:
                raise SystemExit("request %d answered %d" % (i, r.status))
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], stdout=subprocess.DEVNULL, check=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    with open(out) as f:
        total = int(re.search(r"^totals: (\d+)", f.read(), re.M).group(1))
    print("%s: %d instructions for %d requests, %.0f per request" % (tree, total, REQUESTS, total / REQUESTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
