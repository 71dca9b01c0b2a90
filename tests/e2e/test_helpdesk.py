"""The built-in agent desk end to end (docs/desk.md): agents sign in with
their own tokens, chats of channels without a bot wait in their group's
queue and are offered by the documented policy within capacity, agents
take, transfer, answer, note and end chats (with a case status), channel
access is enforced (403, nothing written), each agent's stream carries what
that agent may see, inactivity turns a chat into a case, cases are listed
by status, and a bot's switch to the built-in desk works like any desk's.

Client side: webhook channels ``site`` and ``shop`` (no bot: straight to the
desk) and ``web`` (with the HandoffBot of test_handoff: switches).
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import wait_until
from convkit import (API_TOKEN, Api, close_fakes, http_bot, install_lua_tree, webhook_channel,
                     write_conv_config)
from fakes import CallbackReceiver
from test_events import SseClient
from test_handoff import HandoffBot, switch

DESK = "helpdesk"
TOKENS = {"ann": "ann-token-0123456789", "bob": "bob-token-0123456789", "cid": "cid-token-0123456789"}


def desk_config(**over):
    cfg = {
        "type": "builtin",
        "default_group": "support",
        "statuses": [{"name": "lunch", "label": "At lunch", "takes_chats": False},
                     {"name": "chats_only", "label": "Chats only", "takes_chats": True}],
        "groups": {
            "support": {"name": "Support", "members": ["bob"]},
            "billing": {"name": "Billing"},
        },
        "agents": [
            {"id": "ann", "name": "Ann Lee", "email": "ann@example.com", "token": TOKENS["ann"],
             "groups": ["support", "billing"], "channels": ["site", "shop", "web"], "capacity": 1},
            {"id": "bob", "name": "Bob Ray", "email": "bob@example.com", "token": TOKENS["bob"],
             "channels": ["site"], "capacity": 2},
            {"id": "cid", "name": "Cid Moe", "email": "cid@example.com", "token": TOKENS["cid"],
             "groups": ["billing"], "channels": ["shop"], "capacity": 2},
        ],
    }
    cfg.update(over)
    return cfg


class DeskEnv:
    def __init__(self, daemon, cbs, bot):
        self.d = daemon
        self.cbs = cbs
        self.bot = bot
        self.api = Api(daemon)

    # ---- clients ---------------------------------------------------------

    def client(self, channel, client_id, text, **profile) -> str:
        doc = self.api.send(client_id, text, instance=channel, client=profile or None)
        return doc["conversation_id"]

    def callbacks(self, channel, conv_id) -> list:
        return [r.json["message"] for r in self.cbs[channel].accepted() if r.json["conversation_id"] == conv_id]

    # ---- agents ----------------------------------------------------------

    def agent(self, who, method, path, body=None):
        h = {"Authorization": f"Bearer {TOKENS[who]}"}
        data = None
        if body is not None:
            h["Content-Type"] = "application/json"
            data = json.dumps(body)
        return self.d.request(method, path, data, headers=h)

    def status(self, who, status):
        r = self.agent(who, "PUT", "/v1/agents/me/status", {"status": status})
        assert r.status == 200, r
        return r.json()

    def me(self, who) -> dict:
        r = self.agent(who, "GET", "/v1/agents/me")
        assert r.status == 200, r
        return r.json()

    def queue(self, who) -> list:
        r = self.agent(who, "GET", "/v1/desk/queue")
        assert r.status == 200, r
        return [c["id"] for c in r.json()["conversations"]]

    # ---- the store -------------------------------------------------------

    def conv(self, conv_id) -> dict:
        return self.api.conversation(conv_id)

    def wait_conv(self, conv_id, pred, what) -> dict:
        return wait_until(lambda: (lambda c: c if pred(c) else None)(self.conv(conv_id)), timeout=15,
                          message=f"{what} (now {self.conv(conv_id)!r})")

    def written(self, conv_id):
        return (self.api.messages_all(conv_id), self.api.events_all(conv_id), self.conv(conv_id))


@pytest.fixture
def desk_env(daemon, request):
    made = []

    def make(desk_over=None, bot_desk=True, **extra):
        cbs = {name: CallbackReceiver() for name in ("site", "shop", "web")}
        bot = HandoffBot()
        made.extend([*cbs.values(), bot])
        install_lua_tree(daemon)
        chans = {}
        for name in ("site", "shop"):
            ch = webhook_channel(cbs[name].callback_url)
            del ch["bot"]
            ch["desk"] = DESK
            chans[name] = ch
        chans["shop"]["page_routes"] = [{"pattern": "/pricing", "group": "billing"}]
        web = webhook_channel(cbs["web"].callback_url, bot="ext")
        if bot_desk:
            web["desk"] = DESK
        chans["web"] = web
        write_conv_config(daemon, channels=chans, bots={"ext": http_bot(bot.bot_url)},
                          desks={DESK: desk_config(**(desk_over or {}))}, **extra)
        daemon.start()
        return DeskEnv(daemon, cbs, bot)

    yield make
    close_fakes(request, made)


# --------------------------------------------------------------------------
# signing in and statuses
# --------------------------------------------------------------------------


def test_agents_sign_in_with_their_own_token_and_set_their_status(desk_env):
    env = desk_env()
    me = env.me("ann")
    assert (me["id"], me["name"], me["email"], me["desk"]) == ("ann", "Ann Lee", "ann@example.com", DESK)
    assert me["groups"] == ["billing", "support"] and me["channels"] == ["shop", "site", "web"]
    assert (me["capacity"], me["status"], me["takes_chats"], me["chats"]) == (1, "offline", False, [])
    assert [s["name"] for s in me["statuses"]] == ["chats_only", "lunch", "offline", "online"]
    assert env.me("bob")["groups"] == ["support"], "a group's members are its agents too"

    for token in ("wrong", API_TOKEN, None):
        h = {"Authorization": f"Bearer {token}"} if token else {}
        r = env.d.request("GET", "/v1/agents/me", None, headers=h)
        assert r.status == 401 and r.json()["error"]["code"] == "unauthorized", r

    assert env.status("ann", "lunch") == {"agent": "ann", "status": "lunch", "takes_chats": False}
    assert env.status("ann", "chats_only")["takes_chats"] is True
    r = env.agent("ann", "PUT", "/v1/agents/me/status", {"status": "napping"})
    assert r.status == 422 and "status" in r.json()["error"]["message"], r
    assert env.me("ann")["status"] == "chats_only"
    env.d.restart()
    assert env.me("ann")["status"] == "chats_only", "a status is durable"

    # availability of the desk's groups follows the agents' statuses
    def online(group):
        r = env.api.get(f"/v1/groups/{group}/availability", desk=DESK)
        assert r.status == 200, r
        return r.json()["online"]
    assert online("billing") is True and online("support") is True      # ann takes chats
    env.status("ann", "lunch")
    assert online("billing") is False and online("Billing") is False      # by key and by name
    env.status("bob", "online")
    assert online("support") is True


# --------------------------------------------------------------------------
# the queue, offers and capacity
# --------------------------------------------------------------------------


def test_chats_wait_in_their_group_queue_and_are_offered_within_capacity(desk_env):
    env = desk_env()
    first = env.client("site", "v-1", "hello?")
    c = env.wait_conv(first, lambda c: c["state"] == "queued", "the chat queued")
    assert (c["desk"], c["group"], c.get("agent")) == (DESK, "support", None), c
    pricing = env.client("shop", "v-2", "how much?", page_url="https://shop.example.com/pricing")
    assert env.wait_conv(pricing, lambda c: c["state"] == "queued", "queued")["group"] == "billing"
    # nobody takes chats yet: both wait; each agent sees the queues of their groups and channels
    assert env.queue("ann") == [first, pricing]
    assert env.queue("bob") == [first]
    assert env.queue("cid") == [pricing]

    env.status("bob", "online")         # support: bob (capacity 2)
    env.wait_conv(first, lambda c: c.get("agent") == "bob", "offered to bob")
    assert env.conv(pricing).get("agent") is None, "billing has nobody yet"
    second = env.client("site", "v-3", "hi")
    third = env.client("site", "v-4", "hey")
    env.wait_conv(second, lambda c: c.get("agent") == "bob", "offered to bob")
    time.sleep(0.5)
    assert env.conv(third).get("agent") is None, "bob is at capacity: the third waits"
    assert env.queue("bob") == [third]

    env.status("ann", "online")         # ann: support and billing, capacity 1, least busy
    env.wait_conv(pricing, lambda c: c.get("agent") == "ann", "billing's chat offered to ann")
    time.sleep(0.5)
    assert env.conv(third).get("agent") is None, "ann is at capacity too"

    # bob ends a chat: his place goes to the waiting one
    r = env.agent("bob", "POST", f"/v1/conversations/{first}/end", {"status": "solved"})
    assert r.status == 200 and r.json()["status"] == "solved", r
    env.wait_conv(third, lambda c: c.get("agent") == "bob", "the waiting chat offered to bob")
    assert {c["id"] for c in env.me("bob")["chats"]} == {second, third}


def test_an_agent_answers_takes_notes_transfers_and_ends(desk_env):
    env = desk_env()
    env.status("ann", "online")
    conv = env.client("site", "v-1", "my order is late")
    env.wait_conv(conv, lambda c: c.get("agent") == "ann", "offered to ann")
    r = env.agent("ann", "POST", f"/v1/conversations/{conv}/messages", {"text": "Let me check."})
    assert r.status == 201, r
    c = env.wait_conv(conv, lambda c: c["state"] == "agent", "an agent chat")
    assert c["agent"] == "ann"
    msg = wait_until(lambda: next((m for m in env.callbacks("site", conv) if m["text"] == "Let me check."), None),
                     message="the agent's reply at the client")
    assert msg["author"] == {"kind": "agent", "name": "Ann Lee"}, msg

    r = env.agent("ann", "POST", f"/v1/conversations/{conv}/notes", {"text": "VIP customer"})
    assert r.status == 201, r
    notes = [m for m in env.api.messages_all(conv) if m["author"]["kind"] == "note"]
    assert [(n["text"], n["author"]["id"]) for n in notes] == [("VIP customer", "ann")]
    time.sleep(0.3)
    assert all(m["text"] != "VIP customer" for m in env.callbacks("site", conv)), "a note never reaches the client"

    # to a group: back in its queue, unassigned
    r = env.agent("ann", "POST", f"/v1/conversations/{conv}/transfer", {"group": "billing"})
    assert r.status == 200 and r.json()["group"] == "billing", r
    c = env.conv(conv)
    assert (c["state"], c["group"]) == ("queued", "billing"), c
    # ann is billing too and has room again: offered back to her; to an agent: theirs
    env.wait_conv(conv, lambda c: c.get("agent") == "ann", "offered again")
    r = env.agent("ann", "POST", f"/v1/conversations/{conv}/transfer", {"agent": "bob"})
    assert r.status == 200 and r.json()["agent"] == "bob", r
    r = env.agent("bob", "POST", f"/v1/conversations/{conv}/take")
    assert r.status == 200 and r.json()["state"] == "agent", r
    for bad in ({}, {"group": "billing", "agent": "bob"}, {"group": "nope"}, {"agent": "cid"}):
        r = env.agent("bob", "POST", f"/v1/conversations/{conv}/transfer", bad)
        assert r.status == 422, (bad, r)

    r = env.agent("bob", "POST", f"/v1/conversations/{conv}/end", {"status": "pending"})
    assert r.status == 200, r
    c = env.conv(conv)
    assert (c["state"], c["status"], c.get("agent")) == ("closed", "pending", "bob"), "the case keeps its agent"
    r = env.agent("bob", "POST", f"/v1/conversations/{conv}/end", {})
    assert r.status == 409, "no live chat to end any more"
    r = env.agent("bob", "POST", f"/v1/conversations/{conv}/end", {"status": "later"})
    assert r.status in (409, 422), r


def test_channel_access_is_enforced_and_nothing_is_written(desk_env):
    env = desk_env()
    conv = env.client("shop", "v-1", "hello")       # bob does not work in shop
    env.wait_conv(conv, lambda c: c["state"] == "queued", "queued")
    before = env.written(conv)
    for method, path, body in (("POST", "take", None), ("POST", "messages", {"text": "hi"}),
                               ("POST", "notes", {"text": "x"}), ("POST", "transfer", {"group": "support"}),
                               ("POST", "end", {"status": "solved"})):
        r = env.agent("bob", method, f"/v1/conversations/{conv}/{path}", body)
        assert r.status == 403 and r.json()["error"]["code"] == "forbidden", (path, r)
    assert env.written(conv) == before
    assert conv not in env.queue("bob")
    r = env.agent("bob", "GET", "/v1/cases?channel=shop")
    assert r.status == 403, r
    r = env.agent("bob", "POST", "/v1/conversations/no-such-id/take")
    assert r.status == 404, r


def test_each_agents_stream_carries_what_that_agent_may_see(desk_env):
    env = desk_env()
    bob = SseClient(env.d, token=TOKENS["bob"], path="/v1/agents/me/stream")
    cid = SseClient(env.d, token=TOKENS["cid"], path="/v1/agents/me/stream")
    try:
        assert bob.status == 200 and cid.status == 200
        on_site = env.client("site", "v-1", "site question")
        on_shop = env.client("shop", "v-2", "shop question")
        env.status("bob", "online")
        env.wait_conv(on_site, lambda c: c.get("agent") == "bob", "offered to bob")
        bob.wait(lambda evs: any(e["event"] == "conversation.assigned" and e["data"].get("conversation") == on_site
                                 for e in evs), what="bob sees his chat assigned")
        cid.wait(lambda evs: any(e["data"].get("conversation") == on_shop for e in evs), what="cid sees shop's chat")
        time.sleep(0.5)
        convs_bob = {e["data"].get("conversation") for e in bob.got()} - {None}
        convs_cid = {e["data"].get("conversation") for e in cid.got()} - {None}
        assert convs_bob == {on_site}, bob.got()
        assert convs_cid == {on_shop}, cid.got()
        assert any(e["event"] == "agent.status_changed" for e in bob.got())
        r = env.d.request("GET", "/v1/agents/me/stream", None, headers={"Authorization": "Bearer nope"})
        assert r.status == 401, r
    finally:
        bob.close()
        cid.close()


# --------------------------------------------------------------------------
# inactivity, cases
# --------------------------------------------------------------------------


def test_inactivity_ends_the_chat_and_makes_a_case(desk_env):
    env = desk_env(desk_over={"groups": {"support": {"name": "Support", "members": ["bob"], "inactivity_timeout": 1},
                                         "billing": {"name": "Billing"}}})
    env.status("bob", "online")
    conv = env.client("site", "v-1", "anyone?")
    env.wait_conv(conv, lambda c: c.get("agent") == "bob", "offered")
    c = env.wait_conv(conv, lambda c: c["state"] == "closed", "ended by inactivity")
    assert c["status"] == "open", c
    assert any(e["type"] == "livechat_finished" and e["data"]["reason"] == "inactivity"
               for e in env.api.events_all(conv))
    r = env.agent("bob", "GET", "/v1/cases?status=open")
    assert r.status == 200 and [x["id"] for x in r.json()["conversations"]] == [conv], r


def test_cases_are_listed_by_status_group_agent_and_channel(desk_env):
    env = desk_env()
    env.status("ann", "online")
    env.status("bob", "online")
    env.status("cid", "online")
    ended = {}
    for channel, client, status in (("site", "a", "solved"), ("site", "b", "pending"), ("shop", "c", "solved")):
        page = "https://shop.example.com/pricing" if channel == "shop" else "https://example.com/"
        conv = env.client(channel, client, "help", page_url=page)     # shop's pricing pages: billing
        c = env.wait_conv(conv, lambda c: c.get("agent") is not None, "offered")
        r = env.agent(c["agent"], "POST", f"/v1/conversations/{conv}/end", {"status": status})
        assert r.status == 200, r
        ended[client] = (conv, c["agent"])

    def ids(resp):
        assert resp.status == 200, resp
        return {x["id"] for x in resp.json()["conversations"]}

    assert ids(env.api.get("/v1/cases", status="solved")) == {ended["a"][0], ended["c"][0]}
    assert ids(env.api.get("/v1/cases", status="pending")) == {ended["b"][0]}
    assert ids(env.api.get("/v1/cases", channel="shop")) == {ended["c"][0]}
    solved_by = ended["a"][1]
    assert ids(env.api.get("/v1/cases", agent=solved_by, status="solved")) == {
        conv for client, (conv, agent) in ended.items() if agent == solved_by and client != "b"}
    assert ids(env.api.get("/v1/cases", group="support")) == {ended["a"][0], ended["b"][0]}
    # an agent sees the cases of their channels only
    assert ids(env.agent("bob", "GET", "/v1/cases")) == {ended["a"][0], ended["b"][0]}
    assert ids(env.agent("cid", "GET", "/v1/cases")) == {ended["c"][0]}
    r = env.api.get("/v1/cases", status="lost")
    assert r.status == 400, r
    r = env.api.get("/v1/cases", token="wrong")
    assert r.status == 401, r


# --------------------------------------------------------------------------
# a bot's switch to the built-in desk
# --------------------------------------------------------------------------


def test_a_bot_switch_to_the_builtin_desk(desk_env):
    env = desk_env()
    env.bot.text_replies["agent please"] = [switch(destination="Billing", closeChatPhrases=["/bot"],
                                                   lastMessage="Back to the bot.")]
    conv = env.api.send("w-1", "hi", instance="web")["conversation_id"]
    env.api.send("w-1", "agent please", instance="web")
    ev = env.bot.wait_event(conv, "noLivechatOperatorsOnline")
    assert ev["data"]["group"] == "billing", ev     # by name, kept as the group's key
    assert env.conv(conv)["state"] == "bot"

    env.status("ann", "online")
    env.api.send("w-1", "agent please", instance="web")
    c = env.wait_conv(conv, lambda c: c.get("agent") == "ann", "offered to ann")
    assert (c["desk"], c["group"]) == (DESK, "billing"), c
    r = env.agent("ann", "POST", f"/v1/conversations/{conv}/messages", {"text": "Ann here."})
    assert r.status == 201, r
    env.api.send("w-1", "thanks", instance="web")
    time.sleep(0.3)
    assert not any(m["text"] == "thanks" for m in env.bot.messages(conv)), "the agent has it, not the bot"
    r = env.agent("ann", "POST", f"/v1/conversations/{conv}/end", {"status": "solved"})
    assert r.status == 200, r
    env.bot.wait_event(conv, "livechatFinished")
    texts = [m["text"] for m in env.callbacks("web", conv)]
    assert "Ann here." in texts and "Back to the bot." in texts, texts
