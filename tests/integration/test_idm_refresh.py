"""Keeping the gateway's login alive: refresh cycles with rotation, restart
from the stored refresh token, reuse detection, key rotation at the IdMS, and
an IdMS outage (backoff, then recovery) that never touches the tunnels."""

import json
import socket
import threading
import urllib.parse
import urllib.request

import pytest

from idmtest import CLIENT_ID, env, pki, read_state, require_idms, wait_until  # noqa: F401

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def login(env, gw):
    gw.msg("idm_discovered", timeout=20)
    status, _, page = env.browser().login(gw.admin_url + "/login")
    assert status == 200, page
    return gw.wait_state("authorized")


def test_three_refresh_cycles_with_rotation(env):
    idms = env.idms(access_ttl=4)
    gw = env.gateway(idms, idm={"refresh_before": "2s"})
    login(env, gw)
    seen = {read_state(gw)["refresh_token"]}

    def refreshed(n):
        st = gw.idm_status()
        return st["refreshes"]["ok"] >= n and st

    for n in (1, 2, 3):
        st = wait_until(lambda: refreshed(n), 15, f"refresh {n}", interval=0.1)
        assert st["state"] in ("authorized", "refreshing") and st["subject"] == "officer-7"
        seen.add(read_state(gw)["refresh_token"])
    assert len(seen) >= 4, "the refresh token was not rotated at every refresh"
    assert gw.count("idm_refreshed") >= 3
    assert gw.count("idm_access_token_expired") == 0  # never in limited service
    assert gw.idm_status()["refreshes"]["failed"] == 0
    # Exactly one refresh in flight: each token POST is answered before the next.
    posts = 0
    for r in gw.records:
        if r.get("msg") == "idm_http" and r.get("method") == "POST":
            posts += 1
            assert posts <= 1, "two token requests in flight"
        elif r.get("msg") in ("idm_refreshed", "idm_authorized", "idm_refresh_failed"):
            posts = 0


def test_restart_without_a_new_login(env):
    idms = env.idms(access_ttl=30)
    first = env.gateway(idms)
    login(env, first)
    before = read_state(first)["refresh_token"]
    first.stop()
    second = env.gateway(idms, state_dir=first.state_dir)
    second.msg("idm_state_loaded")
    st = second.wait_state("authorized")
    assert st["subject"] == "officer-7"
    assert st["mc_service_ids"]["mcptt_id"] == "sip:officer-7@mcptt.mc.test"
    second.msg("idm_refreshed", via="refresh")
    assert not any(r.get("msg") == "idm_login_started" for r in second.records)
    assert read_state(second)["refresh_token"] != before  # rotated and stored


def refresh_directly(idms, pki, refresh_token):
    """What a thief holding a copy of the refresh token would do."""
    body = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": refresh_token,
                                   "client_id": CLIENT_ID}).encode()
    req = urllib.request.Request(f"https://127.0.0.3:{idms.token_port}/token", data=body)
    with urllib.request.urlopen(req, context=pki.context(), timeout=10) as resp:
        return json.loads(resp.read())


def test_reused_rotated_refresh_token_means_unauthorized(env, pki):
    idms = env.idms(access_ttl=4)
    gw = env.gateway(idms, idm={"refresh_before": "2s"})
    login(env, gw)
    stolen = read_state(gw)["refresh_token"]
    out = refresh_directly(idms, pki, stolen)  # rotates: the gateway's copy is spent
    assert out["refresh_token"] != stolen
    rec = gw.msg("idm_login_needed", timeout=15)
    assert "invalid_grant" in rec["reason"]
    st = gw.wait_state("unauthorized")
    assert st["refreshes"]["invalid_grant"] == 1
    assert "new login is needed" in st["last_error"]
    assert st["access_token_expires_in_s"] == 0
    gw.msg("idm_limited_service", active="yes")
    assert "refresh_token" not in read_state(gw)


def test_key_rotation_at_the_idms(env):
    # A 14 s access token: its refresh comes after the JWKS refetch throttle.
    idms = env.idms(access_ttl=14)
    gw = env.gateway(idms, idm={"refresh_before": "2s"})
    login(env, gw)
    old_kid_logs = gw.count("idm_jwks_loaded")
    ack = idms.command("rotate")
    gw.msg("idm_jwks_refetch", timeout=20)
    wait_until(lambda: gw.count("idm_jwks_loaded") > old_kid_logs, 20, "JWKS refetched")
    gw.msg("idm_refreshed", timeout=20)
    st = gw.wait_state("authorized")
    assert st["refreshes"]["ok"] >= 1 and st["subject"] == "officer-7"
    assert ack["kid"].startswith("es256-")


def echo_server():
    srv = socket.create_server(("127.0.0.1", 0))

    def serve(conn):
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)

    def loop():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv


def open_tunnel(gw, target):
    s = socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def echo_once(s, payload):
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        data = s.recv(65536)
        assert data, "tunnel closed"
        got += data
    assert got == payload


def test_idms_outage_backoff_then_recovery(env):
    echo = echo_server()
    target = f"127.0.0.1:{echo.getsockname()[1]}"
    idms = env.idms(access_ttl=4)
    gw = env.gateway(idms, idm={"refresh_before": "2s"}, tunnel={"allow": target})
    login(env, gw)
    tunnel = open_tunnel(gw, target)
    echo_once(tunnel, b"before the outage")

    idms.command("stop")
    fails = []
    for n in (1, 2, 3):
        fails.append(gw.msg("idm_refresh_failed", timeout=20, attempt=n))
    assert all("connect" in f["error"] for f in fails)
    # Exponential backoff with jitter: attempt n waits within [d/2, d], d = 2^(n-1) s.
    for f in fails:
        d = 1000 * 2 ** (f["attempt"] - 1)
        assert d // 2 <= f["retry_in_ms"] <= d, f
    assert fails[2]["retry_in_ms"] > fails[0]["retry_in_ms"]
    # The access token runs out: limited service, never used after expiry.
    gw.msg("idm_access_token_expired", timeout=15)
    st = gw.wait_state("error")
    assert st["access_token_expires_in_s"] == 0 and "refresh failed" in st["last_error"]
    # Tunnels are unaffected: the open one relays, a new one opens.
    echo_once(tunnel, b"during the outage")
    extra = open_tunnel(gw, target)
    echo_once(extra, b"new tunnel during the outage")
    extra.close()

    idms.command("start")
    st = gw.wait_state("authorized", timeout=40)
    assert st["refreshes"]["failed"] >= 3 and st["refreshes"]["ok"] >= 1
    assert st["last_error"] is None
    echo_once(tunnel, b"after the recovery")
    tunnel.close()
    echo.close()
