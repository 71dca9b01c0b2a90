"""What one script cannot do to the engine or to other scripts: hold the
loop inside a C library call, replace the shared string metatable, write
into the read-only config, poison require() for everyone, or leave a
conversation half-changed."""

from __future__ import annotations

from conftest import assert_json_error, wait_until

PATTERN_ROUTES = """
function backtrack(req)
  local s = string.rep("a", 200000)
  return 200, { found = s:find(".-.-.-b") ~= nil }
end
route("GET", "/t/backtrack", "backtrack")

function gsub_backtrack(req)
  local s = string.rep("a", 100000)
  local out = s:gsub("a*a*a*b", "x")
  return 200, { len = #out }
end
route("GET", "/t/gsub", "gsub_backtrack")

function normal(req)
  local text = string.rep("word ", 20000)
  local n = select(2, text:gsub("%s+", " "))
  local first = text:match("^(%w+)")
  return 200, { n = n, first = first }
end
route("GET", "/t/normal", "normal")
"""


def test_a_backtracking_pattern_is_stopped_by_the_cpu_budget(daemon):
    """A backtracking string.find on a 200 KB string held the loop at 100%
    until the process was killed: the budget only counted Lua instructions."""
    daemon.write_config(lua={"cpu_ms_per_resume": 200, "cpu_ms_per_job": 500})
    daemon.write_script("scripts/patterns.lua", PATTERN_ROUTES)
    daemon.start()
    for path in ("/t/backtrack", "/t/gsub"):
        resp = daemon.get(path, timeout=20)
        assert_json_error(resp, 500, "script_budget_exceeded")
        assert daemon.health()["status"] == "ok"
    rec = daemon.wait_for_log(msg="script stopped", reason="cpu")
    assert "patterns.lua" in rec["script"], rec
    ok = daemon.get("/t/normal")
    assert ok.status == 200 and ok.json() == {"n": 20000, "first": "word"}, ok


def test_one_script_cannot_replace_the_string_metatable(daemon):
    daemon.write_script("scripts/a_vandal.lua", """
        local ok, err = pcall(function() getmetatable("").__index = { upper = function() return "pwned" end } end)
        vandal_ok = ok
        vandal_err = tostring(err)
    """)
    daemon.write_script("scripts/b_victim.lua", """
        function victim(req)
          return 200, { upper = ("quiet"):upper(), vandal_ok = vandal_ok, mt = tostring(getmetatable("")) }
        end
        route("GET", "/t/victim", "victim")
    """)
    daemon.start()
    doc = daemon.get("/t/victim").json()
    assert doc["upper"] == "QUIET"
    assert doc["vandal_ok"] is False
    assert doc["mt"] == "protected"


def test_the_config_cannot_be_changed_with_rawset(daemon):
    daemon.write_config(feature={"flag": "original"})
    daemon.write_script("scripts/cfg.lua", """
        function poke(req)
          local ok, err = pcall(rawset, config.feature, "flag", "changed")
          local ok2 = pcall(function() config.feature.flag = "changed" end)
          return 200, { rawset_ok = ok, err = tostring(err), assign_ok = ok2, flag = config.feature.flag }
        end
        route("POST", "/t/poke", "poke")
    """)
    daemon.start()
    doc = daemon.post("/t/poke").json()
    assert doc == {"rawset_ok": False, "err": doc["err"], "assign_ok": False, "flag": "original"}, doc
    assert "read-only" in doc["err"]
    assert daemon.post("/t/poke").json()["flag"] == "original"


def test_a_module_that_failed_once_can_be_required_again(daemon):
    """require stayed poisoned ("requires itself (loop)") after a module
    failed once."""
    daemon.write_script("scripts/lib/fragile.lua", """
        if not state.get("fragile_ok") then error("not ready yet") end
        return { ready = true }
    """)
    daemon.write_script("scripts/req.lua", """
        function use(req)
          local ok, mod = pcall(require, "lib.fragile")
          return 200, { ok = ok, err = not ok and tostring(mod) or nil }
        end
        route("GET", "/t/use", "use")
        function ready(req) state.set("fragile_ok", true) return 200, {} end
        route("POST", "/t/ready", "ready")
    """)
    daemon.start()
    first = daemon.get("/t/use").json()
    assert first["ok"] is False and "not ready yet" in first["err"], first
    daemon.post("/t/ready")
    again = daemon.get("/t/use").json()
    assert again == {"ok": True}, again


def test_conv_set_is_all_or_nothing(daemon):
    daemon.write_config(store={"sync": "off"})
    daemon.write_script("scripts/set.lua", """
        function half(req)
          local conv = conversations.find_or_create("web", "c-set")
          local ok, err = pcall(conv.set, conv, { status = "changed", tags = 5 })
          return 200, { ok = ok, err = tostring(err), status = conv.status }
        end
        route("POST", "/t/half", "half")
    """)
    daemon.start()
    doc = daemon.post("/t/half").json()
    assert doc["ok"] is False and "tags" in doc["err"], doc
    assert doc["status"] == "open", "a field was set before another one was refused"


def test_a_job_reaching_for_a_held_conversation_waits_its_turn(daemon):
    """Two jobs never change one conversation at the same time: the second
    waits until the first ended, then sees what it wrote."""
    daemon.write_config(store={"sync": "off"})
    daemon.write_script("scripts/turns.lua", """
        function slow(req)
          local conv = conversations.find_or_create("web", "c-turns")
          conv:append{ author = { kind = "client" }, text = "first" }
          sleep(0.5)
          conv:append{ author = { kind = "client" }, text = "second" }
          return 200, {}
        end
        route("POST", "/t/slow", "slow")
        function peek(req)
          local conv = conversations.find_or_create("web", "c-turns")
          local texts = {}
          for _, m in ipairs(conv:messages()) do texts[#texts + 1] = m.text end
          return 200, { texts = texts }
        end
        route("GET", "/t/peek", "peek")
    """)
    daemon.start()
    import threading
    import time
    t = threading.Thread(target=lambda: daemon.post("/t/slow"))
    t.start()
    time.sleep(0.15)
    seen = daemon.get("/t/peek").json()
    t.join()
    assert seen == {"texts": ["first", "second"]}, seen
