"""Automation rules end to end (docs/rules.md): the shipped example rules
through the real binary, with strict fakes of Slack's incoming webhook and
Telegram's sendMessage as notification targets; a failing and a runaway
rule skipped while the engine serves; the loop guard; duplicate names
failing a reload while the old rules keep running; every client message
evaluated by exactly one generation across 100 reloads under load; the dry
run changing nothing; `switchboard test` and `--check`.

Client side: the webhook channel ``site`` declared ``kind = "live_chat"``
(no bot: chats go to the built-in desk ``helpdesk``)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from conftest import REPO_ROOT, run_cli, wait_until
from convkit import Api, close_fakes, install_lua_tree, webhook_channel, write_conv_config
from fakes import CallbackReceiver, FakeTelegram, JsonFake

ANN = "ann-token-0123456789"
ALWAYS = "mon-sun 00:00-24:00"
NEVER = "mon-sun 00:00-00:00"


class FakeSlack(JsonFake):
    """Slack's incoming webhook: POST <path> with a JSON body {"text"} only."""

    name = "slack"

    def __init__(self, path="/services/T000/B000/XXXX"):
        super().__init__()
        self.path = path
        self.webhook_url = self.url + path

    def respond(self, req):
        if req.method != "POST" or req.path != self.path:
            req.problems.append(f"{req.method} {req.path}, expected POST {self.path}")
            return 404, b"no_service", {}
        body = req.json
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"] or set(body) != {"text"}:
            req.problems.append(f"body {body!r}, expected {{\"text\": <non-empty string>}}")
            return 400, b"invalid_payload", {}
        return 200, b"ok", {}

    def texts(self):
        return [r.json["text"] for r in self.snapshot() if r.status == 200 and not r.problems]


def copy_example_rules(daemon):
    rules = daemon.workdir / "rules"
    rules.mkdir(exist_ok=True)
    for f in sorted((REPO_ROOT / "examples" / "rules").glob("*.lua")):
        shutil.copy(f, rules / f.name)


class RulesEnv:
    def __init__(self, daemon, cb, tg, slack):
        self.d, self.cb, self.tg, self.slack = daemon, cb, tg, slack
        self.api = Api(daemon)

    def client(self, client_id, text, **profile):
        return self.api.send(client_id, text, instance="site", client=profile or None)["conversation_id"]

    def callbacks(self, conv_id):
        return [r.json["message"] for r in self.cb.accepted() if r.json["conversation_id"] == conv_id]

    def journal(self, conv_id, kind="rule"):
        return [e["data"] for e in self.api.events_all(conv_id) if e["type"] == kind]

    def wait_journal(self, conv_id, pred, kind="rule", what="a rule in the journal"):
        return wait_until(lambda: [d for d in self.journal(conv_id, kind) if pred(d)], timeout=15,
                          message=f"{what} (journal: {self.api.events_all(conv_id)!r})")

    def agent(self, method, path, body=None):
        h = {"Authorization": f"Bearer {ANN}"}
        data = None
        if body is not None:
            h["Content-Type"] = "application/json"
            data = json.dumps(body)
        return self.d.request(method, path, data, headers=h)

    def written(self, conv_id):
        return (self.api.messages_all(conv_id), self.api.events_all(conv_id), self.api.conversation(conv_id))


@pytest.fixture
def rules_env(daemon, request):
    made = []

    def make(hours=ALWAYS, rules=None, examples=True, start=True, **extra):
        cb, tg, slack = CallbackReceiver(), FakeTelegram(), FakeSlack()
        made.extend([cb, tg, slack])
        install_lua_tree(daemon)
        if examples:
            copy_example_rules(daemon)
        for name, text in (rules or {}).items():
            daemon.write_script(f"rules/{name}", text)
        site = webhook_channel(cb.callback_url)
        del site["bot"]
        site.update(desk="helpdesk", kind="live_chat")
        desk = {
            "type": "builtin", "default_group": "support",
            "groups": {"support": {"name": "Support", "working_hours": hours},
                       "fallback": {"name": "Fallback", "working_hours": ALWAYS}},
            "agents": [{"id": "ann", "name": "Ann Lee", "token": ANN, "groups": ["support", "fallback"],
                        "channels": ["site"], "capacity": 5}],
        }
        cfg = dict(
            timezone="UTC",
            notify={"telegram_ops": {"type": "telegram", "token": tg.token, "chat_id": "-1001",
                                     "api_base": tg.api_base},
                    "slack_support": {"type": "slack", "url": slack.webhook_url}},
            examples={"unanswered_after": 1, "check_every": "1s"},
        )
        cfg.update(extra)
        write_conv_config(daemon, channels={"site": site}, bots={}, desks={"helpdesk": desk}, **cfg)
        if start:
            daemon.start()
        return RulesEnv(daemon, cb, tg, slack)

    yield make
    close_fakes(request, made)


# --------------------------------------------------------------------------
# the shipped examples, live
# --------------------------------------------------------------------------


def test_example_1_new_live_chat_reply_support_group_and_telegram(rules_env):
    env = rules_env()
    conv = env.client("v-1", "hello", name="Ann")
    reply = wait_until(lambda: next((m for m in env.callbacks(conv) if m["author"]["kind"] == "system"), None),
                       message="the auto-reply")
    assert reply["text"] == "Thanks for writing, Ann! An agent will be with you shortly."
    sent = env.tg.wait_for_sent(1)
    assert sent[0].params["text"] == "New live chat on site from Ann" and str(sent[0].params["chat_id"]) == "-1001"
    fired = env.wait_journal(conv, lambda d: d["rule"] == "welcome-new-live-chat")
    assert [a["action"] for a in fired[0]["actions"]] == ["reply", "assign_group", "notify"]
    assert all(a["ok"] for a in fired[0]["actions"]), fired
    assert fired[0]["event"] == "conversation.created" and isinstance(fired[0]["generation"], int)
    assert env.api.conversation(conv)["group"] == "support"
    env.tg.assert_no_violations()


def test_example_2_client_resumes_a_pending_case_and_slack_hears(rules_env):
    env = rules_env()
    conv = env.client("v-2", "hello", name="Bo")
    r = env.agent("POST", f"/v1/conversations/{conv}/take")
    assert r.status == 200, r
    r = env.agent("POST", f"/v1/conversations/{conv}/end", {"status": "pending"})
    assert r.status == 200, r
    assert env.slack.texts() == []
    env.client("v-2", "any news?", name="Bo")
    wait_until(lambda: env.slack.texts() == ["Bo wrote again on a pending case: any news?"],
               message=f"the Slack message (got {env.slack.texts()!r})")
    env.slack.assert_no_violations()


BOT_ONLY_ROUTE = """
-- a chat a site's own bot started (as Chaport's bots do): only bot messages
route("POST", "/t/bot-chat", function(req)
  local conv = conversations.find_or_create("site", req.query.client)
  conv:append{ author = { kind = "bot", name = "site bot" }, text = "Hi! How can I help?" }
  require("livechat").direct(conv)
  return 200, { conversation_id = conv.id }
end)
"""


def test_example_3_only_bot_messages_parked_as_pending(rules_env):
    env = rules_env(rules={"zz_test_route.lua": BOT_ONLY_ROUTE})
    r = env.d.post("/t/bot-chat?client=b-1")
    assert r.status == 200, r
    conv = r.json()["conversation_id"]
    c = wait_until(lambda: (lambda c: c if c["state"] == "closed" else None)(env.api.conversation(conv)),
                   message="the bot-only chat ended")
    assert c["status"] == "pending", c
    fired = env.wait_journal(conv, lambda d: d["rule"].startswith("park-bot-only"))
    assert fired[0]["actions"] == [{"action": "end_chat", "ok": True}], fired


def test_example_4_outside_working_hours_offline_message_and_nothing_else(rules_env):
    env = rules_env(hours=NEVER)
    conv = env.client("v-4", "hello")
    reply = wait_until(lambda: next((m for m in env.callbacks(conv) if m["author"]["kind"] == "system"), None),
                       message="the offline message")
    assert reply["text"].startswith("We are offline now"), reply
    fired = env.wait_journal(conv, lambda d: True)
    time.sleep(0.5)
    assert [d["rule"] for d in env.journal(conv)] == ["offline-outside-working-hours"], "stop = true"
    assert "after-hours" in env.api.conversation(conv)["tags"]
    assert env.tg.sent_messages() == []


def test_example_5_unanswered_queued_chat_goes_to_the_fallback_group(rules_env):
    env = rules_env()       # config.examples: unanswered after 1 s, checked every second
    conv = env.client("v-5", "hello?")
    c = wait_until(lambda: (lambda c: c if c["group"] == "fallback" else None)(env.api.conversation(conv)),
                   timeout=20, message="moved to the fallback group")
    assert "reassigned" in c["tags"], c
    notes = [m for m in env.api.messages_all(conv) if m["author"]["kind"] == "note"]
    assert [n["text"] for n in notes] == ["No agent answered in time: moved to the fallback group."]
    time.sleep(2.5)
    assert sum(1 for d in env.journal(conv) if d["rule"] == "reassign-unanswered-to-fallback") == 1, "once"


# --------------------------------------------------------------------------
# failures, guard, reloads
# --------------------------------------------------------------------------


FAILING_RULES = """
rule "a-broken-rule" { on = "message.created", when = function() error("boom") end, actions = { { add_tag = "x" } } }
rule "a-runaway-rule" { on = "message.created", when = function() while true do end end, actions = { { add_tag = "y" } } }
rule "a-good-rule" { on = "message.created", when = { author = "client" }, actions = { { add_tag = "seen" } } }
"""


def test_a_failing_and_a_runaway_rule_are_skipped_and_the_engine_serves(rules_env):
    env = rules_env(examples=False, rules={"failing.lua": FAILING_RULES})
    conv = env.client("f-1", "hello")
    wait_until(lambda: "seen" in env.api.conversation(conv)["tags"], message="the good rule ran")
    failed = {d["rule"]: d for d in wait_until(lambda: (lambda f: f if len(f) >= 2 else None)(
        env.journal(conv, "rule_failed")), message="both failures")}
    broken, runaway = failed["a-broken-rule"], failed["a-runaway-rule"]
    # the rule's file:line, and the error's own position
    assert broken["where"].startswith("rules/failing.lua:") and broken["error"] == broken["where"] + ": boom", broken
    assert runaway["error"] == "budget exceeded: 50 ms at " + runaway["where"], runaway
    assert broken["where"] != runaway["where"]
    tags = env.api.conversation(conv)["tags"]
    assert "x" not in tags and "y" not in tags, tags
    assert env.d.health()["status"] == "ok"
    env.d.wait_for_log(msg="rule failed and was skipped", rule="a-runaway-rule")


LOOP_RULES = """
rule "echo-system-messages" {
  on = "message.created", when = { author = { "client", "system" } },
  actions = { { reply = "echo" } },
}
"""


def test_the_loop_guard_stops_rules_feeding_themselves(rules_env):
    env = rules_env(examples=False, rules={"loop.lua": LOOP_RULES})
    conv = env.client("l-1", "hello")
    wait_until(lambda: len([m for m in env.callbacks(conv) if m["text"] == "echo"]) >= 1, message="the first echo")
    time.sleep(1.5)
    echoes = [m for m in env.api.messages_all(conv) if m["text"] == "echo"]
    # the client's message (depth 0) and the echoes of echoes up to rules.max_depth (2)
    assert len(echoes) == 3, [m["text"] for m in env.api.messages_all(conv)]
    env.d.wait_for_log(msg="rules skipped an event caused by rules too many times over (loop guard)")


def test_duplicate_rule_names_fail_the_reload_and_the_old_rules_run_on(rules_env):
    env = rules_env(examples=False, rules={"a.lua": 'rule "tagger" { on = "message.created", '
                                                     'when = { author = "client" }, actions = { { add_tag = "old" } } }'})
    env.d.write_script("rules/b.lua", 'rule "tagger" { on = "message.created", actions = { { add_tag = "new" } } }')
    r = env.d.reload()
    assert r.status == 422, r
    err = r.json()["error"]
    assert (err["code"], err["file"], err["line"]) == ("reload_failed", "rules/b.lua", 1), err
    assert err["message"] == "a rule named 'tagger' is already declared at rules/a.lua:1", err
    conv = env.client("d-1", "hello")
    wait_until(lambda: "old" in env.api.conversation(conv)["tags"], message="the old rule still runs")
    assert "new" not in env.api.conversation(conv)["tags"]


COUNTING_RULE = """
rule "count-every-client-message" {
  on = "message.created", when = { author = "client" }, actions = { { add_tag = "evaluated" } },
}
"""


def test_100_reloads_under_load_every_message_evaluated_by_exactly_one_generation(rules_env):
    env = rules_env(examples=False, rules={"count.lua": COUNTING_RULE})
    clients = [f"load-{i}" for i in range(10)]
    sent = []
    stop = threading.Event()

    def load():
        i = 0
        while not stop.is_set():
            c = clients[i % len(clients)]
            doc = env.api.send(c, f"message {i}", instance="site")
            sent.append((doc["conversation_id"], doc["message_id"]))
            i += 1

    t = threading.Thread(target=load)
    t.start()
    generations = set()
    try:
        for _ in range(100):
            generations.add(env.d.reload_ok())
    finally:
        stop.set()
        t.join()
    assert len(generations) == 100 and len(sent) > 50, (len(generations), len(sent))
    convs = sorted({c for c, _ in sent})

    def all_counted():
        for conv in convs:
            events = env.api.events_all(conv)
            messages = {e["id"] for e in events if e["type"] == "message" and e["data"]["author"]["kind"] == "client"}
            fired = [e["data"]["event_id"] for e in events if e["type"] == "rule"]
            if sorted(fired) != sorted(messages):
                return None
        return True

    wait_until(all_counted, timeout=60, message="every client message evaluated once")
    gens_seen = set()
    total = 0
    for conv in convs:
        events = env.api.events_all(conv)
        fired = [e["data"] for e in events if e["type"] == "rule"]
        ids = [d["event_id"] for d in fired]
        assert len(ids) == len(set(ids)), "no message evaluated twice"
        gens_seen.update(d["generation"] for d in fired)
        total += len(fired)
    assert total == len(sent), (total, len(sent))
    assert len(gens_seen) > 1, "the load ran across generations"


# --------------------------------------------------------------------------
# dry run, switchboard test, --check
# --------------------------------------------------------------------------


def test_dry_run_reports_what_would_fire_and_changes_nothing(rules_env):
    env = rules_env()
    conv = env.client("r-1", "hello", name="Ann")
    env.wait_journal(conv, lambda d: d["rule"] == "welcome-new-live-chat")
    time.sleep(0.3)
    before = env.written(conv)
    sent_before = len(env.tg.snapshot())
    h = {"Authorization": f"Bearer {env.d.admin_token}", "Content-Type": "application/json"}
    r = env.d.post("/admin/rules/dry-run", json.dumps({"conversation_id": conv}), headers=h)
    assert r.status == 200, r
    doc = r.json()
    fired = [f["rule"] for e in doc["fired"] for f in e["fired"]]
    assert "welcome-new-live-chat" in fired, doc
    candidate = 'rule "would-tag" { on = "message.created", when = { text = "hello" }, actions = { { add_tag = "x" } } }'
    r = env.d.post("/admin/rules/dry-run", json.dumps({"conversation_id": conv, "source": candidate}), headers=h)
    assert r.status == 200, r
    assert [f["rule"] for e in r.json()["fired"] for f in e["fired"]] == ["would-tag"], r.json()
    assert r.json()["fired"][0]["fired"][0]["actions"] == [{"action": "add_tag", "arg": "x"}]
    recorded = {"channel": "site", "desk": "helpdesk", "group": "support", "state": "queued", "status": "pending",
                "client": {"name": "Cy"}, "messages": [["client", "again?"]],
                "events": [{"name": "message.created", "data": {"author": {"kind": "client"}, "text": "again?",
                                                                 "status": "pending"}}]}
    r = env.d.post("/admin/rules/dry-run", json.dumps({"conversation": recorded}), headers=h)
    assert r.status == 200, r
    assert [f["rule"] for e in r.json()["fired"] for f in e["fired"]] == ["client-resumed-pending-case"], r.json()
    r = env.d.post("/admin/rules/dry-run", json.dumps({"conversation_id": conv, "source": "rule 'x' { on = 'nope' }"}),
                   headers=h)
    assert r.status == 422 and "unknown event" in r.text, r
    r = env.d.post("/admin/rules/dry-run", json.dumps({"conversation_id": conv}),
                   headers={"Authorization": "Bearer wrong", "Content-Type": "application/json"})
    assert r.status == 401, r
    time.sleep(0.3)
    assert env.written(conv) == before, "a dry run changes nothing"
    assert len(env.tg.snapshot()) == sent_before, "and sends nothing"


def test_check_refuses_a_rule_with_an_unknown_condition_naming_its_line(rules_env):
    env = rules_env(start=False, examples=False,
                    rules={"bad.lua": '-- one\nrule "typo" { on = "message.created", when = { authr = "client" }, '
                                      'actions = { { add_tag = "x" } } }\n'})
    res = run_cli(["--check", "-c", str(env.d.config_path)], cwd=env.d.workdir)
    assert res.returncode == 1, res
    assert "rules/bad.lua:2" in res.stderr and "unknown condition 'authr'" in res.stderr, res.stderr


def test_switchboard_test_runs_the_example_specs(tmp_path):
    for folder in ("scripts", "providers", "examples"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    res = run_cli(["test", "-c", "examples/rules.conf.lua", "examples/rules/spec"], cwd=tmp_path)
    assert res.returncode == 0, res
    lines = res.stdout.strip().splitlines()
    assert lines[-1] == "6 passed, 0 failed", res.stdout
    assert all(line.startswith("ok   ") for line in lines[:-1]), res.stdout
    (tmp_path / "examples/rules/spec/wrong_spec.lua").write_text(
        'spec("expects another rule", function()\n'
        '  eq(fired(event("case.new", conversation{ channel = "site", desk = "helpdesk", state = "queued",\n'
        '     messages = { { "client", "x" } } })), { "nope" })\nend)\n')
    res = run_cli(["test", "-c", "examples/rules.conf.lua", "examples/rules/spec"], cwd=tmp_path)
    assert res.returncode == 1, res
    assert res.stdout.strip().splitlines()[-1] == "6 passed, 1 failed", res.stdout
    assert "FAIL examples/rules/spec/wrong_spec.lua: expects another rule" in res.stdout, res.stdout


# --------------------------------------------------------------------------
# every condition and action
# --------------------------------------------------------------------------


CONDITION_RULES = r"""
rule "text-contains" { on = "message.created", when = { text = "refund" }, actions = { { add_tag = "t1" } } }
rule "text-pattern" { on = "message.created", when = { text = { matches = "^order %d+$", case_insensitive = true } },
                      actions = { { add_tag = "t2" } } }
rule "page" { on = "case.new", when = { page_url = "/pricing" }, actions = { { add_tag = "t3" } } }
rule "client-and-custom" { on = "case.new", when = { client = { email = "@vip%.com$" }, custom = { plan = "gold" } },
                           actions = { { add_tag = "t4" } } }
rule "nobody-online" { on = "case.new", when = { agents_online = false }, actions = { { add_tag = "t5" } } }
rule "either" { on = "case.new", when = { any = { { channel = "nope" }, { channel_type = "webhook" } },
                                          ["not"] = { tags = { "x" } } }, actions = { { add_tag = "t6" } } }
rule "quiet-agent" { on = "message.created", when = { author = "client", since_agent = 60 }, actions = { { add_tag = "t7" } } }
rule "hours" { on = "case.new", when = { working_hours = "mon-fri 09:00-18:00" }, actions = { { add_tag = "t8" } } }
rule "at-nine" { at = "mon-fri 09:00", scope = { state = "queued" }, when = { no_tag = "x" }, actions = { { note = "9 o'clock" } } }
rule "by-function" { on = "tag.added", when = function(ev, conv) return ev.data.tag == "t1" end,
                     actions = function(ev, conv) return { { set_status = "pending" } } end }
"""

CONDITION_SPEC = r"""
-- a chat an agent answered just now, unless said otherwise
local function chat(t)
  t = t or {}
  t.channel, t.desk, t.group, t.state = "site", "helpdesk", "support", t.state or "queued"
  t.messages = t.messages or { { "agent", "hello", created = now() } }
  return conversation(t)
end
local function tags(result) local out = {} for _, a in ipairs(actions(result)) do out[#out + 1] = a.add_tag end return out end

spec("text: contains, case-insensitive by default; a Lua pattern", function()
  eq(tags(message(chat(), "client", "I want a REFUND")), { "t1" })
  eq(tags(message(chat(), "client", "Order 42")), { "t2" })
  eq(tags(message(chat(), "client", "order 42 please")), {})
end)

spec("page, client and custom fields, agents online, any and not", function()
  agents_online("helpdesk", "support", true)
  eq(tags(event("case.new", chat{ client = { page_url = "https://x.com/pricing" } })), { "t3", "t6", "t8" })
  eq(tags(event("case.new", chat{ client = { email = "a@vip.com", custom = { plan = { value = "gold" } } } })),
     { "t4", "t6", "t8" })
  agents_online("helpdesk", "support", false)
  eq(tags(event("case.new", chat{ tags = { "x" } })), { "t5", "t8" })
end)

spec("time since the agent's last message, working hours", function()
  local c = chat{ messages = { { "agent", "hello", created = now() } } }
  eq(tags(message(c, "client", "hi")), {})
  advance(61)
  eq(tags(message(c, "client", "still there?")), { "t7" })
  clock(now() + 8 * 3600)                -- Monday 18:01
  agents_online("helpdesk", "support", true)
  eq(tags(event("case.new", chat())), { "t6" })
end)

spec("a calendar rule over its scope, and functions", function()
  local done = tick("at-nine", { chat(), chat{ state = "agent" }, chat{ tags = { "x" } } })
  eq(#done, 1)
  eq(actions(done), { { note = "9 o'clock" } })
  eq(actions(event("tag.added", chat(), { tag = "t1" }), "by-function"), { { set_status = "pending" } })
end)
"""

ACTION_RULES = """
rule "all-the-actions" {
  on = "case.new",
  actions = {
    { set_status = "pending" }, { assign_agent = "ann" }, { add_tag = "a" }, { add_tag = "b" }, { remove_tag = "a" },
    { set_field = { key = "plan", value = "gold", label = "Plan" } }, { hand_to_bot = true },
  },
}
"""


def test_every_condition_by_spec(tmp_path):
    for folder in ("scripts", "providers", "examples"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    rules = tmp_path / "cond_rules"
    rules.mkdir()
    (rules / "conditions.lua").write_text(CONDITION_RULES)
    (rules / "conditions_spec.lua").write_text(CONDITION_SPEC)
    cfg = (tmp_path / "examples/rules.conf.lua").read_text().replace('base .. "/examples/rules"', 'base .. "/cond_rules"')
    cfg = cfg.replace('type = "chatra", desk = "helpdesk",', 'type = "webhook", kind = "live_chat", desk = "helpdesk",'
                                                             ' secret = "s", callback_url = "http://127.0.0.1:9/cb",')
    (tmp_path / "cond.conf.lua").write_text(cfg)
    res = run_cli(["test", "-c", "cond.conf.lua"], cwd=tmp_path)
    assert res.returncode == 0, res
    assert res.stdout.strip().splitlines()[-1] == "4 passed, 0 failed", res.stdout
    res = run_cli(["--check", "-c", "cond.conf.lua"], cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res
    (rules / "bad.lua").write_text('rule "bad-time" { at = "25:00", actions = { { add_tag = "x" } } }\n')
    res = run_cli(["--check", "-c", "cond.conf.lua"], cwd=tmp_path)
    assert res.returncode == 1 and "cond_rules/bad.lua:1" in res.stderr, res


def test_every_action_on_a_live_conversation(rules_env):
    env = rules_env(examples=False, rules={"actions.lua": ACTION_RULES})
    conv = env.client("a-1", "hello")
    fired = env.wait_journal(conv, lambda d: d["rule"] == "all-the-actions")
    assert all(a["ok"] for a in fired[0]["actions"]), fired
    c = env.api.conversation(conv)
    assert (c["status"], c["agent"], c["tags"], c["state"]) == ("pending", "ann", ["b"], "bot"), c
    assert c["client"]["custom"]["plan"] == {"value": "gold", "label": "Plan"}, c


def test_candidate_source_in_a_dry_run_cannot_write(rules_env):
    env = rules_env(examples=False)
    conv = env.client("s-1", "hello")
    time.sleep(0.3)
    before = env.written(conv)
    h = {"Authorization": f"Bearer {env.d.admin_token}", "Content-Type": "application/json"}
    source = ('rule "sneaky" { on = "message.created", when = function(ev, conv) '
              'state.set("x", 1) return true end, actions = { { add_tag = "x" } } }')
    r = env.d.post("/admin/rules/dry-run", json.dumps({"conversation_id": conv, "source": source}), headers=h)
    assert r.status == 200, r
    fired = r.json()["fired"][0]["fired"][0]
    assert fired["rule"] == "sneaky" and "state" in fired["error"], fired   # state is not there
    assert env.written(conv) == before
