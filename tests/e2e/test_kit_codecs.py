"""The integrator's codecs in the running daemon (docs/lua-api.md: crypto,
base64, url, json.array): what a script computes, and [] for marked empty
tables wherever the engine encodes (route answers, outbox bodies)."""

import base64
import hashlib
import hmac
import json

from test_outbox_hints import Target

SCRIPT = """
function sign(req)
  local body = req.body
  return 200, {
    hmac = crypto.hmac("sha256", "the-key", body),
    hmac_b64 = crypto.hmac("sha512", "the-key", body, "base64"),
    sha256 = crypto.sha256(body),
    md5 = crypto.md5(body),
    b64 = base64.encode(body),
    b64url = base64.url_encode(body),
    back = base64.decode(base64.encode(body)) == body,
    bad = select(2, base64.decode("not base64!")),
    query = url.build_query{ text = body, n = 2, tag = { "a", "b" } },
    equal = crypto.equal(crypto.sha256(body), crypto.sha256(body)),
    nonce = crypto.random_bytes(12, "hex"),
  }
end
function lists(req)
  return 200, { tags = json.array{}, filled = json.array{ "x" }, plain = {} }
end
function send(req)
  outbox.send{ target = "t", url = req:json().url, body = { items = json.array(), meta = {} } }
  return 202, { sent = true }
end
route("POST", "/t/sign", "sign")
route("GET", "/t/lists", "lists")
route("POST", "/t/send", "send")
"""


def start(daemon):
    daemon.write_script("scripts/kit.lua", SCRIPT)
    daemon.start()


def test_crypto_base64_and_url_in_a_route(daemon):
    start(daemon)
    body = "héllo wörld?&=/+ \x01"
    raw = body.encode()
    doc = daemon.post("/t/sign", raw, headers={"Content-Type": "text/plain"}).json()
    assert doc["hmac"] == hmac.new(b"the-key", raw, hashlib.sha256).hexdigest()
    assert doc["hmac_b64"] == base64.b64encode(hmac.new(b"the-key", raw, hashlib.sha512).digest()).decode()
    assert doc["sha256"] == hashlib.sha256(raw).hexdigest()
    assert doc["md5"] == hashlib.md5(raw).hexdigest()
    assert doc["b64"] == base64.b64encode(raw).decode()
    assert doc["b64url"] == base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert doc["back"] is True
    assert doc["bad"] == "invalid base64"
    assert doc["query"] == "n=2&tag=a&tag=b&text=h%C3%A9llo%20w%C3%B6rld%3F%26%3D%2F%2B%20%01"
    assert doc["equal"] is True
    assert len(doc["nonce"]) == 24 and int(doc["nonce"], 16) >= 0


def test_marked_empty_tables_are_lists_in_answers_and_outbox_bodies(daemon):
    target = Target()
    start(daemon)
    doc = daemon.get("/t/lists").json()
    assert doc == {"tags": [], "filled": ["x"], "plain": {}}, doc
    resp = daemon.post("/t/send", json.dumps({"url": target.url + "/in"}), headers={"Content-Type": "application/json"})
    assert resp.status == 202, resp
    req = target.wait_for_requests(1)[0]
    assert json.loads(req.raw) == {"items": [], "meta": {}}, req.raw
    target.close()


CONV_SCRIPT = """
route("POST", "/t/conv", function(req)
  local conv = conversations.find_or_create("web", "c1")
  conv:set{ tags = {} }                                   -- a plain empty table: tags are a list
  local m = conv:append{ author = { kind = "bot" }, text = "hi" }
  return 200, json.encode{ tags = conv.tags, attachments = m.attachments, buttons = m.buttons,
                           tagged = (function() conv:tag("x"); conv:untag("x"); return conv.tags end)() }
end)
"""


def test_stored_lists_come_back_to_scripts_as_lists(daemon):
    # conv.tags, message attachments and buttons are JSON arrays in the store;
    # a script that encodes them again gets [] when they are empty, not {}
    daemon.write_script("scripts/conv.lua", CONV_SCRIPT)
    daemon.start()
    resp = daemon.post("/t/conv", "")
    assert resp.status == 200, resp
    assert json.loads(resp.text) == {"tags": [], "attachments": [], "buttons": [], "tagged": []}, resp.text
