"""What an adapter declares about a platform's failed responses
(docs/lua-api.md, outbox.send: retry_after, error_text): where the wait
after a 429 or 503 is, where the error text is; the defaults (the standard
Retry-After header, the start of the body); dead letters and log lines that
name the conversation; declarations kept with the entry across a restart."""

import json

from conftest import wait_until
from convkit import fakes_fixture  # noqa: F401 - the `fakes` fixture
from fakes import JsonFake, Scripted, tg_text_update
from test_telegram import post_update_ok, setup_tg

OUTBOX = {"backoff_base": 0.05, "backoff_max": 1, "max_attempts": 10, "timeout": 5}


class Target(JsonFake):
    """Any path; answers come from a script (first match first), then
    200 {"ok": true}."""

    name = "target"

    def __init__(self):
        self.script: list[Scripted] = []
        super().__init__()

    def then(self, status, body=None, headers=None, times=1):
        with self.lock:
            self.script.append(Scripted(status, headers, body, times=times))
        return self

    def replace(self, *answers):
        with self.lock:
            self.script = [Scripted(s, h, b, times=t) for s, b, h, t in answers]

    def _dispatch(self, req):
        picked = self._pick(req, self.script)
        return picked.answer(req) if picked else (200, {"ok": True}, {})


SEND_SCRIPT = """
function send(req)
  local args = req:json()
  local id = outbox.send{ target = "platform", url = args.url, body = { n = 1 },
                          conversation = args.conversation,
                          retry_after = args.retry_after, error_text = args.error_text }
  return 200, { id = id }
end
function try_send(req)
  local args = req:json()
  local ok, err = pcall(outbox.send, { target = "platform", url = "http://127.0.0.1:9/", body = "x",
                                       retry_after = args.retry_after, error_text = args.error_text })
  return 200, { ok = ok, err = tostring(err) }
end
function dead(req)
  return 200, conversations.read("outbox_dead", { limit = 10 }), { ["Content-Type"] = "application/json" }
end
route("POST", "/t/send", "send")
route("POST", "/t/try", "try_send")
route("GET", "/t/dead", "dead")
"""


def start(daemon, outbox=None):
    daemon.write_config(outbox=dict(OUTBOX, **(outbox or {})))
    daemon.write_script("scripts/send.lua", SEND_SCRIPT)
    daemon.start()


def send(daemon, target, **declared):
    body = {"url": target.url + "/api", **declared}
    resp = daemon.post("/t/send", json.dumps(body), headers={"Content-Type": "application/json"})
    assert resp.status == 200, resp
    return resp.json()["id"]


def retry_lines(daemon, entry_id):
    return daemon.find_logs(msg="outbox: attempt failed, retrying", id=str(entry_id))


def dead_letters(daemon):
    return daemon.get("/t/dead").json()["dead"]


# ------------------------------------------------------------ the wait


def test_by_default_the_retry_after_header_sets_the_wait(daemon):
    target = Target().then(429, {"error": "slow down"}, {"Retry-After": "1"}) \
                     .then(503, {"error": "busy"}, {"Retry-After": "2"})
    start(daemon)
    entry = send(daemon, target)
    target.wait_for(lambda reqs: [r for r in reqs if r.status == 200] or None, message="the delivery")
    waits = [r["retry_in"] for r in retry_lines(daemon, entry)]
    assert waits == ["1.000", "2.000"], waits
    att = target.snapshot()
    assert [r.status for r in att] == [429, 503, 200]
    assert att[1].t - att[0].t >= 0.9 and att[2].t - att[1].t >= 1.9
    target.close()


def test_a_wait_in_the_body_counts_only_where_declared(daemon):
    """Telegram's retry_after is in its JSON body: a platform fact the adapter
    declares; an adapter that does not declare it keeps its own backoff."""
    hour = {"ok": False, "parameters": {"retry_after": 3600}}
    plain, declared = Target().then(429, hour), Target().then(429, hour)
    start(daemon)
    undeclared_id = send(daemon, plain)
    declared_id = send(daemon, declared, retry_after={"json": "parameters.retry_after"})
    plain.wait_for(lambda reqs: [r for r in reqs if r.status == 200] or None, message="the undeclared delivery")
    line = wait_until(lambda: retry_lines(daemon, declared_id), message="the declared entry's retry line")[0]
    assert line["retry_in"] == "3600.000", line
    assert float(retry_lines(daemon, undeclared_id)[0]["retry_in"]) <= 1.0
    assert [r.status for r in declared.snapshot()] == [429]
    plain.close()
    declared.close()


def test_a_declared_header_replaces_retry_after(daemon):
    target = Target().then(503, "", {"X-Wait-Seconds": "1234", "Retry-After": "1"})
    start(daemon)
    entry = send(daemon, target, retry_after={"header": "X-Wait-Seconds"})
    line = wait_until(lambda: retry_lines(daemon, entry), message="the retry line")[0]
    assert line["retry_in"] == "1234.000", line
    target.close()


# ------------------------------------------------------------ the error text


def test_the_declared_error_text_is_the_reason(daemon):
    target = Target().then(403, {"ok": False, "description": "Forbidden: bot was blocked by the user"})
    start(daemon)
    entry = send(daemon, target, conversation="conv-42", error_text={"json": "description"})
    dead = wait_until(lambda: dead_letters(daemon), message="a dead letter")
    assert dead[0]["id"] == entry
    assert dead[0]["reason"] == "HTTP 403: Forbidden: bot was blocked by the user", dead[0]
    line = daemon.wait_for_log(msg="outbox: dead letter", id=str(entry))
    assert line["conversation"] == "conv-42", line
    assert line["reason"] == "HTTP 403: Forbidden: bot was blocked by the user", line
    target.close()


def test_without_a_declaration_the_reason_has_the_start_of_a_text_body(daemon):
    target = Target().then(404, "no such\nchat " + "x" * 400).then(410, b"\xff\xfe\x00binary")
    start(daemon)
    first = send(daemon, target)
    second = send(daemon, target)
    dead = wait_until(lambda: (lambda d: d if len(d) == 2 else None)(dead_letters(daemon)), message="two dead letters")
    reasons = {d["id"]: d["reason"] for d in dead}
    assert reasons[first] == "HTTP 404: no such chat " + "x" * 187, reasons[first]
    assert reasons[second] == "HTTP 410", reasons[second]
    line = daemon.wait_for_log(msg="outbox: dead letter", id=str(first))
    assert "conversation" not in line   # the entry has none
    target.close()


def test_telegram_blocked_bot_dead_letter_names_text_and_conversation(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    tg.fail_first(1, 403, "Forbidden: bot was blocked by the user")
    post_update_ok(daemon, tg_text_update("anyone there?"))
    dead = wait_until(lambda: api.dead_all(), message="a dead letter")
    # the description alone: the adapter declared where Telegram puts it
    assert dead[0]["reason"] == "HTTP 403: Forbidden: bot was blocked by the user", dead[0]
    line = daemon.wait_for_log(msg="outbox: dead letter")
    assert line["conversation"] == dead[0]["conversation_id"], line
    assert line["reason"] == dead[0]["reason"], line


def test_telegram_rate_limit_log_line_names_the_wait_and_conversation(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    tg.fail_first(1, 429, "Too Many Requests: retry after 1", retry_after=1)
    post_update_ok(daemon, tg_text_update("busy"))
    tg.wait_for_sent(1, text="you said: busy", timeout=20)
    line = daemon.wait_for_log(msg="outbox: attempt failed, retrying")
    assert line["retry_in"] == "1.000", line
    assert line["reason"] == "HTTP 429: Too Many Requests: retry after 1", line
    conv = api.conversations_all()[0]
    assert line["conversation"] == conv["id"], line


# ------------------------------------------------------------ checks and restarts


def test_bad_declarations_raise_naming_the_field(daemon):
    start(daemon)
    cases = [
        ({"retry_after": "Retry-After"}, "retry_after must be"),
        ({"retry_after": {"header": "Retry-After", "json": "a"}}, "retry_after must be"),
        ({"retry_after": {"json": "a..b"}}, "JSON path"),
        ({"retry_after": {"header": "Retry After"}}, "header name"),
        ({"error_text": {"header": "X-Error"}}, "error_text must be { json = path }"),
        ({"error_text": {"json": 5}}, "error_text must be"),
    ]
    for declared, message in cases:
        doc = daemon.post("/t/try", json.dumps(declared), headers={"Content-Type": "application/json"}).json()
        assert doc["ok"] is False and message in doc["err"], (declared, doc)
    assert daemon.metric("switchboard_outbox_pending") == 0


def test_declarations_are_kept_with_the_entry_across_a_restart(daemon):
    target = Target()
    target.replace((503, {}, None, None))            # failing, with nothing to read, until the restart
    start(daemon, outbox={"backoff_base": 0.5, "backoff_max": 1})
    entry = send(daemon, target, retry_after={"json": "wait"}, error_text={"json": "msg"})
    target.wait_for_requests(1)
    daemon.restart()
    target.replace((429, {"wait": 2}, None, 1), (403, {"msg": "gone for good"}, None, 1))
    dead = wait_until(lambda: dead_letters(daemon), timeout=20, message="the dead letter after the restart")
    assert dead[0]["id"] == entry
    assert dead[0]["reason"] == "HTTP 403: gone for good", dead[0]
    # backoff_max is 1 s: a wait of 2 s comes from the declaration read back from the store
    assert "2.000" in [r["retry_in"] for r in retry_lines(daemon, entry)]
    target.close()
