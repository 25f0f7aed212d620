"""The gateway's own wall clock jumping while it is authorized.

Token expiry is computed from the wall clock (time()), refreshes run on
monotonic timers. The wall clock is moved with an LD_PRELOAD shim
(clockshift.c, compiled here) rather than a time namespace: `unshare
--time` offsets only CLOCK_MONOTONIC and CLOCK_BOOTTIME, never
CLOCK_REALTIME, so it cannot make this jump (time_namespaces(7))."""

import os
import struct
import subprocess

import pytest

from idmtest import env, pki, read_state, require_idms  # noqa: F401
from test_idm_back_to_limited import gateway_with_mc_server
from test_idm_refresh import echo_once, login, open_tunnel

pytestmark = pytest.mark.timeout(180)
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


@pytest.fixture
def clock(tmp_path):
    """clock.jump(seconds): moves the wall clock of processes started with
    clock.env by that many seconds (from now on, cumulatively 0)."""
    so = tmp_path / "clockshift.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(so),
                    os.path.join(HERE, "clockshift.c"), "-ldl"], check=True, timeout=60)
    offset = tmp_path / "clock-offset"
    offset.write_bytes(struct.pack("<q", 0))

    class Clock:
        env = {**os.environ, "LD_PRELOAD": str(so), "MCGW_CLOCK_OFFSET_FILE": str(offset),
               # ASan wants its runtime first; the shim only wraps libc's clocks.
               "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}

        def jump(self, seconds):
            with open(offset, "r+b") as f:
                f.write(struct.pack("<q", seconds))
    return Clock()


def test_forward_jump_keeps_service_until_the_refresh_then_names_the_clock(env, clock):
    """+10 min while authorized: the access token's lifetime runs on the
    monotonic clock, so allow_when_authorized tunnels stay admitted and the
    open one relays; at the next (monotonic) refresh the IdMS's fresh ID
    token looks expired to the gateway, the login is refused and the reason
    names the gateway's clock (the skew measured from the Date header)."""
    idms = env.idms(access_ttl=10)
    gw, mc, mc_target = gateway_with_mc_server(env, idms, clock.env, refresh_before="3s")
    login(env, gw)
    kept = open_tunnel(gw, mc_target)
    clock.jump(600)
    assert gw.connect(mc_target) == 200  # right after the jump: still authorized
    assert gw.idm_status()["authorized"] is True
    rec = gw.msg("idm_login_needed", timeout=20)
    assert "expired" in rec["reason"] and "check NTP/GNSS time on the gateway" in rec["reason"], rec
    assert "600 s ahead" in rec["reason"], rec
    st = gw.wait_state("unauthorized")
    assert st["authorized"] is False
    # Counted as what it was: the IdMS accepted the refresh token (no
    # invalid_grant), the gateway refused the ID token it returned.
    assert st["refreshes"]["id_token_invalid"] == 1, st
    assert st["refreshes"]["invalid_grant"] == 0, st
    assert gw.metric('mcgw_idm_refresh_total{result="id_token_invalid"}') == 1
    assert gw.metric('mcgw_idm_refresh_total{result="invalid_grant"}') == 0
    assert "refresh_token" not in read_state(gw)  # a restart would not try it again
    assert gw.connect(mc_target) == 403
    echo_once(kept, b"open tunnels are not cut")
    kept.close()
    mc.close()


def test_forward_jump_status_stays_consistent(env, clock):
    idms = env.idms(access_ttl=30)
    gw, mc, mc_target = gateway_with_mc_server(env, idms, clock.env, refresh_before="10s")
    login(env, gw)
    clock.jump(600)
    st = gw.idm_status()
    assert st["authorized"] is True and st["state"] == "authorized"
    assert st["access_token_expires_in_s"] > 0, st
    mc.close()


def test_backward_jump_during_outage_still_expires_on_time(env, clock):
    """-1 h while the IdMS is down: by the wall clock the access token would
    look valid for another hour, but it is never used after its real
    expiry: limited service arrives on the monotonic expiry timer."""
    idms = env.idms(access_ttl=6)
    gw, mc, mc_target = gateway_with_mc_server(env, idms, clock.env)
    login(env, gw)
    idms.command("stop")
    clock.jump(-3600)
    gw.msg("idm_access_token_expired", timeout=20)
    st = gw.idm_status()
    assert st["authorized"] is False and st["access_token_expires_in_s"] == 0, st
    assert gw.connect(mc_target) == 403
    mc.close()
