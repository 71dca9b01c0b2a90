"""The Telegram channel (docs/providers/telegram.md) against
FakeTelegram, which follows shared/providers/platforms.md section 6."""

import json
import time

from conftest import assert_json_error, wait_until
from convkit import (
    Api,
    by_kind,
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    install_lua_tree,
    lua_bot,
    write_conv_config,
)
from fakes import tg_callback_update, tg_text_update, tg_user

TG_SECRET = "tg-secret-token_1"

MENU_BOT_LUA = """
-- Echoes, and answers "menu" with buttons (returned directly as an array),
-- "long" with a text over Telegram's 4096 characters, "wide" with a button
-- whose payload is over callback_data's 64 bytes.
local M = {}

function M.on_message(conv, msg)
  if msg.text == "long" then
    return { { type = "text", text = string.rep("\\u{0436}", 3000) .. string.rep("z", 3000) } }
  end
  if msg.text == "wide" then
    return { { type = "text", text = "Wide" },
             { type = "buttons", buttons = { { text = "W", payload = "x" .. string.rep("\\u{0434}", 40) } } } }
  end
  if msg.text == "menu" then
    return {
      { type = "text", text = "Pick one" },
      { type = "buttons", buttons = {
          { text = "Yes", payload = "yes" },
          { text = "No", payload = "no" },
          { text = "Maybe" },
      } },
    }
  end
  return { replies = { { type = "text", text = "you said: " .. tostring(msg.text) } } }
end

return M
"""


def settle(seconds=0.5):
    time.sleep(seconds)


def setup_tg(daemon, fakes, token=None):
    tg = fakes.telegram()
    install_lua_tree(daemon)
    daemon.write_script("scripts/bots/menu.lua", MENU_BOT_LUA)
    write_conv_config(
        daemon,
        channels={"tg": {"type": "telegram", "token": token or tg.token, "secret_token": TG_SECRET,
                         "api_base": tg.api_base, "bot": "menu"}},
        bots={"menu": lua_bot("bots.menu")},
    )
    daemon.start()
    return Api(daemon), tg


def post_update(daemon, update, secret=TG_SECRET, raw=None):
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    return daemon.post("/v1/channels/tg/telegram", raw if raw is not None else json.dumps(update), headers=headers)


def post_update_ok(daemon, update):
    resp = post_update(daemon, update)
    assert 200 <= resp.status < 300, f"update not acknowledged: {resp!r}"
    return resp


def tg_conversations(api):
    return api.conversations_all(channel="tg")


def the_conversation(api):
    convs = wait_until(lambda: tg_conversations(api), message="a tg conversation")
    assert len(convs) == 1, convs
    return convs[0]


def contains_value(tree, wanted) -> bool:
    """Whether ``wanted`` (as int or string) occurs as a value anywhere in a JSON tree."""
    if isinstance(tree, dict):
        return any(contains_value(v, wanted) for v in tree.values())
    if isinstance(tree, list):
        return any(contains_value(v, wanted) for v in tree)
    return tree == wanted or (isinstance(tree, (str, int)) and not isinstance(tree, bool) and str(tree) == str(wanted))


def test_text_update_reaches_bot_and_reply_is_sent(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    user = tg_user(user_id=1111111, first_name="Ivan", last_name="Petrov", language_code="ru")
    post_update_ok(daemon, tg_text_update("hello", user=user))

    sent = tg.wait_for_sent(1)[0]
    assert sent.method == "POST"
    assert sent.content_type == "application/json"
    assert sent.json["text"] == "you said: hello"
    assert str(sent.json["chat_id"]) == "1111111"
    assert "reply_markup" not in sent.json or not sent.json["reply_markup"].get("inline_keyboard")

    conv = the_conversation(api)
    assert conv["client_id"] == "1111111"
    assert conv["state"] == "bot"
    full = api.conversation(conv["id"])
    assert full["client"].get("name") == "Ivan Petrov", full["client"]
    assert full["client"].get("language") == "ru", full["client"]
    msgs = api.wait_messages(conv["id"], lambda ms: len(ms) >= 2, message="2 stored messages")
    assert [(m["author"]["kind"], m["text"]) for m in msgs] == [("client", "hello"), ("bot", "you said: hello")]

    # a second message from the same chat continues the conversation
    post_update_ok(daemon, tg_text_update("again", user=user))
    tg.wait_for_sent(1, text="you said: again")
    assert len(tg_conversations(api)) == 1
    tg.assert_no_violations()


def test_returned_message_id_is_stored_in_provider_ids(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    post_update_ok(daemon, tg_text_update("track me"))
    sent = tg.wait_for_sent(1)[0]
    tg_mid = sent.result_message_id
    conv = the_conversation(api)

    def bot_msg_with_ids():
        bots = by_kind(api.messages_all(conv["id"]), "bot")
        if bots and bots[0].get("provider_ids") and contains_value(bots[0]["provider_ids"], tg_mid):
            return bots[0]
        return None

    msg = wait_until(bot_msg_with_ids, timeout=10,
                     message=f"bot message with provider_ids containing Telegram message_id {tg_mid} "
                             f"(messages: {api.messages_all(conv['id'])!r})")
    assert msg["text"] == "you said: track me"
    # and through GET /v1/conversations/{id} as well
    last = api.conversation(conv["id"])["messages"]
    assert any(contains_value(m.get("provider_ids"), tg_mid) for m in last), last


def test_wrong_or_missing_secret_token_is_401(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    upd = tg_text_update("intruder")
    assert_json_error(post_update(daemon, upd, secret=None), 401)
    assert_json_error(post_update(daemon, upd, secret="wrong"), 401)
    assert_json_error(post_update(daemon, upd, secret=TG_SECRET + "x"), 401)
    settle(0.5)
    assert tg_conversations(api) == []
    assert tg.snapshot() == []
    # the right token works, and the update_id was not burnt by the rejected posts
    post_update_ok(daemon, upd)
    tg.wait_for_sent(1, text="you said: intruder")


def test_unknown_instance_is_401_like_a_wrong_secret(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    resp = daemon.post("/v1/channels/nope/telegram", json.dumps(tg_text_update("x")),
                       headers={"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": TG_SECRET})
    assert_json_error(resp, 401, "unauthorized")


def test_buttons_become_inline_keyboard(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    post_update_ok(daemon, tg_text_update("menu"))
    sent = tg.wait_for_sent(1, text="Pick one")[0]
    markup = sent.json.get("reply_markup")
    assert isinstance(markup, dict), f"reply_markup missing or not an object: {sent.json!r}"
    kb = markup.get("inline_keyboard")
    assert isinstance(kb, list) and all(isinstance(row, list) for row in kb), markup
    flat = [b for row in kb for b in row]
    assert [b["text"] for b in flat] == ["Yes", "No", "Maybe"], kb
    assert flat[0]["callback_data"] == "yes"
    assert flat[1]["callback_data"] == "no"
    assert isinstance(flat[2].get("callback_data"), str) and flat[2]["callback_data"], flat[2]
    settle(0.3)
    assert len(tg.sent_messages()) == 1, "the buttons belong to the text before them: one sendMessage"
    tg.assert_no_violations()


def test_callback_query_becomes_client_message_and_is_answered(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    user = tg_user(user_id=2222222, first_name="Olga", language_code="en")
    post_update_ok(daemon, tg_text_update("menu", user=user))
    tg.wait_for_sent(1, text="Pick one")
    post_update_ok(daemon, tg_callback_update("yes", user=user, query_id="cbq-77"))

    answers = wait_until(lambda: [r for r in tg.calls("answerCallbackQuery") if r.ok], timeout=10,
                         message="an answerCallbackQuery call")
    assert answers[0].json["callback_query_id"] == "cbq-77"
    sent = tg.wait_for_sent(1, text="you said: yes")[0]
    assert str(sent.json["chat_id"]) == "2222222"

    conv = the_conversation(api)
    assert conv["client_id"] == "2222222"
    assert api.conversation(conv["id"])["client"].get("name") == "Olga"
    msgs = api.wait_messages(conv["id"], lambda ms: len(ms) >= 4, message="4 stored messages")
    client_texts = [m["text"] for m in by_kind(msgs, "client")]
    assert client_texts == ["menu", "yes"]
    settle(0.3)
    assert len([r for r in tg.calls("answerCallbackQuery") if r.ok]) == 1
    tg.assert_no_violations()


def test_repeated_update_id_is_processed_once(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    upd = tg_text_update("only once")
    post_update_ok(daemon, upd)
    post_update_ok(daemon, upd)
    tg.wait_for_sent(1, text="you said: only once")
    post_update_ok(daemon, upd)  # also after the reply went out
    settle(0.8)
    assert len(tg.sent_messages()) == 1, tg.sent_messages()
    conv = the_conversation(api)
    assert [m["text"] for m in by_kind(api.messages_all(conv["id"]), "client")] == ["only once"]

    # a repeated callback_query update too
    cbu = tg_callback_update("yes", query_id="cbq-rep")
    post_update_ok(daemon, cbu)
    post_update_ok(daemon, cbu)
    tg.wait_for_sent(1, text="you said: yes")
    settle(0.8)
    assert len(tg.sent_messages()) == 2
    assert len([r for r in tg.calls("answerCallbackQuery") if r.ok]) == 1


def test_other_updates_are_acknowledged_and_ignored(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    user = tg_user()
    edited = tg_text_update("edited", user=user)
    edited["edited_message"] = edited.pop("message")
    sticker = tg_text_update("x", user=user)
    del sticker["message"]["text"]
    sticker["message"]["sticker"] = {"file_id": "abc", "file_unique_id": "u", "width": 512, "height": 512,
                                     "is_animated": False, "is_video": False, "type": "regular"}
    member = {"update_id": 990001, "my_chat_member": {"chat": {"id": 1, "type": "private"}, "from": user,
                                                      "date": int(time.time()),
                                                      "old_chat_member": {"status": "member", "user": user},
                                                      "new_chat_member": {"status": "kicked", "user": user}}}
    for upd in (edited, sticker, member):
        post_update_ok(daemon, upd)
    settle(0.5)
    assert tg_conversations(api) == []
    assert tg.sent_messages() == []


def test_malformed_update_is_4xx(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    resp = post_update(daemon, None, raw=b"{not json")
    assert 400 <= resp.status < 500, resp
    assert_json_error(resp, resp.status)
    settle(0.3)
    assert tg_conversations(api) == []


def test_send_message_rate_limited_is_retried(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    tg.fail_first(1, 429, "Too Many Requests: retry after 1", retry_after=1)
    post_update_ok(daemon, tg_text_update("busy"))
    tg.wait_for_sent(1, text="you said: busy", timeout=20)
    settle(0.5)
    calls = tg.calls("sendMessage")
    assert [r.status for r in calls] == [429, 200], calls
    assert calls[0].idempotency_key == calls[1].idempotency_key
    # Telegram gives the delay only in the body (parameters.retry_after = 1):
    # the outbox's own backoff here is 0.05 s, so an early retry means the
    # body was ignored. A lower bound only; the upper one is the wait above.
    gap = calls[1].t - calls[0].t
    assert gap >= 0.9, f"retried after {gap:.3f} s, before retry_after"


def test_send_message_bad_request_is_dead_lettered(fakes, daemon):
    api, tg = setup_tg(daemon, fakes)
    tg.fail_first(1, 400, "Bad Request: chat not found")
    post_update_ok(daemon, tg_text_update("lost chat"))
    dead = wait_until(lambda: api.dead_all(), message="a dead letter")
    settle(0.3)
    assert len(tg.calls("sendMessage")) == 1
    assert "400" in dead[0]["reason"] or "chat not found" in dead[0]["reason"], dead[0]


def test_wrong_bot_token_is_dead_lettered(fakes, daemon):
    api, tg = setup_tg(daemon, fakes, token="123456:WRONG")
    post_update_ok(daemon, tg_text_update("hi"))
    dead = wait_until(lambda: api.dead_all(), message="a dead letter")
    settle(0.3)
    tries = [r for r in tg.snapshot() if r.path.endswith("/sendMessage")]
    assert len(tries) == 1 and tries[0].status == 401, tries
    assert "401" in dead[0]["reason"] or "Unauthorized" in dead[0]["reason"], dead[0]


def test_long_reply_fits_telegram_text_limit(fakes, daemon):
    """sendMessage takes 1-4096 characters: a longer reply must still arrive whole."""
    api, tg = setup_tg(daemon, fakes)
    post_update_ok(daemon, tg_text_update("long"))
    want = "\u0436" * 3000 + "z" * 3000
    wait_until(lambda: "".join(r.json["text"] for r in tg.sent_messages()) == want, timeout=15,
               message=f"the long reply to arrive whole (calls: {tg.snapshot()!r})")
    tg.assert_no_violations()
    assert all(r.status == 200 for r in tg.calls("sendMessage"))


def test_long_button_payload_is_valid_callback_data(fakes, daemon):
    """callback_data is 1-64 bytes of UTF-8: a longer payload must not break the request."""
    api, tg = setup_tg(daemon, fakes)
    post_update_ok(daemon, tg_text_update("wide"))
    wait_until(lambda: tg.sent_messages() or tg.violations, timeout=15, message="a sendMessage call")
    tg.assert_no_violations()
    sent = tg.sent_messages()[0]
    data = sent.json["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert 1 <= len(data.encode()) <= 64
