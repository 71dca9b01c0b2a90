"""The event bus end to end (docs/events.md): engine events reach script
subscribers after their writes committed, in commit order per conversation,
at least once across a crash; failing handlers are retried, then dead,
without holding other conversations back; reloads keep cursors. The SSE
stream (GET /v1/events/stream) is tested at the end.

Subscribers record what they get in `state` (one list per subscriber,
read back through GET /test/seen?sub=): a handler's writes commit only when
it succeeded, so the list shows what was handled, once per success.
"""

from __future__ import annotations

import json
import signal
import socket
import threading

import pytest

from conftest import wait_until
from convkit import (
    API_TOKEN,
    HEAL_ROUTE,
    Api,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    install_lua_tree,
    q,
    setup_echo_daemon,
)
from test_handoff import handoff  # noqa: F401 - the `handoff` fixture

# What every test script has: recording, reading back, and test routes
# that change a conversation as a rule would.
RECORDER = """
function record(key, ev)
  local list = state.get("seen:" .. key) or {}
  list[#list + 1] = { id = ev.id, name = ev.name, conversation = ev.conversation, data = ev.data,
                      attempt = ev.attempt, depth = ev.depth }
  state.set("seen:" .. key, list)
end

function show_seen(req)
  local list = state.get("seen:" .. req.query.sub)
  if not list then return 200, '{"events":[]}', { ["Content-Type"] = "application/json" } end
  return 200, { events = list }
end
route("GET", "/test/seen", "show_seen")

function tag_route(req)
  local b = req:json()
  local conv = conversations.get(b.id)
  if b.remove then conv:untag(b.tag) else conv:tag(b.tag) end
  return 200, { tags = conv.tags }
end
route("POST", "/test/tag", "tag_route")

function agent_status_route(req)
  local b = req:json()
  desks.agent_status(b.desk, b.agent, b.status)
  return 200, { ok = true }
end
route("POST", "/test/agent_status", "agent_status_route")
""" + HEAL_ROUTE

FAST_EVENTS = {"retry_max": 0.2, "max_attempts": 1000}


def write_rules(daemon, body, name="rules/test_events.lua"):
    daemon.write_script(name, RECORDER + body if name == "rules/test_events.lua" else body)


def seen(daemon, sub="all") -> list:
    resp = daemon.get(f"/test/seen?sub={q(sub)}")
    assert resp.status == 200, resp
    return resp.json()["events"]


def wait_seen(daemon, pred, sub="all", timeout=15.0, what="events") -> list:
    return wait_until(lambda: (lambda evs: evs if pred(evs) else None)(seen(daemon, sub)), timeout=timeout,
                      message=f"{what} seen by {sub} (so far: {seen(daemon, sub)!r})")


def of(events, conv_id):
    return [e for e in events if e.get("conversation") == conv_id]


def messages(events, conv_id=None):
    return [e for e in events if e["name"] == "message.created" and conv_id in (None, e.get("conversation"))]


def echo_daemon(daemon, fakes, rules, events=None, start=True, **extra):
    """The echo bot on channel ``web``, with the test's rules script."""
    cb = fakes.callback()
    api = setup_echo_daemon(daemon, cb, start=False, events=events or dict(FAST_EVENTS), **extra)
    write_rules(daemon, rules)
    if start:
        daemon.start()
    return api, cb


def journal_bus_events(api, conv_id) -> list:
    """Ids of the journal rows of a conversation that are engine events."""
    bus_types = {"created", "message", "state", "desk", "group", "agent", "tag_added", "tag_removed", "switch",
                 "livechat_started", "livechat_finished"}
    return [e["id"] for e in api.events_all(conv_id) if e["type"] in bus_types]


def by_id(events):
    return sorted(events, key=lambda e: e["id"])


# --------------------------------------------------------------------------
# each event with its data
# --------------------------------------------------------------------------


def test_every_event_of_a_live_chat_with_its_data(handoff):  # noqa: F811
    env = handoff(start=False)
    write_rules(env.d, 'events.on("*", function(ev) record("all", ev) end, { id = "all" })\n')
    env.d.start()
    env.desk.wait_webhook()
    conv_id = env.open_agent_chat("c-1")
    d = env.d
    assert d.post("/test/tag", json.dumps({"id": conv_id, "tag": "vip"})).status == 200
    assert d.post("/test/tag", json.dumps({"id": conv_id, "tag": "vip", "remove": True})).status == 200
    assert d.post("/test/agent_status", json.dumps({"desk": "support", "agent": "olga", "status": "online"})).status == 200
    resp = env.api.post(f"/v1/conversations/{conv_id}/end")
    assert resp.status == 200, resp
    evs = wait_seen(d, lambda e: any(x["name"] == "agent.status_changed" for x in e)
                    and any(x["data"].get("text") == "The agent left the chat." for x in messages(e)))

    # one subscriber sees them in commit order
    assert [e["id"] for e in evs] == sorted(e["id"] for e in evs)
    mine = of(evs, conv_id)
    names = [e["name"] for e in mine]

    created = mine[0]
    assert created["name"] == "conversation.created"
    assert created["data"]["channel"] == "web" and created["data"]["client_id"] == "c-1"

    msgs = messages(mine)
    kinds = [(m["data"]["author"]["kind"], m["data"]["text"]) for m in msgs]
    assert kinds[:4] == [("client", "hi"), ("bot", "you said: hi"), ("client", "agent please"),
                         ("agent", "Hello, I am Olga. How can I help?")], kinds
    assert all(isinstance(m["data"]["id"], str) and m["data"]["seq"] >= 1 for m in msgs)
    assert kinds[-1] == ("system", "The agent left the chat.")

    req = next(e for e in mine if e["name"] == "livechat.requested")
    assert req["data"]["action"] == "switch" and req["data"]["desk"] == "support" and req["data"]["group"] == "15"

    states = [(e["data"]["from"], e["data"]["to"], e["data"].get("reason")) for e in mine
              if e["name"] == "conversation.state_changed"]
    assert ("bot", "queued", "switch") in states
    assert ("queued", "agent", "agent answered") in states
    assert states[-1] == ("agent", "closed", "api")

    assigned = [(e["data"]["field"], e["data"].get("to")) for e in mine if e["name"] == "conversation.assigned"]
    assert ("desk", "support") in assigned and ("group", "15") in assigned
    assert any(f == "agent" and isinstance(to, str) and to for f, to in assigned)
    assert assigned[-1] == ("agent", None)   # the agent leaves with the chat

    started = next(e for e in mine if e["name"] == "livechat.started")
    assert started["data"]["desk"] == "support" and started["data"]["group"] == "15"
    assert isinstance(started["data"]["agent"], str) and started["data"]["agent"]
    # the agent joined when their first message came: after the request, before the agent's message
    assert names.index("livechat.requested") < names.index("livechat.started")

    tags = [(e["name"], e["data"]["tag"]) for e in mine if e["name"].startswith("tag.")]
    assert tags == [("tag.added", "vip"), ("tag.removed", "vip")]

    ended = next(e for e in mine if e["name"] == "livechat.ended")
    assert ended["data"] == {"reason": "api", "desk": "support", "group": "15"}

    status = [e for e in evs if e["name"] == "agent.status_changed"]
    assert len(status) == 1 and "conversation" not in status[0]
    assert status[0]["data"] == {"desk": "support", "agent": "olga", "status": "online"}

    # what the journal holds as engine events, the subscriber got, once each
    assert sorted(e["id"] for e in mine) == journal_bus_events(env.api, conv_id)


def test_every_end_reason_is_one_of_five(handoff):  # noqa: F811
    """The close phrase (client), the desk (agent) and inactivity end a chat
    with their reason in livechat.ended; a made-up reason is refused."""
    env = handoff(start=False, inactivity_timeout=3)
    write_rules(env.d, 'events.on("livechat.ended", function(ev) record("ended", ev) end, { id = "ended" })\n'
                'function bad_end(req)\n  local ok, err = pcall(livechat.finish, conversations.get(req.query.id), "whim")\n'
                '  return 200, { ok = ok, err = tostring(err) }\nend\nroute("POST", "/test/bad_end", "bad_end")\n')
    env.d.start()
    env.desk.wait_webhook()
    a = env.open_agent_chat("c-a")
    resp = env.d.post(f"/test/bad_end?id={a}")
    assert resp.status == 200 and resp.json()["ok"] is False and "reason must be" in resp.json()["err"], resp
    env.send("c-a", "Back to bot")
    b = env.open_agent_chat("c-b")
    assert env.desk.agent_closed(b).status == 200
    c = env.open_agent_chat("c-c")   # left alone: inactivity
    evs = wait_seen(env.d, lambda e: len(e) >= 3, sub="ended", timeout=20)
    reasons = {e["conversation"]: e["data"]["reason"] for e in evs}
    assert reasons == {a: "client", b: "agent", c: "inactivity"}


# --------------------------------------------------------------------------
# order, retries, dead events, all-or-nothing handlers
# --------------------------------------------------------------------------


def test_commit_order_per_conversation(fakes, daemon):
    api, _cb = echo_daemon(daemon, fakes, 'events.on("message.*", "on_msg", { id = "all" })\n'
                                          'function on_msg(ev) record("all", ev) end\n',
                           events={"concurrency": 4})
    convs = {}
    for i in range(8):
        for c in ("c-1", "c-2", "c-3"):
            convs[c] = api.send(c, f"m{i}")["conversation_id"]
    evs = wait_seen(daemon, lambda e: all(len(messages(e, cid)) == 16 for cid in convs.values()))
    for cid in convs.values():
        mine = messages(evs, cid)
        assert [m["id"] for m in mine] == sorted(m["id"] for m in mine)
        assert [m["data"]["seq"] for m in mine] == list(range(1, 17))
        client = [m["data"]["text"] for m in mine if m["data"]["author"]["kind"] == "client"]
        assert client == [f"m{i}" for i in range(8)]


STUCK_RULES = """
events.on("message.created", function(ev)
  if ev.data.author.id == "stuck" and not state.get("healed") then error("not yet") end
  record("all", ev)
end, { id = "picky" })
"""


def test_failing_handler_retried_while_other_conversations_flow(fakes, daemon):
    api, _cb = echo_daemon(daemon, fakes, STUCK_RULES)
    stuck = api.send("stuck", "one")["conversation_id"]
    api.send("stuck", "two")
    good = api.send("good", "hello")["conversation_id"]
    # the other conversation is handled while the stuck one keeps failing
    wait_seen(daemon, lambda e: len(messages(e, good)) == 2)
    daemon.wait_metric("switchboard_events_failed_total", lambda v: v >= 2, subscriber="picky")
    assert messages(seen(daemon), stuck) == []
    daemon.wait_for_log(msg="event handler failed: retrying", subscriber="picky", conversation=stuck)
    assert daemon.post("/test/heal").status == 200
    evs = wait_seen(daemon, lambda e: len([m for m in messages(e, stuck) if m["data"]["author"]["kind"] == "client"]) == 2)
    texts = [m["data"]["text"] for m in messages(evs, stuck) if m["data"]["author"]["kind"] == "client"]
    assert texts == ["one", "two"]
    assert messages(evs, stuck)[0]["attempt"] > 1
    assert daemon.metric("switchboard_events_dead_total", subscriber="picky") == 0


def test_dead_after_its_attempts_and_the_conversation_goes_on(fakes, daemon):
    rules = """
events.on("message.created", function(ev)
  if ev.data.text == "boom" then error("handler broke on boom") end
  record("all", ev)
end, { id = "fragile" })
"""
    api, _cb = echo_daemon(daemon, fakes, rules, events={"retry_max": 0.05, "max_attempts": 3})
    a = api.send("c-a", "boom")["conversation_id"]
    api.send("c-a", "after")
    b = api.send("c-b", "hello")["conversation_id"]
    rec = daemon.wait_for_log(msg="event handler dead", subscriber="fragile")
    assert rec["name"] == "message.created" and rec["conversation"] == a and rec["attempts"] == "3"
    assert "handler broke on boom" in rec["error"]
    assert int(rec["event"]) in journal_bus_events(api, a)
    evs = wait_seen(daemon, lambda e: len(messages(e, a)) == 3 and len(messages(e, b)) == 2)
    assert [m["data"]["text"] for m in messages(evs, a)] == ["you said: boom", "after", "you said: after"]
    assert daemon.metric("switchboard_events_dead_total", subscriber="fragile") == 1
    assert daemon.metric("switchboard_events_failed_total", subscriber="fragile") == 3


def test_a_failed_handler_leaves_nothing(fakes, daemon):
    rules = """
events.on("message.created", function(ev)
  if ev.data.author.kind ~= "client" then return end
  local conv = conversations.get(ev.conversation)
  conv:tag("touched")
  conv:append{ author = { kind = "system" }, text = "handler was here" }
  state.set("touched", true)
  timer.after(0, "never")
  error("fails after writing")
end, { id = "writer" })
events.on("*", function(ev) record("all", ev) end, { id = "all" })
function never() state.set("timer_ran", true) end
"""
    api, cb = echo_daemon(daemon, fakes, rules, events={"retry_max": 0.05, "max_attempts": 2})
    conv_id = api.send("c-1", "hello")["conversation_id"]
    daemon.wait_for_log(msg="event handler dead", subscriber="writer")
    wait_seen(daemon, lambda e: len(messages(e, conv_id)) == 2)
    conv = api.conversation(conv_id)
    assert "touched" not in conv["tags"]
    assert [m["text"] for m in api.messages_all(conv_id)] == ["hello", "you said: hello"]
    assert daemon.get("/test/state?key=touched").json().get("value") is None
    assert daemon.get("/test/state?key=timer_ran").json().get("value") is None
    assert not [e for e in seen(daemon) if e["name"] == "tag.added"]


def test_event_depth_counts_the_handlers_that_led_to_it(fakes, daemon):
    rules = """
events.on("message.created", function(ev)
  local text = ev.data.text
  if ev.data.author.kind == "client" then text = "noted" elseif text == "noted" then text = "noted again"
  else return end
  conversations.get(ev.conversation):append{ author = { kind = "system" }, text = text }
end, { id = "noter" })
events.on("message.created", function(ev) record("all", ev) end, { id = "all" })
"""
    api, _cb = echo_daemon(daemon, fakes, rules)
    conv_id = api.send("c-1", "hello")["conversation_id"]
    evs = wait_seen(daemon, lambda e: len(messages(e, conv_id)) == 4)
    depths = {m["data"]["text"]: m["depth"] for m in messages(evs, conv_id)}
    # the request's own messages, then one and two handlers in a row
    assert depths == {"hello": 0, "you said: hello": 0, "noted": 1, "noted again": 2}


def test_a_burst_is_held_a_window_at_a_time_and_handled_in_order(fakes, daemon):
    """1300 events of one conversation in one commit, a subscriber stuck on
    the first: memory holds a window of them, the rest waits in the journal
    and comes in order once the handler works."""
    rules = """
function burst(req)
  local conv = conversations.find_or_create("web", "burst")
  for i = 1, tonumber(req.query.n) do conv:append{ author = { kind = "system" }, text = "b" .. i } end
  return 200, { id = conv.id }
end
route("POST", "/test/burst", "burst")

events.on("message.created", function(ev)
  if not state.get("healed") then error("not yet") end
  local last = state.get("last") or 0
  if ev.data.seq ~= last + 1 then state.set("disorder", { after = last, got = ev.data.seq }) end
  state.set("last", ev.data.seq)
end, { id = "burst" })
"""
    echo_daemon(daemon, fakes, rules)
    resp = daemon.post("/test/burst?n=1300")
    assert resp.status == 200, resp
    daemon.wait_metric("switchboard_events_failed_total", lambda v: v >= 2, subscriber="burst")
    assert daemon.metric("switchboard_events_pending", subscriber="burst") == 256
    assert daemon.metric("switchboard_events_tail") <= 1024
    assert daemon.post("/test/heal").status == 200
    wait_until(lambda: daemon.get("/test/state?key=last").json().get("value") == 1300, timeout=90,
               message="the burst handled")
    assert daemon.get("/test/state?key=disorder").json().get("value") is None
    daemon.wait_metric("switchboard_events_pending", lambda v: v == 0, subscriber="burst")
    daemon.wait_metric("switchboard_events_lag", lambda v: v == 0, subscriber="burst")


# --------------------------------------------------------------------------
# durability: a crash, reloads
# --------------------------------------------------------------------------


def test_crash_between_commit_and_handling_loses_nothing(fakes, daemon):
    api, _cb = echo_daemon(daemon, fakes, STUCK_RULES.replace('ev.data.author.id == "stuck" and ', ""))
    convs = [api.send(c, "hello")["conversation_id"] for c in ("c-1", "c-2", "c-3")]
    for cid in convs:
        api.wait_messages(cid, lambda ms: len(ms) == 2)
    daemon.wait_for_log(msg="event handler failed: retrying", subscriber="picky")
    # committed, not handled: the daemon dies
    assert daemon.restart(signal.SIGKILL) == -signal.SIGKILL
    assert daemon.post("/test/heal").status == 200
    evs = wait_seen(daemon, lambda e: all(len(messages(e, cid)) == 2 for cid in convs))
    for cid in convs:
        mine = messages(evs, cid)
        assert [m["data"]["text"] for m in mine] == ["hello", "you said: hello"]
        assert [m["id"] for m in mine] == [e["id"] for e in api.events_all(cid) if e["type"] == "message"]


def test_events_handled_before_a_crash_come_again_at_most_from_the_cursor(fakes, daemon):
    """At-least-once: after a crash a subscriber may see an event again, never miss one."""
    api, _cb = echo_daemon(daemon, fakes, 'events.on("message.created", function(ev) record("all", ev) end,'
                                          ' { id = "all" })\n')
    first = api.send("c-1", "one")["conversation_id"]
    wait_seen(daemon, lambda e: len(messages(e, first)) == 2)
    daemon.restart(signal.SIGKILL)
    api.send("c-1", "two")
    evs = wait_seen(daemon, lambda e: any(m["data"]["text"] == "you said: two" for m in messages(e)))
    texts = [m["data"]["text"] for m in messages(evs, first)]
    assert texts[:2] == ["one", "you said: one"] and texts[-2:] == ["two", "you said: two"]
    assert set(texts) == {"one", "you said: one", "two", "you said: two"}


def test_reload_keeps_cursors_and_new_subscribers_start_at_the_end(fakes, daemon):
    api, _cb = echo_daemon(daemon, fakes, 'events.on("message.created", function(ev) record("all", ev) end,'
                                          ' { id = "all" })\n')
    keeper = 'events.on("message.created", function(ev) record("keeper", ev) end, { id = "keeper" })\n'
    daemon.write_script("rules/keeper.lua", keeper)
    daemon.reload_ok()
    c = api.send("c-1", "one")["conversation_id"]
    wait_seen(daemon, lambda e: len(messages(e, c)) == 2, sub="keeper")

    # the subscriber leaves with a reload; what happens meanwhile waits for it
    daemon.remove_script("rules/keeper.lua")
    daemon.reload_ok()
    api.send("c-1", "two")
    wait_seen(daemon, lambda e: len(messages(e, c)) == 4)
    assert len(messages(seen(daemon, "keeper"), c)) == 2

    daemon.write_script("rules/keeper.lua", keeper)
    daemon.write_script("rules/late.lua",
                        'events.on("message.created", function(ev) record("late", ev) end, { id = "late" })\n')
    daemon.reload_ok()
    evs = wait_seen(daemon, lambda e: len(messages(e, c)) == 4, sub="keeper")
    assert [m["data"]["text"] for m in messages(evs, c)] == ["one", "you said: one", "two", "you said: two"]
    api.send("c-1", "three")
    wait_seen(daemon, lambda e: len(messages(e, c)) == 6, sub="keeper")
    late = wait_seen(daemon, lambda e: len(e) == 2, sub="late")
    assert [m["data"]["text"] for m in late] == ["three", "you said: three"]


def test_subscriptions_only_at_load_and_names_checked(fakes, daemon):
    api, _cb = echo_daemon(daemon, fakes, 'function late_sub(req)\n'
                                          '  local ok, err = pcall(events.on, "*", function() end)\n'
                                          '  return 200, { ok = ok, err = tostring(err) }\nend\n'
                                          'route("POST", "/test/late_sub", "late_sub")\n')
    resp = daemon.post("/test/late_sub")
    assert resp.json()["ok"] is False and "top level" in resp.json()["err"]
    daemon.write_script("rules/typo.lua", 'events.on("message.craeted", function() end)\n')
    resp = daemon.reload()
    assert resp.status == 422, resp
    err = resp.json()["error"]
    assert err["file"].endswith("rules/typo.lua") and err["line"] == 1 and "message.craeted" in err["message"]
    daemon.write_script("rules/typo.lua", 'events.on("livechat.*", "x.y", { id = "same" })\n'
                                          'events.on("tag.*", "x.z", { id = "same" })\n')
    resp = daemon.reload()
    assert resp.status == 422 and "used twice" in resp.json()["error"]["message"], resp


# --------------------------------------------------------------------------
# the SSE stream
# --------------------------------------------------------------------------


class SseClient:
    """A client of GET /v1/events/stream on a raw socket: reads the chunked
    body on a thread and parses the events (``id``, ``event``, ``data``) and
    comment lines as they come."""

    def __init__(self, daemon, query="", token=API_TOKEN, headers=None, method="GET", path="/v1/events/stream"):
        self.sock = socket.create_connection((daemon.host, daemon.port), timeout=20)
        h = {"Host": "switchboard", "Accept": "text/event-stream"}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        head = f"{method} {path}{query} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        self.sock.sendall((head + "\r\n").encode())
        self._buf = b""
        self.events, self.comments, self.retry = [], [], None
        self.ended = False      # the last chunk came: a clean end
        self.closed = False     # the connection is over (cleanly or not)
        self._text = ""
        self._lock = threading.Lock()
        self.status, self.headers = self._read_head()
        self.body = b""
        if self.status == 200 and method == "GET":
            self._thread = threading.Thread(target=self._read_chunks, daemon=True)
            self._thread.start()
        else:
            n = int(self.headers.get("content-length", "0"))
            self.body = self._read_exact(n)
            self.sock.close()

    def _recv(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError
        self._buf += d

    def _read_line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._recv()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _read_exact(self, n) -> bytes:
        while len(self._buf) < n:
            self._recv()
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _read_head(self):
        status = int(self._read_line().split()[1])
        headers = {}
        while True:
            line = self._read_line().decode()
            if not line:
                return status, headers
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()

    def _read_chunks(self):
        try:
            while True:
                size = int(self._read_line().split(b";")[0], 16)
                if size == 0:
                    self._read_line()
                    self.ended = True
                    return
                self._parse(self._read_exact(size).decode())
                self._read_line()
        except (EOFError, OSError, ValueError):
            pass
        finally:
            self.closed = True

    def _parse(self, text):
        self._text += text
        while "\n\n" in self._text:
            block, self._text = self._text.split("\n\n", 1)
            ev = {}
            for line in block.split("\n"):
                if line.startswith(":"):
                    with self._lock:
                        self.comments.append(line[1:].strip())
                    continue
                field, _, value = line.partition(": ")
                if field == "retry":
                    self.retry = int(value)
                elif field in ("id", "event", "data"):
                    ev[field] = value
            if "event" in ev:
                ev["id"] = int(ev["id"]) if "id" in ev else None
                ev["data"] = json.loads(ev["data"])
                with self._lock:
                    self.events.append(ev)

    def got(self, name=None) -> list:
        with self._lock:
            return [e for e in self.events if name in (None, e["event"])]

    def ids(self) -> list:
        return [e["id"] for e in self.got() if e["event"] != "reset"]

    def wait(self, pred, timeout=15.0, what="stream events"):
        """Waits until pred(events so far) holds; returns those events."""
        return wait_until(lambda: (lambda evs: evs if pred(evs) else None)(self.got()), timeout=timeout,
                          message=f"{what} (got so far: {self.got()!r})")

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def streams():
    made = []

    def open_stream(daemon, **kw):
        s = SseClient(daemon, **kw)
        made.append(s)
        return s

    yield open_stream
    for s in made:
        s.close()


CLOSE_ROUTE = """
function close_route(req)
  conversations.get(req.query.id):set_state("closed", "test")
  return 200, { ok = true }
end
route("POST", "/test/close", "close_route")
"""


def test_stream_gets_live_events_in_order(fakes, daemon, streams):
    api, _cb = echo_daemon(daemon, fakes, "", events={"stream_heartbeat": 0.2})
    s = streams(daemon)
    assert s.status == 200 and s.headers["content-type"] == "text/event-stream", s.headers
    assert s.retry == 3000
    conv_id = api.send("c-1", "hello")["conversation_id"]
    evs = s.wait(lambda e: len([x for x in e if x["event"] == "message.created"]) == 2)
    assert [e["event"] for e in evs] == ["conversation.created", "message.created", "message.created"]
    first = evs[0]
    assert first["data"] == {"id": first["id"], "name": "conversation.created", "conversation": conv_id,
                             "at": first["data"]["at"], "data": {"channel": "web", "client_id": "c-1"}}
    assert evs[1]["data"]["data"]["text"] == "hello" and evs[1]["data"]["data"]["author"]["kind"] == "client"
    assert [e["id"] for e in evs] == sorted(e["id"] for e in evs)
    # quiet: comment lines keep the connection alive
    wait_until(lambda: len(s.comments) >= 2, message="heartbeat comments")
    assert daemon.metric("switchboard_event_streams_open") == 1


def test_stream_resumes_after_last_event_id_without_gap_or_duplicate(fakes, daemon, streams):
    api, _cb = echo_daemon(daemon, fakes, "")
    whole = streams(daemon)
    api.send("c-1", "one")
    whole.wait(lambda e: len(e) == 3)
    seen_before = whole.ids()[-1]
    api.send("c-2", "two")
    api.send("c-1", "three")
    whole.wait(lambda e: len(e) == 8)
    missed = [i for i in whole.ids() if i > seen_before]

    resumed = streams(daemon, headers={"Last-Event-ID": str(seen_before)})
    resumed.wait(lambda e: len(e) == len(missed))
    assert resumed.ids() == missed
    assert [e["data"] for e in resumed.got()] == [e["data"] for e in whole.got() if e["id"] > seen_before]
    # the seam: live events follow the replayed ones, once each
    api.send("c-2", "four")
    whole.wait(lambda e: len(e) == 10)
    resumed.wait(lambda e: len(e) == len(missed) + 2)
    assert resumed.ids() == [i for i in whole.ids() if i > seen_before]
    # ?last_event_id= does the same
    by_query = streams(daemon, query=f"?last_event_id={seen_before}")
    by_query.wait(lambda e: len(e) == len(missed) + 2)
    assert by_query.ids() == resumed.ids()


def test_stream_filters(fakes, daemon, streams):
    api, _cb = echo_daemon(daemon, fakes, "")
    c1 = api.send("c-1", "one")["conversation_id"]
    only_msgs = streams(daemon, query="?events=message.created,livechat.*")
    only_c1 = streams(daemon, query=f"?conversation={c1}&events=conversation.*,message.*")
    c2 = api.send("c-2", "two")["conversation_id"]
    api.send("c-1", "three")
    only_msgs.wait(lambda e: len(e) == 4)
    assert {e["event"] for e in only_msgs.got()} == {"message.created"}
    only_c1.wait(lambda e: len(e) == 2)
    assert {e["data"]["conversation"] for e in only_c1.got()} == {c1}
    assert c2 != c1
    for bad in ("?events=message.craeted", "?events=", "?last_event_id=x1", "?conversation=nope"):
        s = SseClient(daemon, query=bad)
        assert s.status in (400, 404), (bad, s.status, s.body)
        assert json.loads(s.body)["error"]["code"] in ("invalid_parameter", "not_found")
    s = SseClient(daemon, headers={"Last-Event-ID": "-3"})
    assert s.status == 400 and json.loads(s.body)["error"]["code"] == "invalid_parameter"


def test_stream_auth_scope_and_bot_bound_tokens(fakes, daemon, streams):
    cb = fakes.callback()
    install_lua_tree(daemon)
    daemon.write_script("scripts/bots/echo.lua", 'local M = {}\nfunction M.on_message() return { replies = {} } end\n'
                                                 'return M\n')
    daemon.write_config(
        api_token=API_TOKEN,
        api_tokens=[{"name": "writer", "token": "w-token", "scopes": ["write"]},
                    {"name": "b2", "token": "b2-token", "scopes": ["read"], "bot": "two"}],
        store={"sync": "normal"},
        channels={"web": {"type": "webhook", "secret": "s1", "callback_url": cb.callback_url, "bot": "one"},
                  "web2": {"type": "webhook", "secret": "s2", "callback_url": cb.callback_url, "bot": "two"}},
        bots={"one": {"type": "lua", "module": "bots.echo"}, "two": {"type": "lua", "module": "bots.echo"}},
        desks={"support": {"type": "operator_api", "api_url": "http://127.0.0.1:9/x", "api_key": "k",
                           "public_url": "http://127.0.0.1:9"}},
    )
    write_rules(daemon, "")
    daemon.start()
    assert SseClient(daemon, token=None).status == 401
    assert SseClient(daemon, token="wrong").status == 401
    s = SseClient(daemon, token="w-token")
    assert s.status == 403 and json.loads(s.body)["error"]["code"] == "insufficient_scope"

    everything = streams(daemon)
    mine = streams(daemon, token="b2-token")
    api = Api(daemon)
    c1 = api.send("c-1", "one", instance="web", secret="s1")["conversation_id"]
    c2 = api.send("c-2", "two", instance="web2", secret="s2")["conversation_id"]
    assert daemon.post("/test/agent_status", json.dumps({"desk": "support", "agent": "a", "status": "away"})).status == 200
    api.send("c-2", "again", instance="web2", secret="s2")
    everything.wait(lambda e: len(e) == 6)
    mine.wait(lambda e: len(e) == 3)
    assert {e["data"]["conversation"] for e in mine.got()} == {c2}
    assert c1 in {e["data"].get("conversation") for e in everything.got()}
    assert "agent.status_changed" in {e["event"] for e in everything.got()}
    # another bot's conversation is no conversation at all
    s = SseClient(daemon, token="b2-token", query=f"?conversation={c1}")
    assert s.status == 404


def test_stream_cap_gives_503(fakes, daemon, streams):
    api, _cb = echo_daemon(daemon, fakes, "", events={"stream_max": 2})
    a = streams(daemon)
    streams(daemon)
    full = SseClient(daemon)
    assert full.status == 503 and json.loads(full.body)["error"]["code"] == "too_many_streams"
    assert full.headers.get("retry-after") == "5"
    assert daemon.metric("switchboard_event_streams_refused_total") == 1
    a.close()
    daemon.wait_metric("switchboard_event_streams_open", lambda v: v == 1)
    again = streams(daemon)
    assert again.status == 200
    api.send("c-1", "hello")
    again.wait(lambda e: len(e) == 3)


def test_stream_reset_when_the_journal_no_longer_holds_the_id(fakes, daemon, streams):
    api, _cb = echo_daemon(daemon, fakes, CLOSE_ROUTE, retention={"closed_conversations": 0.5},
                           maintenance={"interval": 0.2})
    old = api.send("c-old", "hello")["conversation_id"]
    api.wait_messages(old, lambda ms: len(ms) == 2)
    assert daemon.post(f"/test/close?id={old}").status == 200
    wait_until(lambda: api.get(f"/v1/conversations/{old}").status == 404, message="the closed conversation pruned")
    new = api.send("c-new", "hello")["conversation_id"]
    api.wait_messages(new, lambda ms: len(ms) == 2)
    s = streams(daemon, headers={"Last-Event-ID": "1"})
    evs = s.wait(lambda e: len(e) >= 4)
    reset = evs[0]
    assert reset["event"] == "reset" and reset["data"]["reason"] == "expired"
    assert reset["data"]["last_event_id"] == 1 and reset["id"] == reset["data"]["resume_after"]
    assert all(e["id"] > reset["id"] for e in evs[1:])
    assert {e["data"]["conversation"] for e in evs[1:]} == {new}
    # an id the journal never gave: from now on
    s2 = streams(daemon, headers={"Last-Event-ID": "999999"})
    first = s2.wait(lambda e: len(e) >= 1)[0]
    assert first["event"] == "reset" and first["data"]["reason"] == "unknown_id"


def test_streams_end_cleanly_at_shutdown_without_holding_it(fakes, daemon, streams):
    api, _cb = echo_daemon(daemon, fakes, "", shutdown_grace=20)
    s = streams(daemon)
    api.send("c-1", "hello")
    s.wait(lambda e: len(e) == 3)
    daemon.send_signal(signal.SIGTERM)
    wait_until(lambda: s.closed, timeout=5, message="the stream to end")
    assert s.ended, "the stream ended without its last chunk"
    assert daemon.wait_exit(timeout=5) == 0
