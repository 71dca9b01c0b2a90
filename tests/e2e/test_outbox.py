"""The outbox (docs/conversations.md, "Outbox"): retries with backoff,
Retry-After, ordering per lane, one Idempotency-Key per delivery, dead
letters and their retry, metrics."""

import time

import pytest

from conftest import assert_json_error, wait_until
from convkit import (
    BOT_SECRET,
    HEAL_ROUTE,
    Api,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    http_bot,
    install_lua_tree,
    metric_present,
    metric_sum,
    setup_echo_daemon,
    webhook_channel,
    write_conv_config,
)
from fakes import http_date

OUTBOX_METRICS = (
    "switchboard_outbox_pending",
    "switchboard_outbox_delivered_total",
    "switchboard_outbox_retried_total",
    "switchboard_outbox_dead_total",
)


def settle(seconds=0.5):
    time.sleep(seconds)


def wait_dead(api, predicate=lambda dead: len(dead) >= 1, timeout=15.0):
    return wait_until(lambda: (lambda d: d if predicate(d) else None)(api.dead_all()), timeout=timeout,
                      message="dead letters")


def assert_single_key_per_message(cb):
    """Every attempt of one message carries the same Idempotency-Key, and
    different messages carry different keys."""
    keys = {}
    for r in cb.attempts():
        mid = r.json["message"]["id"]
        keys.setdefault(mid, set()).add(r.idempotency_key)
    for mid, ks in keys.items():
        assert len(ks) == 1, f"message {mid} was attempted with several Idempotency-Keys: {ks}"
    flat = [next(iter(ks)) for ks in keys.values()]
    assert len(flat) == len(set(flat)), f"different messages share an Idempotency-Key: {keys}"


# ------------------------------------------------------------ retries


def test_callback_failing_three_times_delivers_each_message_once_in_order(fakes, daemon):
    cb = fakes.callback().fail_first(3, 500)
    api = setup_echo_daemon(daemon, cb)
    before = {m: metric_sum(daemon, m) for m in OUTBOX_METRICS}
    for m in OUTBOX_METRICS:
        assert metric_present(daemon, m), f"metric {m} missing"

    texts = [f"m{i}" for i in range(1, 7)]
    for t in texts:
        api.send("c-order", t)
    want = [f"you said: {t}" for t in texts]
    cb.wait_for_texts(want, timeout=30)
    settle(0.5)

    assert cb.accepted_texts() == want, "bot replies must reach the callback in the order of the client messages"
    counts = cb.accepted_count_by_message_id()
    assert sorted(counts.values()) == [1] * len(texts), f"deliveries per message: {counts}"
    # the lane is strictly ordered: the first reply is tried until it succeeds before the next is tried
    attempts = [r.json["message"]["text"] for r in cb.attempts()]
    assert attempts == [want[0]] * 4 + want[1:], attempts
    assert [r.status for r in cb.attempts()[:4]] == [500, 500, 500, 200]
    assert_single_key_per_message(cb)
    cb.assert_no_violations()

    wait_until(lambda: metric_sum(daemon, "switchboard_outbox_pending") == 0, message="outbox_pending back to 0")
    assert metric_sum(daemon, "switchboard_outbox_retried_total") >= before["switchboard_outbox_retried_total"] + 3
    assert metric_sum(daemon, "switchboard_outbox_delivered_total") >= \
        before["switchboard_outbox_delivered_total"] + len(texts)
    assert metric_sum(daemon, "switchboard_outbox_dead_total") == before["switchboard_outbox_dead_total"]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_status_is_retried(fakes, daemon, status):
    cb = fakes.callback().fail_first(1, status)
    api = setup_echo_daemon(daemon, cb)
    api.send("c-t", "hi")
    cb.wait_for_text("you said: hi")
    settle(0.3)
    assert [r.status for r in cb.attempts()] == [status, 200]
    assert_single_key_per_message(cb)
    assert api.dead_all() == []


def test_network_error_is_retried(fakes, daemon):
    """The callback is down (connection refused) at first, then comes up on the same port."""
    down = fakes.callback()
    down.close()
    api = setup_echo_daemon(daemon, down, outbox={"max_attempts": 1000})
    api.send("c-down", "anyone")
    settle(0.8)  # a few refused attempts with the small backoff
    cb = fakes.callback(port=down.port)
    cb.wait_for_text("you said: anyone", timeout=15)
    settle(0.3)
    assert list(cb.accepted_count_by_message_id().values()) == [1]
    assert api.dead_all() == []
    assert metric_sum(daemon, "switchboard_outbox_retried_total") >= 1


def test_lanes_are_independent(fakes, daemon):
    """A failing delivery holds back its own conversation only."""
    cb = fakes.callback()
    cb.fail_when(lambda r: r.json["client_id"] == "c-stuck", 503, times=None)
    api = setup_echo_daemon(daemon, cb, outbox={"max_attempts": 1000})
    api.send("c-stuck", "s1")
    api.send("c-stuck", "s2")
    api.send("c-free", "f1")
    api.send("c-free", "f2")
    cb.wait_for_texts(["you said: f1", "you said: f2"])
    assert cb.accepted_texts() == ["you said: f1", "you said: f2"]
    # the stuck lane only ever tried its first entry
    stuck = [r.json["message"]["text"] for r in cb.attempts() if r.json["client_id"] == "c-stuck"]
    assert stuck and set(stuck) == {"you said: s1"}, stuck
    cb.heal()
    cb.wait_for_texts(["you said: s1", "you said: s2"])
    got = [t for t in cb.accepted_texts() if t.startswith("you said: s")]
    assert got == ["you said: s1", "you said: s2"]
    assert_single_key_per_message(cb)


# ------------------------------------------------------------ Retry-After


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_is_honoured(fakes, daemon, form):
    cb = fakes.callback()
    if form == "seconds":
        cb.retry_after_once(1)
        bound = 0.9
    else:
        # an IMF-fixdate 3 s ahead (whole seconds, so at least 2 s ahead)
        cb.retry_after_once(lambda req: http_date(time.time() + 3))
        bound = 1.0
    api = setup_echo_daemon(daemon, cb)
    api.send("c-ra", "slow down")
    cb.wait_for_text("you said: slow down", timeout=20)
    att = cb.attempts()
    assert [r.status for r in att] == [429, 200], att
    gap = att[1].t - att[0].t
    assert gap >= bound, f"retry came {gap:.3f}s after a 429 with Retry-After ({form}); expected >= {bound}s"
    assert att[0].idempotency_key == att[1].idempotency_key


# ------------------------------------------------------------ dead letters


DEAD_FIELDS = ("id", "conversation_id", "lane", "kind", "target", "method", "url", "attempts", "reason",
               "created", "died_at")


@pytest.mark.parametrize("status", [400, 403, 404, 410, 422])
def test_other_4xx_is_dead_at_once(fakes, daemon, status):
    cb = fakes.callback().always_fail(status)
    api = setup_echo_daemon(daemon, cb)
    dead_before = metric_sum(daemon, "switchboard_outbox_dead_total")
    ack = api.send("c-4xx", "refused")
    dead = wait_dead(api)
    settle(0.5)
    assert len(cb.attempts()) == 1, f"a {status} must not be retried: {cb.attempts()}"
    dead = api.dead_all()
    assert len(dead) == 1, dead
    d = dead[0]
    for k in DEAD_FIELDS:
        assert k in d, f"dead letter field {k} missing: {d!r}"
    assert d["attempts"] == 1
    assert d["conversation_id"] == ack["conversation_id"]
    assert d["method"] == "POST"
    assert d["url"] == cb.callback_url
    assert d["target"] == "web"
    assert isinstance(d["reason"], str) and str(status) in d["reason"], d
    assert metric_sum(daemon, "switchboard_outbox_dead_total") == dead_before + 1


def test_dead_letter_after_max_attempts_then_retry(fakes, daemon):
    cb = fakes.callback().always_fail(500)
    api = setup_echo_daemon(daemon, cb, outbox={"max_attempts": 3})
    dead_before = metric_sum(daemon, "switchboard_outbox_dead_total")
    delivered_before = metric_sum(daemon, "switchboard_outbox_delivered_total")
    ack = api.send("c-dead", "doomed")
    dead = wait_dead(api)
    settle(0.5)
    assert len(dead) == 1, dead
    d = dead[0]
    for k in DEAD_FIELDS:
        assert k in d, f"dead letter field {k} missing: {d!r}"
    assert d["attempts"] == 3, d
    assert len(cb.attempts()) == 3, cb.attempts()
    assert d["conversation_id"] == ack["conversation_id"]
    assert d["url"] == cb.callback_url
    assert d["method"] == "POST"
    assert "500" in d["reason"], d
    assert d["created"] <= d["died_at"]
    assert metric_sum(daemon, "switchboard_outbox_dead_total") == dead_before + 1
    assert metric_sum(daemon, "switchboard_outbox_retried_total") >= 2

    # retry needs the API token; an unknown id is 404
    assert_json_error(api.post(f"/v1/outbox/dead/{d['id']}/retry", token=None), 401)
    assert_json_error(api.retry_dead(987654321), 404)

    cb.heal()
    resp = api.retry_dead(d["id"])
    assert resp.status == 202, resp
    assert resp.json() == {"id": d["id"], "state": "pending"}
    msg = cb.wait_for_text("you said: doomed")
    settle(0.5)
    assert cb.accepted_count_by_message_id() == {msg["id"]: 1}
    assert api.dead_all() == []
    # the re-queued delivery is the same delivery: same key
    assert_single_key_per_message(cb)
    # no longer dead
    assert_json_error(api.retry_dead(d["id"]), 404)
    assert metric_sum(daemon, "switchboard_outbox_delivered_total") >= delivered_before + 1
    cb.assert_no_violations()


def test_max_age_dead_letters_a_failing_entry(fakes, daemon):
    cb = fakes.callback().always_fail(503)
    api = setup_echo_daemon(daemon, cb, outbox={"max_attempts": 1000, "max_age": 1})
    api.send("c-age", "too old")
    dead = wait_dead(api, timeout=20)
    assert len(dead) == 1
    assert dead[0]["attempts"] >= 1
    assert dead[0]["reason"]
    n = len(cb.attempts())
    settle(0.8)
    assert len(cb.attempts()) == n, "a dead entry is still being attempted"


def test_dead_letter_listing_pages(fakes, daemon):
    cb = fakes.callback().always_fail(403)
    api = setup_echo_daemon(daemon, cb)
    convs = {api.send(f"c-p{i}", "x")["conversation_id"] for i in range(5)}
    wait_dead(api, lambda dead: len(dead) >= 5)
    paged = api.dead_all(limit=2)
    ids = [d["id"] for d in paged]
    assert len(ids) == 5 and len(set(ids)) == 5, ids
    assert {d["conversation_id"] for d in paged} == convs


# ------------------------------------------------------------ the bot lane


def setup_http_bot(daemon, fakes, **bot_kw):
    cb = fakes.callback()
    bot = fakes.bot(secret=BOT_SECRET, **bot_kw)
    install_lua_tree(daemon)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, bot="ext")},
                      bots={"ext": http_bot(bot.bot_url, secret=BOT_SECRET)})
    daemon.start()
    return Api(daemon), cb, bot


def test_http_bot_call_is_retried_with_one_key(fakes, daemon):
    api, cb, bot = setup_http_bot(daemon, fakes)
    bot.fail_first(2, 503)
    api.send("c-bot", "hello bot")
    cb.wait_for_text("you said: hello bot")
    settle(0.5)
    calls = bot.calls()
    assert [r.status for r in calls] == [503, 503, 200], calls
    keys = {r.idempotency_key for r in calls}
    assert len(keys) == 1 and None not in keys, f"bot attempts carry one Idempotency-Key: {keys}"
    assert cb.accepted_texts() == ["you said: hello bot"]


def test_http_bot_calls_are_in_order_per_conversation(fakes, daemon):
    api, cb, bot = setup_http_bot(daemon, fakes)
    bot.fail_first(2, 500)
    texts = [f"q{i}" for i in range(5)]
    for t in texts:
        api.send("c-bord", t)
    cb.wait_for_texts([f"you said: {t}" for t in texts])
    ok_texts = [r.json["text"] for r in bot.calls() if r.ok]
    assert ok_texts == texts
    assert cb.accepted_texts() == [f"you said: {t}" for t in texts]


def test_http_bot_4xx_is_dead_at_once(fakes, daemon):
    api, cb, bot = setup_http_bot(daemon, fakes)
    bot.always_fail(404)
    ack = api.send("c-bot404", "hello?")
    dead = wait_dead(api)
    settle(0.3)
    assert len(bot.calls()) == 1
    assert dead[0]["url"] == bot.bot_url
    assert dead[0]["conversation_id"] == ack["conversation_id"]
    assert cb.accepted() == []


@pytest.mark.parametrize("status", [201, 202, 204])
def test_any_2xx_is_success(fakes, daemon, status):
    cb = fakes.callback().always_answer(status)
    api = setup_echo_daemon(daemon, cb)
    api.send("c-2xx", "one")
    api.send("c-2xx", "two")
    cb.wait_for_texts(["you said: one", "you said: two"])
    settle(0.5)
    assert [r.status for r in cb.attempts()] == [status, status]
    assert api.dead_all() == []


def test_http_bot_unreadable_body_is_not_lost_silently(fakes, daemon):
    """A 2xx whose body is not the reply format: nothing reaches the client,
    the bot is not called again and again, and the problem is on record
    (a dead letter with the error, or an event in the conversation's journal;
    the spec leaves the choice open)."""
    api, cb, bot = setup_http_bot(daemon, fakes, reply=lambda body: "this is not JSON")
    ack = api.send("c-badbot", "hello")
    bot.wait_for_requests(1)

    def on_record():
        dead = api.dead_all()
        if dead:
            return ("dead", dead)
        events = api.events_all(ack["conversation_id"])
        odd = [e for e in events if e["type"] not in ("created", "message", "state", "client")]
        return ("event", odd) if odd else None

    kind, what = wait_until(on_record, timeout=10, message="a dead letter or a journal event for the bad bot reply")
    settle(0.5)
    assert len(bot.calls()) == 1, bot.calls()
    assert cb.accepted() == []
    if kind == "dead":
        assert what[0]["url"] == bot.bot_url and what[0]["reason"], what


FLAKY_LUA_BOT = """
-- Fails until POST /test/heal (a failing job keeps nothing it wrote, so the
-- bot cannot count its own failures in state), then echoes.
local M = {}

function M.on_message(conv, msg)
  if not state.get("healed") then
    error("the bot is broken")
  end
  return { { type = "text", text = "you said: " .. msg.text } }
end

return M
"""


def setup_flaky_lua_bot(daemon, fakes, failures, max_attempts):
    cb = fakes.callback()
    install_lua_tree(daemon)
    daemon.write_script("scripts/bots/flaky.lua", FLAKY_LUA_BOT)
    daemon.write_script("scripts/zz_heal.lua", HEAL_ROUTE)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, bot="flaky")},
                      bots={"flaky": {"type": "lua", "module": "bots.flaky"}},
                      outbox={"max_attempts": max_attempts})
    daemon.start()
    return Api(daemon), cb


def test_lua_bot_error_is_retried(fakes, daemon):
    api, cb = setup_flaky_lua_bot(daemon, fakes, failures=2, max_attempts=10)
    api.send("c-flaky", "hi")
    wait_until(lambda: metric_sum(daemon, "switchboard_outbox_retried_total") >= 2, timeout=15,
               message="two failed attempts of the bot job")
    assert daemon.request("POST", "/test/heal").status == 200
    cb.wait_for_text("you said: hi")
    settle(0.5)
    assert cb.accepted_texts() == ["you said: hi"]
    assert api.dead_all() == []


def test_lua_bot_always_failing_is_dead_lettered(fakes, daemon):
    api, cb = setup_flaky_lua_bot(daemon, fakes, failures=1000, max_attempts=3)
    ack = api.send("c-broken", "hi")
    dead = wait_dead(api)
    assert dead[0]["attempts"] == 3, dead
    assert dead[0]["conversation_id"] == ack["conversation_id"]
    assert dead[0]["reason"], dead[0]
    assert cb.accepted() == []


def test_pending_gauge_counts_waiting_entries(fakes, daemon):
    cb = fakes.callback().always_fail(503)
    api = setup_echo_daemon(daemon, cb, outbox={"max_attempts": 1000})
    for i in range(3):
        api.send("c-gauge", f"g{i}")
    wait_until(lambda: metric_sum(daemon, "switchboard_outbox_pending") >= 3, timeout=10,
               message="switchboard_outbox_pending >= 3 while the callback fails")
    cb.heal()
    cb.wait_for_texts([f"you said: g{i}" for i in range(3)])
    wait_until(lambda: metric_sum(daemon, "switchboard_outbox_pending") == 0, message="pending back to 0")


def test_slow_callback_times_out_and_is_retried(fakes, daemon):
    """outbox.timeout bounds one delivery: a callback that answers after it
    counts as a failure and the delivery is tried again (same key)."""
    cb = fakes.callback().stall_first(1, 3.0)
    api = setup_echo_daemon(daemon, cb, outbox={"timeout": 0.5})
    api.send("c-slow", "tick")
    wait_until(lambda: len(cb.attempts()) >= 2, timeout=15, message="a second attempt after the timeout")
    settle(0.5)
    att = cb.attempts()
    assert len(att) == 2, att
    assert att[0].t < att[1].t
    assert att[1].t - att[0].t < 2.5, "the second attempt waited for the stalled one instead of timing out"
    assert len({r.idempotency_key for r in att}) == 1
    assert api.dead_all() == []
