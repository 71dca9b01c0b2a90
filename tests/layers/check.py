#!/usr/bin/python3
"""Layers of the C core, checked from its #include lines (make test).

A module is a .c file with its .h (some span several files: store_*,
conv_*, outbox_*, bus_*, lpattern_*). Fails when
  - modules include each other in a circle (any cycle), or
  - a model module (the store, transactions, conversations, outbox, the
    event bus, timers, state, scripts' counters, schedules) includes a Lua header or the
    job/runtime/binding/serving layers.
Prints one line per check and "N passed, N failed".
"""
import os
import re
import sys

CORE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "core")
MODEL = {"store", "txn", "conv", "outbox", "bus", "timer", "kvstate", "counters", "schedule"}
UPPER = re.compile(r"^(job|runtime|loader|bindings|bind_\w+|luajson|server|sse|offline|prelude_lua)$")
LUA_HEADERS = {"lua.h", "lauxlib.h", "lualib.h", "lua-cjson.h"}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


# Modules that span several files: <prefix>.h, <prefix>_*.c and <prefix>_*.h.
MULTI_FILE = ("store", "conv", "outbox", "bus", "lpattern")


def module_of(filename):
    base = os.path.splitext(os.path.basename(filename))[0]
    for prefix in MULTI_FILE:
        if base.startswith(prefix + "_"):
            return prefix
    return base


def read_graph():
    graph, system = {}, {}
    for name in sorted(os.listdir(CORE)):
        if not name.endswith((".c", ".h")):
            continue
        mod = module_of(name)
        graph.setdefault(mod, set())
        system.setdefault(mod, set())
        with open(os.path.join(CORE, name)) as f:
            for kind, inc in INCLUDE.findall(f.read()):
                if kind == "<":
                    system[mod].add(inc)
                else:
                    dep = module_of(inc)
                    if dep != mod:
                        graph[mod].add(dep)
    return graph, system


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    graph, system = read_graph()
    passed = failed = 0
    found = cycles(graph)
    if found:
        failed += 1
        for comp in found:
            print("FAIL include circle: " + " -> ".join(comp))
    else:
        passed += 1
        print("ok   no include circles among %d core modules" % len(graph))
    for mod in sorted(MODEL & set(graph)):
        bad = sorted(d for d in graph[mod] if UPPER.match(d)) + sorted(system[mod] & LUA_HEADERS)
        if bad:
            failed += 1
            print("FAIL model module %s includes %s" % (mod, ", ".join(bad)))
        else:
            passed += 1
            print("ok   model module %s knows no Lua, jobs or bindings" % mod)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
