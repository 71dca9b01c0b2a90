"""A job's writes are all-or-nothing (docs/architecture.md, "The write
path"): a handler that raises, is stopped, or whose commit fails leaves
nothing behind, in the store or in memory, and sends nothing; its retry is
processed as new. Outbound calls leave only after their job committed."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time

from conftest import assert_json_error, dedent, wait_until
from convkit import (
    API_TOKEN,
    HEAL_ROUTE,
    WEB_SECRET,
    Api,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    http_bot,
    install_lua_tree,
    metric_sum,
    setup_echo_daemon,
    webhook_channel,
    write_conv_config,
)

def settle(seconds=0.5):
    time.sleep(seconds)


def conversations_count(daemon):
    return daemon.metric("switchboard_conversations", state="all")


def db_path(daemon):
    return daemon.workdir / "var" / "switchboard.db"


def inject_failure(daemon, table):
    """A trigger that makes every insert into `table` fail: the daemon's
    next commit with such a write fails (a full disk or an I/O error would
    do the same)."""
    con = sqlite3.connect(db_path(daemon), timeout=10)
    con.execute(f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    con.commit()
    con.close()


def heal_failure(daemon, table):
    con = sqlite3.connect(db_path(daemon), timeout=10)
    con.execute(f"DROP TRIGGER fail_{table}")
    con.commit()
    con.close()


# --------------------------------------------------------------------------
# a handler that raises after writing
# --------------------------------------------------------------------------


def test_handler_error_after_append_leaves_nothing_and_its_retry_is_new(fakes, daemon):
    """Seen with a bot whose url is ftp://: the first POST answered 500, the
    retry 202 duplicate, and the message never reached the bot."""
    cb = fakes.callback()
    bot = fakes.bot()
    install_lua_tree(daemon)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, bot="ext")},
                      bots={"ext": {"type": "http", "url": "ftp://127.0.0.1/bot"}})
    daemon.start()
    api = Api(daemon)
    body = {"client_id": "c-ftp", "text": "hello", "message_id": "m-1"}
    first = api.post_message(body)
    assert_json_error(first, 500, "script_error")
    retry = api.post_message(body)
    assert_json_error(retry, 500, "script_error")   # processed as new: not "duplicate"
    assert conversations_count(daemon) == 0
    assert api.conversations_all() == []

    # the bot's address fixed: the same message is taken as new, once
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, bot="ext")},
                      bots={"ext": http_bot(bot.url + "/bot")})
    daemon.reload_ok()
    ok = api.post_message(body)
    assert ok.status == 202, ok
    assert "duplicate" not in ok.json()
    bot.wait_for_requests(1)
    again = api.post_message(body)
    assert again.status == 202 and again.json().get("duplicate") is True, again
    settle()
    assert bot.texts() == ["hello"]
    msgs = api.messages_all(ok.json()["conversation_id"])
    assert [m["text"] for m in msgs if m["author"]["kind"] == "client"] == ["hello"]


def test_handler_stopped_by_budget_leaves_nothing(fakes, daemon):
    cb = fakes.callback()
    setup_echo_daemon(daemon, cb, start=False, lua={"cpu_ms_per_resume": 100, "cpu_ms_per_job": 300})
    daemon.write_script("scripts/zz_spin.lua", """
        function spin_after_writing(req)
          local conv = conversations.find_or_create("web", "c-spin")
          conv:append{ author = { kind = "client" }, text = "before the spin", dedupe_key = "k-spin" }
          state.set("spun", true)
          timer.after(60, "nothing", {})
          outbox.send{ conversation = conv, target = "web", url = config.channels.web.callback_url, body = { x = 1 } }
          while true do end
        end
        route("POST", "/test/spin", "spin_after_writing")
    """)
    daemon.write_script("scripts/zz_heal.lua", HEAL_ROUTE)
    daemon.start()
    timers_before = daemon.metric("switchboard_timers_pending")
    resp = daemon.post("/test/spin")
    assert_json_error(resp, 500, "script_budget_exceeded")
    settle()
    assert conversations_count(daemon) == 0
    assert daemon.metric("switchboard_timers_pending") == timers_before
    assert daemon.get("/test/state?key=spun").json() == {}
    assert cb.attempts() == []
    assert daemon.metric("switchboard_outbox_pending") == 0


def test_lua_bot_retry_does_not_repeat_replies(fakes, daemon):
    """A Lua bot job that appended and sent replies, then failed: its retry
    must not send them twice."""
    cb = fakes.callback()
    install_lua_tree(daemon)
    daemon.write_script("scripts/bots/twice.lua", """
        local M = {}
        function M.on_message(conv, msg)
          flow.bot_replies(conv, { { type = "text", text = "reply to " .. msg.text } }, "twice")
          if not state.get("healed") then error("failed after replying") end
          return {}
        end
        return M
    """)
    daemon.write_script("scripts/zz_heal.lua", HEAL_ROUTE)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, bot="twice")},
                      bots={"twice": {"type": "lua", "module": "bots.twice"}})
    daemon.start()
    api = Api(daemon)
    ack = api.send("c-twice", "hi")
    wait_until(lambda: metric_sum(daemon, "switchboard_outbox_retried_total") >= 2, timeout=15,
               message="two failed attempts of the bot job")
    assert cb.attempts() == [], "a failed job's replies left the process"
    assert daemon.post("/test/heal").status == 200
    cb.wait_for_text("reply to hi")
    settle(1.0)
    assert cb.accepted_texts() == ["reply to hi"]
    bot_msgs = [m for m in api.messages_all(ack["conversation_id"]) if m["author"]["kind"] == "bot"]
    assert [m["text"] for m in bot_msgs] == ["reply to hi"]


# --------------------------------------------------------------------------
# a commit that fails
# --------------------------------------------------------------------------


def test_failed_commit_leaves_nothing_and_releases_nothing(fakes, daemon):
    """The key used to be remembered at once: the client got 503 "retry",
    then "duplicate" while nothing was durable; and rolled-back outbox
    entries were delivered."""
    cb = fakes.callback()
    bot = fakes.bot()
    install_lua_tree(daemon)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, bot="ext")},
                      bots={"ext": http_bot(bot.url + "/bot")})
    daemon.start()
    api = Api(daemon)
    api.send("c-warm", "warm up")          # the conversation and a first message are stored
    bot.wait_for_requests(1)
    cb.wait_for_text("you said: warm up")  # and the bot's reply: nothing of it is pending
    inject_failure(daemon, "messages")
    body = {"client_id": "c-warm", "text": "during the failure", "message_id": "m-fail"}
    failed = api.post_message(body)
    assert_json_error(failed, 503, "store_unavailable")
    settle(1.0)
    assert bot.texts() == ["warm up"], "an outbox entry of a failed commit was delivered"
    heal_failure(daemon, "messages")
    retry = api.post_message(body)
    assert retry.status == 202, retry
    assert "duplicate" not in retry.json(), "the key of a failed commit was remembered"
    bot.wait_for(lambda reqs: len(reqs) >= 2, message="the retried message at the bot")
    settle()
    assert bot.texts() == ["warm up", "during the failure"]
    conv_id = retry.json()["conversation_id"]
    texts = [m["text"] for m in api.messages_all(conv_id)]
    assert texts.count("during the failure") == 1, texts
    seqs = [m["seq"] for m in api.messages_all(conv_id)]
    assert seqs == list(range(1, len(seqs) + 1)), seqs   # memory rolled back its sequence too


def test_failed_commit_of_a_new_conversation_forgets_it(fakes, daemon):
    cb = fakes.callback()
    api = setup_echo_daemon(daemon, cb)
    api.send("c-first", "first")
    cb.wait_for_text("you said: first")
    inject_failure(daemon, "conversations")
    failed = api.post_message({"client_id": "c-new", "text": "hello", "message_id": "m-new"})
    assert_json_error(failed, 503, "store_unavailable")
    assert conversations_count(daemon) == 1
    heal_failure(daemon, "conversations")
    ok = api.post_message({"client_id": "c-new", "text": "hello", "message_id": "m-new"})
    assert ok.status == 202 and "duplicate" not in ok.json(), ok
    cb.wait_for_text("you said: hello")
    assert conversations_count(daemon) == 2
    assert len(api.conversations_all()) == 2


# --------------------------------------------------------------------------
# a reload that is rejected
# --------------------------------------------------------------------------


def test_failed_reload_has_no_side_effects(fakes, daemon):
    cb = fakes.callback()
    setup_echo_daemon(daemon, cb, start=False)
    daemon.write_script("scripts/zz_heal.lua", HEAL_ROUTE)
    daemon.start()
    daemon.write_script("scripts/zz_side.lua", """
        state.set("set_by_a_rejected_load", true)
        outbox.send{ target = "web", url = config.channels.web.callback_url, body = { from = "rejected load" } }
        timer.after(0, "nothing")
    """)
    daemon.write_script("scripts/zzz_broken.lua", "error('this load is rejected')")
    resp = daemon.reload()
    assert_json_error(resp, 422, "reload_failed")
    settle(1.0)
    assert daemon.get("/test/state?key=set_by_a_rejected_load").json() == {}
    assert cb.attempts() == []
    assert daemon.metric("switchboard_outbox_pending") == 0


# --------------------------------------------------------------------------
# the outbox drains from the loop
# --------------------------------------------------------------------------

FILL_ROUTE = """
function fill(req)
  local n = tonumber(req.query.n)
  for i = 1, n do
    outbox.call{ target = "drained", lane = "one-lane", data = { i = i } }
  end
  return 200, { queued = n }
end
route("POST", "/test/fill", "fill")

function drained(data) end
"""


def test_100000_entries_in_one_lane_drain_and_a_restart_with_them_serves_at_once(daemon):
    """80,000 outbox.call entries in one lane crashed the daemon (recursion
    on the C stack), and every restart crashed again before serving."""
    daemon.write_config(store={"sync": "off"}, lua={"cpu_ms_per_resume": 20000, "cpu_ms_per_job": 60000,
                                                     "job_timeout": 120, "memory_limit_mb": 512})
    daemon.write_script("scripts/fill.lua", FILL_ROUTE)
    daemon.start()
    resp = daemon.post("/test/fill?n=100000", timeout=120)
    assert resp.status == 200, resp
    # the restart in the middle of the drain: most entries are still pending
    daemon.restart(signal.SIGKILL)    # start() waits for /healthz: it must answer within its bound
    pending = daemon.metric("switchboard_outbox_pending")
    assert pending > 0
    assert daemon.metric("switchboard_outbox_in_memory") <= 64, "a lane's entries were all loaded into memory"
    wait_until(lambda: daemon.metric("switchboard_outbox_pending") == 0, timeout=240, interval=0.5,
               message="the lane drained")
    assert daemon.metric("switchboard_outbox_dead_total") == 0
    assert daemon.metric("switchboard_outbox_delivered_total") >= pending
    assert daemon.running()


def test_a_job_never_runs_inside_another(daemon):
    """outbox.call could start the lane's head job inside the calling job,
    which then lost its budget hook (and ran away unstopped)."""
    daemon.write_config(lua={"cpu_ms_per_resume": 100, "cpu_ms_per_job": 300})
    daemon.write_script("scripts/nested.lua", """
        function queue_then_spin(req)
          outbox.call{ target = "inner", lane = "nested" }
          while true do end
        end
        route("POST", "/test/nested", "queue_then_spin")
        function inner() end
    """)
    daemon.start()
    resp = daemon.post("/test/nested", timeout=20)
    assert_json_error(resp, 500, "script_budget_exceeded")
    assert daemon.health()["status"] == "ok"


def test_dead_letter_requeue_once_and_with_a_fresh_age(fakes, daemon):
    """Two retry requests made two entries; and the requeued entry kept its
    old `created`, so max_age killed it at once."""
    cb = fakes.callback().always_fail(400)
    api = setup_echo_daemon(daemon, cb, outbox={"max_age": 2})
    api.send("c-dead", "hi")
    dead = wait_until(lambda: api.dead_all(), timeout=15, message="a dead letter")
    time.sleep(2.5)                     # older than max_age now
    cb.heal()
    results = []
    threads = [threading.Thread(target=lambda: results.append(api.retry_dead(dead[0]["id"]))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the second finds it sent again (409), or already delivered and gone (404)
    statuses = sorted(r.status for r in results)
    assert statuses in ([202, 404], [202, 409]), results
    cb.wait_for_text("you said: hi")
    settle(1.0)
    assert cb.accepted_texts() == ["you said: hi"]
    assert api.dead_all() == []


def test_a_delivery_in_flight_at_sigterm_finishes_and_is_not_made_again(fakes, daemon):
    """Deliveries in flight were cancelled at SIGTERM and made again after
    the restart: the receiver got them twice."""
    cb = fakes.callback().stall_first(1, 1.0, status=200)
    api = setup_echo_daemon(daemon, cb)
    api.send("c-term", "hello")
    wait_until(lambda: len(cb.snapshot()) >= 1, message="the delivery under way")
    daemon.restart(signal.SIGTERM)
    settle(1.5)
    assert cb.accepted_texts() == ["you said: hello"]


def test_a_result_handler_that_cannot_commit_is_retried_with_backoff(fakes, daemon):
    """The bot's answer arrived, but its handler's writes could not be
    committed: the call is made again later, not at once in a loop."""
    cb = fakes.callback()
    bot = fakes.bot()
    install_lua_tree(daemon)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url, bot="ext")},
                      bots={"ext": http_bot(bot.url + "/bot")},
                      outbox={"backoff_base": 1, "backoff_max": 1})
    daemon.start()
    api = Api(daemon)
    api.send("c-warm", "warm up")
    cb.wait_for_text("you said: warm up")
    con = sqlite3.connect(db_path(daemon), timeout=10)
    con.execute("CREATE TRIGGER fail_bot_replies BEFORE INSERT ON messages WHEN NEW.author_kind = 'bot' "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
    con.commit()
    con.close()
    api.send("c-warm", "again")
    time.sleep(2.5)
    calls = bot.texts().count("again")
    assert 1 <= calls <= 4, f"{calls} calls of the bot in 2.5 s"
    heal_failure(daemon, "bot_replies")
    cb.wait_for_text("you said: again", timeout=15)
    settle(0.5)
    assert cb.accepted_texts().count("you said: again") == 1
