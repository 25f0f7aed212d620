"""The gateway's clock against the IdMS's: measured from the Date header of
every IdMS response, shown in /status, /metrics and mcgw status, warned about
once when it is beyond the 30 s ID token leeway, and named as the cause when
an ID token is refused because of it.

The test IdMS (oidc-provider) runs its clock clock_offset seconds off: its
Date headers and the iat/exp of what it issues, as if the gateway's clock
were off by -clock_offset."""

import re
import subprocess

import pytest

from idmtest import assert_no_secrets, env, pki, require_idms, wait_until  # noqa: F401
from opsutil import BIN

pytestmark = pytest.mark.timeout(180)

HINT = "check NTP/GNSS time on the gateway"


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def metric_skew(gw):
    """The mcgw_idm_clock_skew_seconds sample, or None when there is none."""
    status, _, body = gw.admin("/metrics")
    assert status == 200
    text = body.decode()
    assert "# TYPE mcgw_idm_clock_skew_seconds gauge\n" in text
    m = re.search(r"^mcgw_idm_clock_skew_seconds (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def skew_records(gw, level=None):
    return [r for r in gw.log_records() if r.get("msg") == "idm_clock_skew" and
            (level is None or r.get("level") == level)]


def cli_status(gw):
    r = subprocess.run([str(BIN), "status", "--admin", gw.admin_url], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def login(env, gw):
    gw.msg("idm_discovered", timeout=20)
    status, _, page = env.browser().login(gw.admin_url + "/login")
    assert status == 200, page
    return gw.wait_state("authorized")


def wait_refreshes(gw, n):
    return wait_until(lambda: (lambda s: s["refreshes"]["ok"] >= n and s)(gw.idm_status()), 30,
                      f"{n} refreshes", interval=0.1)


def assert_skew(skew, expected):
    """A /status clock_skew object close to expected seconds (the Date header
    has 1 s resolution; the round trip on loopback is milliseconds)."""
    assert skew is not None, "no clock skew measured"
    assert abs(skew["skew_s"] - expected) <= 2, skew
    assert 0 < skew["uncertainty_s"] <= 2, skew
    assert skew["threshold_s"] == 30


def test_clock_in_step_no_warning(env):
    idms = env.idms(access_ttl=4)
    gw = env.gateway(idms, idm={"refresh_before": "2s"})
    login(env, gw)
    wait_refreshes(gw, 2)
    st = gw.idm_status()
    assert_skew(st["clock_skew"], 0)
    assert st["clock_skew"]["large"] is False
    assert abs(st["clock_skew"]["measured_at"] - gw.status()["time"]) <= 5
    assert abs(metric_skew(gw)) <= 2
    assert skew_records(gw) == [], "a clock skew was logged with the clocks in step"
    out = cli_status(gw)
    assert re.search(r"^\s+clock skew [+-]\d+\.\d s against the IdMS \(\+-\d+\.\d s\)$", out,
                     re.M), out
    assert "too large" not in out


def test_no_skew_before_the_idms_answers(env):
    """Until an IdMS response arrives, nothing is claimed: null in /status,
    no sample in /metrics (a 0 would read as "in step")."""
    idms = env.idms()
    idms.command("stop")
    gw = env.gateway(idms)
    gw.msg("idm_discovery_failed", timeout=20)
    assert gw.idm_status()["clock_skew"] is None
    assert metric_skew(gw) is None
    assert "clock skew" not in cli_status(gw)


def test_gateway_ahead_warns_once_then_changed_then_normal(env):
    # The IdMS 120 s behind: the gateway's clock is 120 s ahead. Its ID tokens
    # (iat 120 s ago, valid 300 s) still pass, so the login works.
    idms = env.idms(access_ttl=4, clock_offset=-120)
    gw = env.gateway(idms, idm={"refresh_before": "2s"})
    warn = gw.msg("idm_clock_skew", timeout=20)
    assert warn["level"] == "warn" and warn["clock"] == "skewed", warn
    assert abs(warn["skew_s"] - 120) <= 2, warn
    assert warn["threshold_s"] == 30
    assert warn["hint"].startswith(HINT), warn
    assert re.fullmatch(r"the gateway's clock is 1(19|20|21) s ahead of the IdMS's",
                        warn["detail"]), warn

    login(env, gw)
    wait_refreshes(gw, 3)  # many more IdMS responses: discovery, JWKS, code, refreshes
    st = gw.idm_status()
    assert_skew(st["clock_skew"], 120)
    assert st["clock_skew"]["large"] is True
    assert abs(metric_skew(gw) - 120) <= 2
    assert len(skew_records(gw)) == 1, skew_records(gw)  # once, not per request
    out = cli_status(gw)
    assert re.search(r"^\s+clock skew \+1(19|20|21)\.\d s against the IdMS \(\+-\d+\.\d s\): "
                     r"too large, check NTP/GNSS time on the gateway$", out, re.M), out

    # Still too large, but 60 s less: a material change, warned again once.
    idms.command("clock -60")
    changed = gw.msg("idm_clock_skew", timeout=20, clock="changed")
    assert changed["level"] == "warn" and abs(changed["skew_s"] - 60) <= 2, changed
    # Fixed: one info line, and everything shows it.
    idms.command("clock 0")
    normal = gw.msg("idm_clock_skew", timeout=20, clock="normal")
    assert normal["level"] == "info" and abs(normal["skew_s"]) <= 2, normal
    done = gw.idm_status()["refreshes"]["ok"]
    wait_refreshes(gw, done + 2)
    st = gw.idm_status()
    assert_skew(st["clock_skew"], 0)
    assert st["clock_skew"]["large"] is False
    assert abs(metric_skew(gw)) <= 2
    assert [r["clock"] for r in skew_records(gw)] == ["skewed", "changed", "normal"]
    assert "too large" not in cli_status(gw)
    assert st["state"] in ("authorized", "refreshing")


def test_gateway_behind_id_token_refused_names_the_skew(env):
    # The IdMS 120 s ahead: the gateway's clock is 120 s behind, beyond the
    # 30 s leeway, so a fresh ID token is "issued 120 s in the future".
    idms = env.idms(clock_offset=120)
    gw = env.gateway(idms)
    warn = gw.msg("idm_clock_skew", timeout=20)
    assert warn["level"] == "warn" and abs(warn["skew_s"] + 120) <= 2, warn
    assert re.fullmatch(r"the gateway's clock is 1(19|20|21) s behind the IdMS's",
                        warn["detail"]), warn
    gw.msg("idm_discovered", timeout=20)

    status, _, page = env.browser().login(gw.admin_url + "/login")
    assert status == 502, page
    cause = (r"ID token refused: issued 1(19|20|21) s in the future \(is the clock right\?\); "
             r"the gateway's clock is 1(19|20|21) s behind the IdMS's \(its Date header\): "
             + re.escape(HINT))
    assert re.search(cause, page), page
    failed = gw.msg("idm_login_failed", via="browser")
    assert re.search(cause, failed["error"]), failed
    st = gw.idm_status()
    assert st["state"] == "unauthorized" and st["subject"] is None
    assert re.search(cause, st["last_error"]), st
    assert_skew(st["clock_skew"], -120)
    assert st["clock_skew"]["large"] is True
    assert abs(metric_skew(gw) + 120) <= 2
    assert len(skew_records(gw)) == 1
    # The refused ID token, the code and the rest never reach the log.
    assert assert_no_secrets(gw, idms) > 0
    assert "id_token" in idms.kinds
