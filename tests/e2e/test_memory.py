"""Bounded growth and a fast restart (docs/conversations.md, "Memory and
retention"): memory holds the conversations in use, the rest is loaded on
demand; delivered outbox entries, old keys, dead letters and (when asked)
closed conversations leave the store; a restart does not read history."""

from __future__ import annotations

import signal
import sqlite3
import time

from conftest import wait_until
from convkit import (
    Api,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    install_lua_tree,
    setup_echo_daemon,
    webhook_channel,
    write_conv_config,
)

CLOSE_ROUTE = """
function close_it(req)
  local conv = conversations.get(req.params.id)
  conv:set_state("closed", "test")
  return 200, { state = conv.state }
end
route("POST", "/t/close/{id}", "close_it")
"""


def loaded(daemon):
    return daemon.metric("switchboard_conversations", state="loaded")


def rows(daemon, sql):
    con = sqlite3.connect(daemon.workdir / "var" / "switchboard.db", timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_closed_conversation_leaves_memory_and_comes_back_on_demand(fakes, daemon):
    cb = fakes.callback()
    api = setup_echo_daemon(daemon, cb, start=False, maintenance={"interval": 0.2})
    daemon.write_script("scripts/zz_close.lua", CLOSE_ROUTE)
    daemon.start()
    ack = api.send("c-back", "first", message_id="k-1")
    cb.wait_for_text("you said: first")
    assert loaded(daemon) == 1
    assert daemon.post(f"/t/close/{ack['conversation_id']}").json() == {"state": "closed"}
    wait_until(lambda: loaded(daemon) == 0, timeout=10, message="the closed conversation out of memory")
    again = api.send("c-back", "second")
    assert again["conversation_id"] == ack["conversation_id"]
    cb.wait_for_text("you said: second")
    conv = api.conversation(ack["conversation_id"])
    assert conv["state"] == "bot"
    texts = [m["text"] for m in api.messages_all(ack["conversation_id"])]
    assert texts == ["first", "you said: first", "second", "you said: second"], texts
    # its idempotency keys came back with it
    dup = api.post_message({"client_id": "c-back", "text": "first", "message_id": "k-1"})
    assert dup.status == 202 and dup.json().get("duplicate") is True, dup


def test_idle_conversations_leave_memory(fakes, daemon):
    cb = fakes.callback()
    api = setup_echo_daemon(daemon, cb, maintenance={"interval": 0.2}, conversations={"memory_idle": 1})
    for i in range(5):
        api.send(f"c-idle-{i}", "hi")
    cb.wait_for_accepted(5)
    wait_until(lambda: loaded(daemon) == 0, timeout=10, message="idle conversations out of memory")
    assert daemon.metric("switchboard_conversations", state="all") == 5
    assert daemon.metric("switchboard_conversations", state="open") == 5
    api.send("c-idle-3", "again")
    cb.wait_for_text("you said: again")
    assert loaded(daemon) == 1


def test_retention_of_outbox_entries_keys_and_closed_conversations(fakes, daemon):
    cb = fakes.callback()
    dead_cb = fakes.callback().always_fail(400)
    install_lua_tree(daemon)
    daemon.write_script("scripts/bots/echo.lua", """
        local M = {}
        function M.on_message(conv, msg) return { { type = "text", text = "you said: " .. msg.text } } end
        return M
    """)
    daemon.write_script("scripts/zz_close.lua", CLOSE_ROUTE)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, bot="echo"),
                                        "dead": webhook_channel(dead_cb.callback_url, bot="echo")},
                      bots={"echo": {"type": "lua", "module": "bots.echo"}},
                      maintenance={"interval": 0.2},
                      retention={"dead_letters": 1, "closed_conversations": 1},
                      conversations={"dedupe_window": 1})
    daemon.start()
    api = Api(daemon)
    ack = api.send("c-ret", "hello", message_id="k-ret")
    cb.wait_for_text("you said: hello")
    wait_until(lambda: rows(daemon, "SELECT count(*) FROM outbox")[0][0] == 0, timeout=10,
               message="delivered outbox entries deleted")
    api.send("c-dead", "lost", instance="dead")
    wait_until(lambda: api.dead_all(), timeout=10, message="a dead letter")
    wait_until(lambda: api.dead_all() == [] and rows(daemon, "SELECT count(*) FROM outbox")[0][0] == 0,
               timeout=10, message="the dead letter pruned after its retention")
    wait_until(lambda: rows(daemon, "SELECT count(*) FROM conversation_keys")[0][0] == 0, timeout=10,
               message="idempotency keys pruned after the dedupe window")
    daemon.post(f"/t/close/{ack['conversation_id']}")
    wait_until(lambda: rows(daemon, "SELECT count(*) FROM conversations WHERE id = '%s'" % ack["conversation_id"])
               == [(0,)], timeout=10, message="the closed conversation pruned")
    assert rows(daemon, "SELECT count(*) FROM messages WHERE conversation_id = '%s'" % ack["conversation_id"]) == [(0,)]
    assert rows(daemon, "SELECT count(*) FROM events WHERE conversation_id = '%s'" % ack["conversation_id"]) == [(0,)]


def test_a_restart_does_not_read_stored_history(daemon):
    """A restart with 100k conversations and 1.79M messages took 11-13 s to
    serve: everything was loaded. Now nothing of a conversation is read at
    start (make bench measures the time)."""
    daemon.write_config(store={"sync": "off"})
    daemon.start()
    daemon.stop()
    con = sqlite3.connect(daemon.workdir / "var" / "switchboard.db")
    now = time.time()
    convs = [("%020x" % (i + 1), "web", f"c-{i}", "bot", "open", now, now, 10) for i in range(20000)]
    con.executemany("INSERT INTO conversations(id, channel, client_id, state, status, created, updated, last_seq)"
                    " VALUES(?,?,?,?,?,?,?,?)", convs)
    con.executemany("INSERT INTO messages(conversation_id, seq, id, author_kind, text, created) VALUES(?,?,?,?,?,?)",
                    (("%020x" % (i // 10 + 1), i % 10 + 1, "m%019x" % i, "client", "stored text", now)
                     for i in range(200000)))
    con.commit()
    con.close()
    daemon.proc = None
    daemon.start()
    assert daemon.metric("switchboard_conversations", state="all") == 20000
    assert daemon.metric("switchboard_conversations", state="open") == 20000
    assert daemon.metric("switchboard_conversations", state="loaded") == 0
    api = Api(daemon, api_token=None)
    assert api is not None
