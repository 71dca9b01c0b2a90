"""Timers keep their word (docs/architecture.md, "Timers"): ids are never
reused, a one-shot is removed only when its handler succeeded (retried with
backoff otherwise), repeating schedules survive reloads and restarts, and
calendar schedules fire at local times in a time zone."""

from __future__ import annotations

import datetime
import signal
import time
from zoneinfo import ZoneInfo

from conftest import wait_until

TIMER_ROUTES = """
function fired(data, id)
  local list = state.get("fired") or {}
  list[#list + 1] = data.tag
  state.set("fired", list)
end

function create(req)
  local id = timer.after(tonumber(req.query.delay), "fired", { tag = req.query.tag })
  return 200, { id = id }
end
route("POST", "/t/create", "create")

function cancel(req)
  return 200, { cancelled = timer.cancel(math.tointeger(tonumber(req.query.id))) }
end
route("POST", "/t/cancel", "cancel")

function show(req)
  return 200, { value = state.get(req.query.key) }
end
route("GET", "/t/state", "show")

function next_due(req)
  local id = math.tointeger(tonumber(req.query.id)) or _G[req.query.global or ""]
  return 200, { next = timer.next(id) }
end
route("GET", "/t/next", "next_due")

function heal(req)
  state.set("healed", true)
  return 200, {}
end
route("POST", "/t/heal", "heal")
"""


def state_value(daemon, key):
    return daemon.get(f"/t/state?key={key}").json().get("value")


def start_with(daemon, extra="", **config):
    daemon.write_config(**config)
    daemon.write_script("scripts/timers.lua", TIMER_ROUTES + extra)
    daemon.start()


def test_ids_are_never_reused_and_a_stale_id_cancels_nothing(daemon):
    """Ids used to be rebuilt at start from the timers still stored: a stale
    id held by one conversation then cancelled another one's timer."""
    start_with(daemon)
    first = daemon.post("/t/create?delay=0&tag=a").json()["id"]
    wait_until(lambda: state_value(daemon, "fired") == ["a"], message="the first timer fired")
    daemon.restart(signal.SIGTERM)
    second = daemon.post("/t/create?delay=1&tag=b").json()["id"]
    assert second != first
    assert daemon.post(f"/t/cancel?id={first}").json() == {"cancelled": False}
    wait_until(lambda: state_value(daemon, "fired") == ["a", "b"], timeout=10,
               message="the second timer, untouched by the stale id, fired")


def test_a_failing_one_shot_is_retried_with_backoff_until_it_succeeds(daemon):
    """A one-shot was deleted before its handler ran: if the handler failed,
    the inactivity close it stood for was lost."""
    start_with(daemon, extra="""
        function flaky(data, id)
          if not state.get("healed") then error("not yet") end
          state.set("flaky_ran", data.n)
        end
        function arm(req)
          return 200, { id = timer.after(0, "flaky", { n = 7 }) }
        end
        route("POST", "/t/arm", "arm")
    """, timers={"retry_max": 1})
    pending_before = daemon.metric("switchboard_timers_pending")
    daemon.post("/t/arm")
    daemon.wait_for_log(msg="timer handler failed: retrying", handler="flaky")
    assert daemon.metric("switchboard_timers_pending") == pending_before + 1   # still there
    daemon.post("/t/heal")
    wait_until(lambda: state_value(daemon, "flaky_ran") == 7, timeout=10, message="the retried handler succeeded")
    wait_until(lambda: daemon.metric("switchboard_timers_pending") == pending_before,
               message="the one-shot removed once its handler succeeded")


def test_a_failing_one_shot_survives_a_restart(daemon):
    start_with(daemon, extra="""
        function flaky(data, id)
          if not state.get("healed") then error("not yet") end
          state.set("flaky_ran", true)
        end
        function arm(req) return 200, { id = timer.after(0, "flaky", {}) } end
        route("POST", "/t/arm", "arm")
    """)
    daemon.post("/t/arm")
    daemon.wait_for_log(msg="timer handler failed: retrying", handler="flaky")
    daemon.restart(signal.SIGKILL)
    daemon.post("/t/heal")
    wait_until(lambda: state_value(daemon, "flaky_ran") is True, timeout=15, message="the timer ran after the restart")


def test_load_time_every_keeps_its_phase_across_reloads(daemon):
    """Each reload restarted a top-level timer.every: a daily job never
    fired on a system reloaded more than once a day."""
    start_with(daemon, extra="""
        function tick()
          state.set("ticks", (state.get("ticks") or 0) + 1)
        end
        timer.every(1.5, "tick")
    """)
    end = time.monotonic() + 4.0
    while time.monotonic() < end:
        daemon.reload_ok()
        time.sleep(0.4)
    assert (state_value(daemon, "ticks") or 0) >= 2


def test_load_time_every_keeps_its_schedule_across_restarts(daemon):
    start_with(daemon, extra="""
        daily_id = timer.every(3600, "tick")
        function tick() end
    """)
    before = daemon.get("/t/next?global=daily_id").json()["next"]
    time.sleep(1.1)
    daemon.restart(signal.SIGTERM)
    after = daemon.get("/t/next?global=daily_id").json()["next"]
    assert abs(after - before) < 0.01, (before, after)


def next_local(now_utc, zone, hour, minute, weekdays):
    """The next instant after now_utc when the clock in `zone` reads hour:minute on one of `weekdays`."""
    local = now_utc.astimezone(zone)
    for days in range(0, 9):
        d = (local + datetime.timedelta(days=days)).date()
        if d.weekday() not in weekdays:
            continue
        candidate = datetime.datetime(d.year, d.month, d.day, hour, minute, tzinfo=zone)
        if candidate > now_utc:
            return candidate.timestamp()
    raise AssertionError("no firing within 8 days")


def test_calendar_schedules_fire_at_local_times(daemon):
    start_with(daemon, extra="""
        weekday_report = timer.every({ at = "mon-fri 09:00", tz = "Europe/Berlin" }, "report")
        noon = timer.every("12:00", "report")            -- in config.timezone
        function report() end
        function bad(req)
          local ok, err = pcall(timer.every, "25:00", "report")
          return 200, { ok = ok, err = tostring(err) }
        end
        route("GET", "/t/bad", "bad")
    """, timezone="Asia/Tokyo")
    now = datetime.datetime.now(datetime.timezone.utc)
    berlin = daemon.get("/t/next?global=weekday_report").json()["next"]
    assert berlin == next_local(now, ZoneInfo("Europe/Berlin"), 9, 0, range(0, 5))
    tokyo = daemon.get("/t/next?global=noon").json()["next"]
    assert tokyo == next_local(now, ZoneInfo("Asia/Tokyo"), 12, 0, range(0, 7))
    bad = daemon.get("/t/bad").json()
    assert bad["ok"] is False and "25:00" in bad["err"], bad


def test_a_calendar_timer_made_by_a_handler_is_kept_across_restarts(daemon):
    start_with(daemon, extra="""
        function make(req)
          return 200, { id = timer.every({ at = "sat,sun 03:30", tz = "America/New_York" }, "report") }
        end
        route("POST", "/t/make", "make")
        function report() end
    """)
    tid = daemon.post("/t/make").json()["id"]
    before = daemon.get(f"/t/next?id={tid}").json()["next"]
    now = datetime.datetime.now(datetime.timezone.utc)
    assert before == next_local(now, ZoneInfo("America/New_York"), 3, 30, (5, 6))
    daemon.restart(signal.SIGKILL)
    assert daemon.get(f"/t/next?id={tid}").json()["next"] == before


def test_a_rejected_timezone_fails_the_load(daemon):
    daemon.write_config(timezone="Mars/Olympus_Mons")
    daemon.start(wait=False)
    assert daemon.wait_exit(timeout=10) == 1
    assert "timezone" in daemon.log_text()


def test_local_time_in_a_zone_across_dst(daemon):
    start_with(daemon, extra="""
        function local_time(req)
          local ok, t = pcall(timer.local_time, tonumber(req.query.t), req.query.tz)
          if not ok then return 400, { error = tostring(t) } end
          return 200, t
        end
        route("GET", "/t/local", "local_time")
    """, timezone="Europe/Berlin")
    spring = datetime.datetime(2026, 3, 29, 1, 0, tzinfo=datetime.timezone.utc).timestamp()

    def local(t, tz=None):
        resp = daemon.get(f"/t/local?t={t}" + (f"&tz={tz}" if tz else ""))
        return resp.status, resp.json()

    # the configured zone by default: one second before and at the spring-forward change
    assert local(spring - 1) == (200, {"year": 2026, "month": 3, "day": 29, "hour": 1, "min": 59, "sec": 59,
                                       "wday": 7})
    assert local(spring) == (200, {"year": 2026, "month": 3, "day": 29, "hour": 3, "min": 0, "sec": 0, "wday": 7})
    assert local(spring, "America/New_York")[1]["hour"] == 21
    assert local(spring, "UTC")[1] == {"year": 2026, "month": 3, "day": 29, "hour": 1, "min": 0, "sec": 0,
                                       "wday": 7}
    # agrees with Python's zone data on an ordinary Monday
    monday = datetime.datetime(2026, 6, 1, 7, 45, 30, tzinfo=ZoneInfo("Asia/Tokyo"))
    status, got = local(int(monday.timestamp()), "Asia/Tokyo")
    assert (got["year"], got["month"], got["day"], got["hour"], got["min"], got["sec"], got["wday"]) == \
        (2026, 6, 1, 7, 45, 30, monday.isoweekday())
    status, err = local(0, "Europe/Berlim")
    assert status == 400 and 'unknown time zone "Europe/Berlim"' in err["error"], err
