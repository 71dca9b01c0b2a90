"""Nothing acknowledged is lost: kill -9 under load, restarts restore
conversations, pending outbox entries, handler-created timers and state
(docs/conversations.md, "Store")."""

import collections
import http.client
import json
import os
import signal
import threading
import time

import pytest

from conftest import wait_until
from convkit import (
    API_TOKEN,
    by_kind,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    metric_sum,
    setup_echo_daemon,
)

N_THREADS = 10
PER_THREAD = 40  # 400 messages in all
CLIENTS_PER_THREAD = 4
KILLS = 3  # SIGKILLs spread over the stream


def settle(seconds=0.5):
    time.sleep(seconds)


# ------------------------------------------------------------ kill -9 under load


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_kill9_under_load_loses_no_acknowledged_message(fakes, daemon, sync):
    cb = fakes.callback()
    api = setup_echo_daemon(daemon, cb, sync=sync, outbox={"max_attempts": 1000})
    total = N_THREADS * PER_THREAD

    lock = threading.Lock()
    acks = {}  # our message key -> (client_id, text, 202 body, kills before the acknowledgement)
    errors = []
    resent = set()  # keys that had to be sent again (no answer, or 503)
    kill_points = [total * (k + 1) // (KILLS + 1) for k in range(KILLS)]
    kill_events = [threading.Event() for _ in kill_points]
    stage = {"kills": 0}
    armed = threading.Event()  # cleared from a kill until the restart is done: no new messages meanwhile
    armed.set()

    def worker(t):
        for i in range(PER_THREAD):
            armed.wait(120)  # so each kill comes with a stream still to send
            client = f"k{t}-{i % CLIENTS_PER_THREAD}"
            key = f"t{t}-n{i:03d}"
            text = f"msg {key}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    resp = api.post_message({"client_id": client, "text": text, "message_id": key}, timeout=15)
                except (OSError, http.client.HTTPException):
                    resp = None  # the daemon is down or was killed mid-request: send again, same key
                if resp is not None and resp.status == 202:
                    kill_now = None
                    with lock:
                        acks[key] = (client, text, resp.json(), stage["kills"])
                        k = stage["kills"]
                        if armed.is_set() and k < KILLS and len(acks) >= kill_points[k]:
                            armed.clear()
                            stage["kills"] += 1
                            kill_now = k
                    if kill_now is not None:
                        os.kill(daemon.pid, signal.SIGKILL)  # right here, with the other senders in flight
                        kill_events[kill_now].set()
                    break
                with lock:
                    resent.add(key)
                if resp is not None and resp.status != 503:
                    with lock:
                        errors.append(f"{key}: {resp!r}")
                    break
                if time.monotonic() > deadline:
                    with lock:
                        errors.append(f"{key}: not acknowledged within 120 s")
                    break
                time.sleep(0.02)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(N_THREADS)]
    for th in threads:
        th.start()
    for k, ev in enumerate(kill_events):
        assert ev.wait(60), f"kill {k + 1}: {kill_points[k]} messages not acknowledged within 60 s"
        code = daemon.restart(sig=signal.SIGKILL)  # already killed by a sender: waits for it, starts anew
        assert code == -signal.SIGKILL, f"the daemon was not running when killed (exit {code})"
        armed.set()
    for th in threads:
        th.join(timeout=150)
    assert not any(th.is_alive() for th in threads), "senders did not finish"
    assert not errors, errors[:10]
    assert len(acks) == total
    acked_before_last_kill = sum(1 for (_c, _t, _b, kills) in acks.values() if kills < KILLS)
    assert acked_before_last_kill < total, "the last kill came after the stream ended"

    # one conversation per client, every acknowledged message stored exactly once
    by_client = collections.defaultdict(list)
    for key, (client, text, body, _after) in acks.items():
        by_client[client].append((key, text, body))
    convs = {c["id"]: c for c in api.conversations_all(channel="web")}
    assert len(convs) == N_THREADS * CLIENTS_PER_THREAD, f"{len(convs)} conversations"
    stored_client_msgs = {}
    for client, items in by_client.items():
        conv_ids = {body["conversation_id"] for _k, _t, body in items}
        assert len(conv_ids) == 1, f"client {client} got several conversations: {conv_ids}"
        cid = conv_ids.pop()
        assert cid in convs, f"conversation {cid} of {client} not listed"
        msgs = api.messages_all(cid)
        client_msgs = by_kind(msgs, "client")
        texts = collections.Counter(m["text"] for m in client_msgs)
        ids = {m["id"]: m for m in client_msgs}
        for key, text, body in items:
            assert body["message_id"] in ids, f"acknowledged message {key} ({body}) is not in the store"
            assert ids[body["message_id"]]["text"] == text
            assert texts[text] == 1, f"{key} stored {texts[text]} times"
        assert len(client_msgs) == len(items), f"{client}: {len(client_msgs)} stored client messages, {len(items)} sent"
        assert [m["seq"] for m in msgs] == list(range(1, len(msgs) + 1)), f"{client}: seq has gaps or repeats"
        stored_client_msgs[client] = sorted(client_msgs, key=lambda m: m["seq"])

    # every bot reply reaches the callback; repeats only as retries of the same delivery
    want = {f"you said: {text}" for (_c, text, _b, _a) in acks.values()}
    cb.wait_for_texts(want, timeout=120)
    settle(1.0)
    deliveries = collections.defaultdict(list)
    for r in cb.accepted():
        deliveries[r.json["message"]["text"]].append(r)
    for text in want:
        reqs = deliveries[text]
        keys = {r.idempotency_key for r in reqs}
        mids = {r.json["message"]["id"] for r in reqs}
        assert len(keys) == 1 and len(mids) == 1, (
            f"{text!r} delivered {len(reqs)} times as different deliveries: keys {keys}, message ids {mids}")
    dup = sum(len(v) - 1 for v in deliveries.values())
    dup_acks = sum(1 for (_c, _t, body, _a) in acks.values() if body.get("duplicate"))
    print(f"sync={sync}: kills after {kill_points} acknowledgements, {len(resent)} sent again "
          f"({dup_acks} of them answered as duplicates), {dup} repeated deliveries")

    # per conversation, the replies arrive in the order of the client messages (first arrivals)
    first_seen = []
    seen = set()
    for r in cb.accepted():
        t = r.json["message"]["text"]
        if t not in seen:
            seen.add(t)
            first_seen.append((r.json["client_id"], t))
    for client, msgs in stored_client_msgs.items():
        expected = [f"you said: {m['text']}" for m in msgs]
        got = [t for c, t in first_seen if c == client]
        assert got == expected, f"{client}: replies out of order:\n got {got}\nwant {expected}"

    # the bot answered each client message once in the store as well
    for client, items in by_client.items():
        cid = items[0][2]["conversation_id"]
        bot_texts = collections.Counter(m["text"] for m in by_kind(api.messages_all(cid), "bot"))
        for _key, text, _body in items:
            assert bot_texts[f"you said: {text}"] == 1, f"{client}: bot reply to {text!r} stored {bot_texts[f'you said: {text}']} times"

    wait_until(lambda: metric_sum(daemon, "switchboard_outbox_pending") == 0, timeout=30,
               message="switchboard_outbox_pending back to 0")
    cb.assert_no_violations()


# ------------------------------------------------------------ restarts


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_restores_open_conversations(fakes, daemon, sig):
    cb = fakes.callback()
    api = setup_echo_daemon(daemon, cb)
    a = [api.send("c-r1", f"r1-{i}", client={"name": "Ann"}) for i in range(3)]
    b = api.send("c-r2", "r2-0", client={"name": "Bob", "email": "bob@example.com"})
    cb.wait_for_texts(["you said: r1-0", "you said: r1-1", "you said: r1-2", "you said: r2-0"])
    cid1, cid2 = a[0]["conversation_id"], b["conversation_id"]
    api.wait_messages(cid1, lambda ms: len(ms) == 6, message="6 messages in c-r1")
    api.wait_messages(cid2, lambda ms: len(ms) == 2, message="2 messages in c-r2")
    settle(0.3)
    before = {cid: (api.conversation(cid), api.messages_all(cid), api.events_all(cid)) for cid in (cid1, cid2)}
    listed_before = api.conversations_all()

    code = daemon.restart(sig=sig)
    if sig == signal.SIGTERM:
        assert code == 0, f"SIGTERM exit code {code}"

    for cid, (conv, msgs, events) in before.items():
        assert api.conversation(cid) == conv
        assert api.messages_all(cid) == msgs
        assert api.events_all(cid) == events
    assert api.conversations_all() == listed_before

    # the conversation goes on where it was
    nxt = api.send("c-r1", "r1-3")
    assert nxt["conversation_id"] == cid1
    cb.wait_for_text("you said: r1-3")
    msgs = api.wait_messages(cid1, lambda ms: len(ms) == 8, message="8 messages in c-r1")
    assert [m["seq"] for m in msgs] == list(range(1, 9))
    assert msgs[6]["id"] == nxt["message_id"] and msgs[6]["text"] == "r1-3"
    # nothing delivered before the restart is delivered again
    settle(0.5)
    assert set(cb.accepted_count_by_message_id().values()) == {1}, cb.accepted_count_by_message_id()
    # a message_id seen before the restart is still a duplicate
    first_again = api.post_message({"client_id": "c-r2", "text": "r2-0x", "message_id": "dedupe-me"})
    assert first_again.status == 202
    daemon.restart(sig=sig)
    again = api.post_message({"client_id": "c-r2", "text": "r2-0x", "message_id": "dedupe-me"})
    assert again.status == 202, again
    assert again.json().get("duplicate") is True, again.json()
    assert again.json()["message_id"] == first_again.json()["message_id"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_pending_outbox_entries_survive_restart(fakes, daemon, sig):
    cb = fakes.callback().always_fail(503)
    api = setup_echo_daemon(daemon, cb, outbox={"max_attempts": 1000})
    texts = [f"p{i}" for i in range(4)]
    for t in texts:
        api.send("c-pending", t)
    wait_until(lambda: len(cb.attempts()) >= 3, message="a few failed attempts")
    code = daemon.restart(sig=sig)
    if sig == signal.SIGTERM:
        assert code == 0
    cb.heal()
    want = [f"you said: {t}" for t in texts]
    cb.wait_for_texts(want, timeout=20)
    settle(0.5)
    assert cb.accepted_texts() == want
    assert set(cb.accepted_count_by_message_id().values()) == {1}
    keys = collections.defaultdict(set)
    for r in cb.attempts():
        keys[r.json["message"]["id"]].add(r.idempotency_key)
    assert all(len(k) == 1 for k in keys.values()), f"Idempotency-Key changed across the restart: {dict(keys)}"


TIMER_SCRIPT = """
function arm(req)
  local delay = tonumber(req.query.delay or "3")
  local id = timer.after(delay, "fire", { who = req.params.who })
  return 200, { id = id }
end

function fire(data, id)
  local n = (state.get("count:" .. data.who) or 0) + 1
  state.set("count:" .. data.who, n)
  state.set("fired:" .. data.who, { boot = config.boot, count = n })
end

function fired(req)
  return 200, { fired = state.get("fired:" .. req.params.who) or json.null,
                count = state.get("count:" .. req.params.who) or 0 }
end

route("POST", "/t/arm/{who}", "arm")
route("GET", "/t/fired/{who}", "fired")
"""


def timer_config(daemon, boot):
    daemon.write_config(boot=boot, api_token=API_TOKEN, store={"sync": "normal"})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_handler_timer_fires_after_restart(daemon, sig):
    daemon.write_script("scripts/timers.lua", TIMER_SCRIPT)
    timer_config(daemon, "first")
    daemon.start()
    resp = daemon.post("/t/arm/a?delay=3")
    assert resp.status == 200, resp
    assert daemon.get("/t/fired/a").json()["fired"] is None
    timer_config(daemon, "second")  # what the handler will see after the restart
    code = daemon.restart(sig=sig)
    if sig == signal.SIGTERM:
        assert code == 0
    doc = wait_until(lambda: (lambda d: d if d["fired"] else None)(daemon.get("/t/fired/a").json()),
                     timeout=15, message="the timer armed before the restart to fire")
    assert doc["fired"]["boot"] == "second", f"the timer fired before the restart: {doc}"
    settle(1.0)
    assert daemon.get("/t/fired/a").json()["count"] == 1


def test_overdue_timer_fires_at_start(daemon):
    daemon.write_script("scripts/timers.lua", TIMER_SCRIPT)
    timer_config(daemon, "first")
    daemon.start()
    assert daemon.post("/t/arm/b?delay=1").status == 200
    assert daemon.stop() == 0
    time.sleep(1.5)  # due while the daemon is down
    timer_config(daemon, "second")
    daemon.proc = None
    daemon.returncode = None
    daemon.start()
    doc = wait_until(lambda: (lambda d: d if d["fired"] else None)(daemon.get("/t/fired/b").json()),
                     timeout=10, message="the overdue timer to fire")
    assert doc["fired"]["boot"] == "second"
    settle(0.5)
    assert daemon.get("/t/fired/b").json()["count"] == 1


STATE_SCRIPT = """
function put(req)
  local body = req:json()
  state.set(req.params.key, body.value, body.ttl)
  return 204
end

function get(req)
  local v = state.get(req.params.key)
  if v == nil then http_error(404, "not_found", "no such key") end
  return 200, { value = v }
end

function del(req)
  return 200, { existed = state.delete(req.params.key) }
end

route("PUT", "/kv/{key}", "put")
route("GET", "/kv/{key}", "get")
route("DELETE", "/kv/{key}", "del")
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_state_survives_restart(daemon, sig):
    daemon.write_script("scripts/kv.lua", STATE_SCRIPT)
    daemon.write_config(api_token=API_TOKEN, store={"sync": "normal"})
    daemon.start()
    values = {
        "n": 42,
        "s": "h\u00e9llo",
        "t": {"a": [1, 2, 3], "b": {"c": True}},
        "overwritten": "old",
        "deleted": "gone soon",
    }
    for k, v in values.items():
        assert daemon.request("PUT", f"/kv/{k}", json.dumps({"value": v})).status == 204
    assert daemon.request("PUT", "/kv/overwritten", json.dumps({"value": "new"})).status == 204
    assert daemon.request("DELETE", "/kv/deleted").json() == {"existed": True}
    assert daemon.request("PUT", "/kv/short", json.dumps({"value": "ttl", "ttl": 1})).status == 204
    assert daemon.request("PUT", "/kv/long", json.dumps({"value": "ttl", "ttl": 3600})).status == 204

    code = daemon.restart(sig=sig)
    if sig == signal.SIGTERM:
        assert code == 0
    assert daemon.get("/kv/n").json() == {"value": 42}
    assert daemon.get("/kv/s").json() == {"value": "h\u00e9llo"}
    assert daemon.get("/kv/t").json() == {"value": {"a": [1, 2, 3], "b": {"c": True}}}
    assert daemon.get("/kv/overwritten").json() == {"value": "new"}
    assert daemon.get("/kv/deleted").status == 404
    assert daemon.get("/kv/long").json() == {"value": "ttl"}
    wait_until(lambda: daemon.get("/kv/short").status == 404, timeout=5, message="the ttl key to expire")
