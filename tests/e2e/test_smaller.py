"""Smaller defects of the core found in the same reading (issue 7, §9)."""

from __future__ import annotations

import signal
import time

from conftest import wait_until
from convkit import (
    fakes_fixture,  # noqa: F401 - the `fakes` fixture
    setup_echo_daemon,
)


def test_a_binary_outbox_body_survives_a_restart_whole(fake_server, daemon):
    """Bodies were cut at the first NUL when they were read back at start."""
    target = fake_server(status=503)
    daemon.write_config(outbox={"backoff_base": 1, "backoff_max": 1})
    daemon.write_script("scripts/bin.lua", f"""
        function send_binary(req)
          outbox.send{{ target = "bin", url = "{target.url}/bin", body = "a\\0b\\0c",
                       headers = {{ ["Content-Type"] = "application/octet-stream" }} }}
          return 200, {{}}
        end
        route("POST", "/t/bin", "send_binary")
    """)
    daemon.start()
    daemon.post("/t/bin")
    target.wait_for_requests(1)
    assert target.requests[0].body == b"a\0b\0c"
    daemon.stop(signal.SIGTERM)
    seen = len(target.requests)
    target.status = 200
    daemon.proc = None
    daemon.start()          # the entry is read back from the store
    target.wait_for_requests(seen + 1, timeout=15)
    assert target.requests[-1].body == b"a\0b\0c"


def test_a_body_that_cannot_be_encoded_raises_and_leaks_nothing(daemon):
    """An evbuffer leaked when a body failed to encode (make sanitize's leak
    check at the daemon's exit would report it)."""
    daemon.write_script("scripts/enc.lua", """
        function bad_body(req)
          local ok, err = pcall(outbox.send, { target = "x", url = "http://127.0.0.1:9/",
                                              headers = { A = "b" }, body = { f = print } })
          return 200, { ok = ok, err = tostring(err) }
        end
        route("POST", "/t/bad", "bad_body")
    """)
    daemon.start()
    doc = daemon.post("/t/bad").json()
    assert doc["ok"] is False and "serialise" in doc["err"], doc
    assert daemon.metric("switchboard_outbox_pending") == 0


def test_the_dedupe_window_applies_on_reload(fakes, daemon):
    """conversations.dedupe_window was read only at start, without a word."""
    cb = fakes.callback()
    api = setup_echo_daemon(daemon, cb)
    api.send("c-win", "once", message_id="k-win")
    dup = api.post_message({"client_id": "c-win", "text": "once", "message_id": "k-win"})
    assert dup.json().get("duplicate") is True
    setup_echo_daemon(daemon, cb, start=False, conversations={"dedupe_window": 1})
    daemon.reload_ok()
    time.sleep(1.5)
    again = api.post_message({"client_id": "c-win", "text": "once", "message_id": "k-win"})
    assert again.status == 202 and "duplicate" not in again.json(), again
    cb.wait_for_accepted(2)
