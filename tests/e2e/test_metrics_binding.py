"""metrics.count: counters that scripts name, shown on /metrics
(docs/lua-api.md, "metrics.count")."""

import json

import pytest

from conftest import assert_json_error

HELP = "Counted by scripts (metrics.count)."

COUNTING = """
metrics.count("loads_total")   -- at load time too: once per load

route("POST", "/count", function(req)
  local b = req:json()
  return 200, { counted = metrics.count(b.name, b.labels, b.n) }
end)

route("POST", "/try", function(req)
  local b = req:json()
  local ok, err = pcall(metrics.count, b.name, b.labels, b.n)
  return 200, { ok = ok, error = (not ok) and tostring(err) or "" }
end)

-- An API call failed, then the job fails: the count stays.
route("GET", "/api-call-fails", function(req)
  metrics.count("acme_api_errors_total", { instance = "main", status = 503 })
  error("the platform answered 503")
end)
"""


def start(daemon, **config):
    if config:
        daemon.write_config(**config)
    daemon.write_script("scripts/count.lua", COUNTING)
    daemon.start()
    return daemon


def count(daemon, name, labels=None, n=None):
    resp = daemon.post("/count", body=_json({"name": name, "labels": labels, "n": n}))
    assert resp.status == 200, resp
    return resp.json()["counted"]


def _json(doc):
    return json.dumps({k: v for k, v in doc.items() if v is not None})


def script_lines(daemon):
    """The lines of /metrics after the core's own families."""
    resp = daemon.metrics_response()
    assert resp.status == 200, resp
    return [l for l in resp.text.splitlines() if "switchboard_" not in l]


@pytest.fixture
def counting(daemon):
    return start(daemon)


def test_a_count_shows_as_a_prometheus_counter_in_a_stable_order(counting):
    assert count(counting, "zeta_calls_total") is True
    assert count(counting, "acme_calls_total", {"instance": "main", "b": "x"}, 2) is True
    assert count(counting, "acme_calls_total", {"b": "x", "instance": "main"}) is True  # the same series
    assert count(counting, "acme_calls_total", {"instance": "backup", "b": "x"}) is True
    lines = counting.metrics_response().text.splitlines()
    # the scripts' families come after the core's
    last_core = max(i for i, l in enumerate(lines) if "switchboard_" in l)
    assert lines[last_core + 1:] == [
        f"# HELP acme_calls_total {HELP}",
        "# TYPE acme_calls_total counter",
        'acme_calls_total{b="x",instance="backup"} 1',
        'acme_calls_total{b="x",instance="main"} 3',
        f"# HELP loads_total {HELP}",
        "# TYPE loads_total counter",
        "loads_total 1",
        f"# HELP zeta_calls_total {HELP}",
        "# TYPE zeta_calls_total counter",
        "zeta_calls_total 1",
    ]
    assert counting.metric("acme_calls_total", b="x", instance="main") == 3


def test_label_values_are_escaped(counting):
    assert count(counting, "odd_total", {"why": 'say "no"\\\nnow'}) is True
    assert 'odd_total{why="say \\"no\\"\\\\\\nnow"} 1' in script_lines(counting)


def test_the_count_stays_when_the_job_then_fails(counting):
    assert_json_error(counting.get("/api-call-fails"), 500, "script_error")
    assert_json_error(counting.get("/api-call-fails"), 500, "script_error")
    # a number as a label value is written as tostring writes it
    assert counting.metric("acme_api_errors_total", instance="main", status="503") == 2


def test_counts_survive_a_reload_and_start_again_at_restart(counting):
    assert count(counting, "acme_calls_total", {"instance": "main"}, 5) is True
    assert counting.reload_ok() == 2
    assert counting.metric("acme_calls_total", instance="main") == 5
    assert counting.metric("loads_total") == 2  # the new load's top level counted once more
    assert count(counting, "acme_calls_total", {"instance": "main"}) is True
    assert counting.metric("acme_calls_total", instance="main") == 6
    counting.restart()
    assert ("acme_calls_total", (("instance", "main"),)) not in counting.metrics()
    assert counting.metric("loads_total") == 1


BAD_CALLS = [
    ({"name": "Errors_total"}, 'metrics.count: name "Errors_total" must match ^[a-z][a-z0-9_]*_total$'),
    ({"name": "errors"}, 'metrics.count: name "errors" must match'),
    ({"name": "api-errors_total"}, 'metrics.count: name "api-errors_total" must match'),
    ({"name": "switchboard_x_total"}, 'metrics.count: name "switchboard_x_total" is reserved'),
    ({"name": "a" * 95 + "_total"}, "is longer than 100 bytes"),
    ({}, "metrics.count: name must be a string, not nil"),
    ({"name": "x_total", "labels": {"Status": "1"}}, 'metrics.count: label "Status" must match ^[a-z_][a-z0-9_]*$'),
    ({"name": "x_total", "labels": {"__name__": "1"}}, 'metrics.count: label "__name__" is reserved'),
    ({"name": "x_total", "labels": {"ok": "1", "why": {"a": 1}}},
     'metrics.count: label "why" must be a string or a number, not table'),
    ({"name": "x_total", "labels": {"why": True}}, 'metrics.count: label "why" must be a string or a number, not boolean'),
    ({"name": "x_total", "labels": {"v": "x" * 129}}, 'metrics.count: label "v" has a value longer than 128 bytes'),
    ({"name": "x_total", "labels": {f"l{i}": "x" for i in range(9)}}, "metrics.count: more than 8 labels"),
    ({"name": "x_total", "labels": ["a"]}, "metrics.count: label 1: label names must be strings"),
    ({"name": "x_total", "labels": "status=1"}, "metrics.count: labels must be a table, not string"),
    ({"name": "x_total", "n": 0}, "metrics.count: n must be a positive integer"),
    ({"name": "x_total", "n": -3}, "metrics.count: n must be a positive integer"),
    ({"name": "x_total", "n": 1.5}, "metrics.count: n must be a positive integer"),
]


@pytest.mark.parametrize("call,message", BAD_CALLS, ids=[m for _, m in BAD_CALLS])
def test_a_bad_name_label_or_n_raises_an_error_naming_it_and_counts_nothing(counting, call, message):
    resp = counting.post("/try", body=_json(call))
    assert resp.status == 200, resp
    doc = resp.json()
    assert doc["ok"] is False
    assert message in doc["error"], doc
    assert [l for l in script_lines(counting) if not l.startswith(("loads_total", "# HELP loads_total",
                                                                   "# TYPE loads_total"))] == []


def test_eight_labels_and_128_byte_values_are_fine(counting):
    labels = {f"l{i}": "v" * 128 for i in range(8)}
    assert count(counting, "wide_total", labels) is True
    assert counting.metric("wide_total", **labels) == 1


def test_a_bad_call_at_load_fails_the_reload_naming_file_and_line(counting):
    counting.write_script("scripts/bad.lua", 'local x = 1\nmetrics.count("Bad")\n', raw=True)
    err = assert_json_error(counting.reload(), 422, "reload_failed")
    assert err.get("file") == "scripts/bad.lua" and err.get("line") == 2, err
    assert 'name "Bad"' in err["message"], err
    assert counting.generation() == 1
    assert count(counting, "still_total") is True, "the old code keeps serving"


def test_the_series_limit_refuses_new_series_and_warns_once_per_name(daemon):
    start(daemon, metrics={"max_series": 3})  # loads_total takes one
    assert [count(daemon, "a_total", {"i": str(i)}) for i in range(4)] == [True, True, False, False]
    assert count(daemon, "a_total", {"i": "0"}) is True, "a series that exists keeps counting"
    assert count(daemon, "b_total") is False
    assert count(daemon, "b_total") is False
    got = daemon.metrics()
    assert got[("a_total", (("i", "0"),))] == 2 and got[("a_total", (("i", "1"),))] == 1
    assert ("a_total", (("i", "2"),)) not in got
    assert not any(name == "b_total" for name, _ in got)
    assert "b_total" not in daemon.metrics_response().text
    warnings = daemon.find_logs(msg="metrics: series limit reached")
    assert [(w["level"], w["name"], w["max_series"]) for w in warnings] == [
        ("warn", "a_total", "3"),
        ("warn", "b_total", "3"),
    ]
    # a reload with a higher limit lets new series in
    daemon.write_config(metrics={"max_series": 10})
    daemon.reload_ok()
    assert count(daemon, "b_total") is True
    assert daemon.metric("b_total") == 1
