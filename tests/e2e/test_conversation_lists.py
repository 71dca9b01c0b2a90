"""Lists and counts of conversations for a desk: GET /v1/conversations with
desk, group, agent, status and order, and conversations.read's
"conversations" and "conversation_counts" kinds (docs/conversations.md,
docs/lua-api.md). The paging and state/channel filters of the same list are
in test_conversations.py."""

import json

import pytest

from conftest import assert_json_error
from convkit import (
    Api,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    install_lua_tree,
    lua_bot,
    webhook_channel,
    write_conv_config,
    write_echo_bot,
)

# Test routes: one makes a conversation with the fields a desk gives it (as
# the desk's scripts would), one calls conversations.read as a script does
# and answers what it returned or the error it raised.
RULES = """
function make_conversation(req)
  local b = req:json()
  local conv = conversations.find_or_create(b.channel, b.client_id)
  if b.state ~= "bot" then conv:set_state(b.state) end
  conv:set{ desk = b.desk or false, group = b.group or false, agent = b.agent or false, status = b.status }
  return 200, { id = conv.id }
end
route("POST", "/test/conversation", "make_conversation")

function read_route(req)
  local b = req:json()
  local ok, text, err = pcall(conversations.read, b.kind, b.params)
  if not ok then return 200, { raised = tostring(text) } end
  if not text then return 200, { failed = err } end
  return 200, text, { ["Content-Type"] = "application/json" }
end
route("POST", "/test/read", "read_route")
"""

# In the order they are made: the list's rowid order.
ROWS = [
    # client_id, channel, state, desk, group, agent, status
    ("q1", "web", "queued", "d1", "g1", None, "open"),
    ("q2", "web", "queued", "d1", "g2", None, "open"),
    ("a1", "web", "agent", "d1", "g1", "ann", "open"),
    ("a2", "web2", "agent", "d1", "g1", "bob", "pending"),
    ("a3", "web2", "agent", "d1", "g2", "ann", "open"),
    ("c1", "web", "closed", "d1", "g1", "ann", "solved"),
    ("o1", "web", "queued", "d2", "g1", None, "open"),
    ("b1", "web", "bot", None, None, None, "open"),
]


@pytest.fixture
def desk(fakes, daemon):
    """A daemon holding ROWS; returns (api, {client_id: conversation id})."""
    cb = fakes.callback()
    install_lua_tree(daemon)
    write_echo_bot(daemon)
    write_conv_config(daemon, channels={"web": webhook_channel(cb.callback_url),
                                        "web2": webhook_channel(cb.callback_url)},
                      bots={"echo": lua_bot()})
    daemon.write_script("rules/test_lists.lua", RULES)
    daemon.start()
    api = Api(daemon)
    ids = {}
    for client_id, channel, state, desk_name, group, agent, status in ROWS:
        resp = api.post("/test/conversation", {"client_id": client_id, "channel": channel, "state": state,
                                               "desk": desk_name, "group": group, "agent": agent,
                                               "status": status})
        assert resp.status == 200, resp
        ids[client_id] = resp.json()["id"]
    return api, ids


def listed(api, ids, **query):
    """The client ids of every page of GET /v1/conversations, in order."""
    names = {v: k for k, v in ids.items()}
    return [names[c["id"]] for c in api.conversations_all(**query)]


def test_list_filters_by_desk_group_agent_and_status(desk):
    api, ids = desk
    assert listed(api, ids, desk="d1") == ["c1", "a3", "a2", "a1", "q2", "q1"]
    assert listed(api, ids, desk="d1", state="queued") == ["q2", "q1"]
    assert listed(api, ids, desk="d1", state="queued", group="g1") == ["q1"]
    assert listed(api, ids, group="g1", state="queued") == ["o1", "q1"]
    assert listed(api, ids, desk="d1", agent="ann") == ["c1", "a3", "a1"]
    assert listed(api, ids, desk="d1", agent="ann", state="agent") == ["a3", "a1"]
    assert listed(api, ids, desk="d1", status="pending") == ["a2"]
    assert listed(api, ids, desk="d1", channel="web2") == ["a3", "a2"]
    assert listed(api, ids, desk="d2") == ["o1"]
    assert listed(api, ids, desk="nobody") == []
    # the answer's shape is the list's: whole conversations with their fields
    doc = api.get("/v1/conversations", desk="d1", agent="bob").json()
    assert doc["next_cursor"] is None
    [conv] = doc["conversations"]
    assert conv["id"] == ids["a2"]
    assert (conv["desk"], conv["group"], conv["agent"], conv["status"], conv["state"], conv["channel"]) == \
        ("d1", "g1", "bob", "pending", "agent", "web2")


@pytest.mark.parametrize("limit", [1, 2, 4, 200])
def test_list_order_with_cursors(desk, limit):
    api, ids = desk
    newest_first = ["b1", "o1", "c1", "a3", "a2", "a1", "q2", "q1"]
    assert listed(api, ids, limit=limit) == newest_first
    assert listed(api, ids, limit=limit, order="desc") == newest_first
    assert listed(api, ids, limit=limit, order="asc") == newest_first[::-1]
    # a group's queue, oldest first, page by page
    assert listed(api, ids, limit=limit, order="asc", state="queued", group="g1") == ["q1", "o1"]
    assert listed(api, ids, limit=limit, order="asc", desk="d1", status="open") == ["q1", "q2", "a1", "a3"]


@pytest.mark.parametrize("query,name", [
    ("order=up", "order"),
    ("order=ASC", "order"),
    ("desk=", "desk"),
    ("group=" + "x" * 513, "group"),
    ("agent=", "agent"),
    ("status=%FF", "status"),
    ("channel=", "channel"),
])
def test_bad_list_parameter_is_400_naming_it(desk, query, name):
    api, ids = desk
    err = assert_json_error(api.get("/v1/conversations?" + query), 400, "invalid_parameter")
    assert err["message"].startswith(name + " "), err


def read(api, kind, params):
    resp = api.post("/test/read", {"kind": kind, "params": params})
    assert resp.status == 200, resp
    return resp.json()


def test_script_reads_lists_and_counts(desk):
    api, ids = desk
    names = {v: k for k, v in ids.items()}

    def script_list(params):
        doc = read(api, "conversations", params)
        assert "raised" not in doc and "failed" not in doc, doc
        return [names[c["id"]] for c in doc["conversations"]]

    assert script_list({"desk": "d1", "agent": False}) == ["q2", "q1"]
    assert script_list({"agent": False}) == ["b1", "o1", "q2", "q1"]
    assert script_list({"desk": "d1", "status": ["pending", "solved"]}) == ["c1", "a2"]
    assert script_list({"desk": "d1", "state": ["queued", "agent"], "order": "asc"}) == ["q1", "q2", "a1", "a2", "a3"]
    assert script_list({"channel": ["web2", "nope"]}) == ["a3", "a2"]

    assert read(api, "conversation_counts", {"desk": "d1", "by": "agent", "state": "agent"}) == {"ann": 2, "bob": 1}
    assert read(api, "conversation_counts", {"desk": "d1", "by": "agent"}) == {"ann": 3, "bob": 1}
    assert read(api, "conversation_counts", {"desk": "d1", "by": "group", "state": "queued"}) == {"g1": 1, "g2": 1}
    assert read(api, "conversation_counts", {"desk": "d1", "by": "status", "channel": ["web2"]}) == \
        {"open": 1, "pending": 1}
    assert read(api, "conversation_counts", {"desk": "nobody", "by": "group"}) == {}


@pytest.mark.parametrize("kind,params,name", [
    ("conversations", {"desk": 5}, "desk"),
    ("conversations", {"group": True}, "group"),
    ("conversations", {"agent": True}, "agent"),
    ("conversations", {"status": []}, "status"),
    ("conversations", {"status": ["s"] * 9}, "status"),
    ("conversations", {"state": ["bot", "queued", "agent", "closed", "bot"]}, "state"),
    ("conversations", {"channel": ["web"] * 65}, "channel"),
    ("conversations", {"channel": ["web", 1]}, "channel"),
    ("conversations", {"order": "up"}, "order"),
    ("conversation_counts", {"by": "agent"}, "desk"),
    ("conversation_counts", {"desk": "d1"}, "by"),
    ("conversation_counts", {"desk": "d1", "by": "channel"}, "by"),
])
def test_script_read_bad_parameter_raises_naming_it(desk, kind, params, name):
    api, ids = desk
    doc = read(api, kind, params)
    assert "raised" in doc, doc
    assert name + " " in doc["raised"], doc


def test_script_read_list_limits_are_accepted(desk):
    api, ids = desk
    doc = read(api, "conversations", {"status": ["open"] * 8, "state": ["bot"] * 4, "channel": ["web"] * 64})
    assert [c["id"] for c in doc["conversations"]] == [ids["b1"]], json.dumps(doc)
