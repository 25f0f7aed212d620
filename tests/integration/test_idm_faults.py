"""IdMS faults (issue 7): the IdMS flapping down and up repeatedly; kill -9
of mcgw during a refresh-token rotation; the state directory read-only or
full while the login must be refreshed."""

import json
import os
import signal
import socket
import stat
import subprocess
import threading

import pytest

from idmtest import (Gateway, env, idm_section, pki, read_state, require_idms,  # noqa: F401
                     wait_until)
from sechelp import namespaces_usable
from test_idm_refresh import echo_once, echo_server, login, open_tunnel

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def test_idms_flaps_tunnels_unaffected(env):
    echo = echo_server()
    target = f"127.0.0.1:{echo.getsockname()[1]}"
    idms = env.idms(access_ttl=4)
    gw = env.gateway(idms, idm={"refresh_before": "2s"}, tunnel={"allow": target})
    login(env, gw)
    tunnel = open_tunnel(gw, target)
    echo_once(tunnel, b"before the first outage")

    for cycle in range(3):
        since = len(gw.records)
        ok_before = gw.idm_status()["refreshes"]["ok"]
        idms.command("stop")
        fail = gw.msg("idm_refresh_failed", timeout=15, since=since)
        assert "connect" in fail["error"], fail
        # Backoff: attempt n waits within [d/2, d], d = 2^(n-1) s.
        d = 1000 * 2 ** (fail["attempt"] - 1)
        assert d // 2 <= fail["retry_in_ms"] <= d, fail
        assert gw.idm_status()["last_error"].startswith("refresh failed"), cycle
        # The open tunnel relays and new ones open while the IdMS is down.
        echo_once(tunnel, f"outage {cycle}".encode())
        extra = open_tunnel(gw, target)
        echo_once(extra, f"new tunnel in outage {cycle}".encode())
        extra.close()

        idms.command("start")
        st = wait_until(lambda: (s := gw.idm_status())["refreshes"]["ok"] > ok_before and s,
                        20, f"recovery after outage {cycle}", interval=0.1)
        assert st["state"] in ("authorized", "refreshing"), st
        assert st["last_error"] is None, st
        echo_once(tunnel, f"recovered {cycle}".encode())
        extra = open_tunnel(gw, target)
        echo_once(extra, f"new tunnel after outage {cycle}".encode())
        extra.close()

    st = gw.idm_status()
    assert st["refreshes"]["failed"] >= 3 and st["refreshes"]["invalid_grant"] == 0, st
    tunnel.close()
    echo.close()


# ---- kill -9 during a refresh-token rotation ----

def issued_refresh_tokens(idms):
    return {v for k, v in idms.secret_kinds if k == "refresh_token"}


def assert_state_file_sound(gw):
    """The login file parses (never torn) and is 0600 in a 0700 directory; a
    temp file left by the kill is 0600 too. Returns the parsed file."""
    path = gw.state_dir / "idm-login.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, oct(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(gw.state_dir).st_mode) == 0o700
    tmp = gw.state_dir / "idm-login.json.tmp"
    if tmp.exists():
        assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o600
    return json.loads(path.read_text())


def kill9(gw):
    gw.proc.wait(timeout=15)
    gw._reader.join(timeout=10)
    gw.proc.stdout.close()
    gw.proc = None


def test_kill9_during_refresh_rotation(env):
    """SIGKILL mid-refresh, five times, at two moments: when the IdMS has
    just issued the rotated refresh token (its response not yet sent), and
    when the gateway logs its token request (the IdMS may or may not get
    to it). What rotation makes correct afterwards:

    - the file holds the new token: the restarted gateway refreshes with it
      and is authorized;
    - the file holds the old token and the IdMS never rotated it: the old
      token is still the live one, so authorized too;
    - the file holds the old token and the IdMS did rotate it (the kill came
      after the IdMS consumed it, before the gateway stored the new one):
      presenting the spent token is refresh-token reuse, which oidc-provider
      (like any IdMS following OAuth 2.0 Security BCP 4.14.2) answers with
      invalid_grant and the revocation of the whole grant. The gateway must
      then say so - unauthorized, idm_login_needed - and a new login is the
      only way back. Rotation trades this rare re-login for the detection of
      a stolen token; it is correct, not a lost login.

    Never acceptable: a torn or unreadable file, a token the IdMS never
    issued, a crash at restart, or an unauthorized gateway that does not
    say a login is needed."""
    idms = env.idms(access_ttl=4)
    gw = env.gateway(idms, idm={"refresh_before": "2s"})
    login(env, gw)
    outcomes = []
    for i in range(5):
        old = assert_state_file_sound(gw)["refresh_token"]
        before = issued_refresh_tokens(idms)
        since = len(gw.records)
        pid = gw.proc.pid
        killed = threading.Event()
        at_idms = i % 2 == 0

        def hook(kind, _value, pid=pid, killed=killed, at_idms=at_idms):
            if at_idms and kind == "refresh_token" and not killed.is_set():
                os.kill(pid, signal.SIGKILL)
                killed.set()

        idms.on_secret = hook  # called as each secret is reported, before the response leaves
        try:
            if at_idms:
                wait_until(killed.is_set, 15, "the IdMS to issue a rotated refresh token",
                           interval=0.01)
            else:
                gw.wait_log(lambda r: r.get("msg") == "idm_http" and r.get("method") == "POST",
                            15, "the gateway's token request", since)
                os.kill(pid, signal.SIGKILL)
                killed.set()
        finally:
            idms.on_secret = None
        kill9(gw)

        stored = assert_state_file_sound(gw)
        token = stored.get("refresh_token")

        gw.start()
        gw.msg("idm_state_loaded", timeout=20)
        outcome = gw.wait_log(lambda r: r.get("msg") in ("idm_refreshed", "idm_login_needed"),
                              20, "the restarted gateway's first refresh")
        # Only now: a request the killed gateway had sent may still have been
        # answered (and its token rotated) by the IdMS after the kill.
        new = issued_refresh_tokens(idms) - before
        assert token == old or token in new, "the file holds a token the IdMS never issued"
        rotated = bool(new)
        if outcome["msg"] == "idm_refreshed":
            st = gw.wait_state("authorized")
            assert st["subject"] == "officer-7", st
            outcomes.append("authorized")
        else:
            # Only correct when the file kept the old token and the IdMS had
            # rotated it: reuse detection.
            assert token == old and rotated, (token == old, len(new))
            assert "invalid_grant" in outcome["reason"], outcome
            st = gw.wait_state("unauthorized")
            assert "new login is needed" in st["last_error"], st
            outcomes.append("login_needed")
            login(env, gw)  # the only way back
    print("outcomes:", outcomes)
    assert len(outcomes) == 5


# ---- the state directory read-only, or full ----

class NsGateway(Gateway):
    """idmtest.Gateway runs in its own mount namespace (mcgwtest's
    loopback_dns_prefix: unshare -m execs sh, which execs mcgw: the child's
    pid is mcgw's), so that the test can change mounts that only mcgw sees:
    nsenter -t PID -m."""

    def in_ns(self, script, *args):
        r = subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "sh", "-c", script, "sh",
                            *map(str, args)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{script}: {r.stderr}"
        return r.stdout


BREAK_STATE_DIR = {
    # A read-only bind mount of the directory over itself.
    "read-only": ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1"',
                  "Read-only file system"),
    # A one-page tmpfs over it, filled to the last byte.
    "full": ('mount -t tmpfs -o size=4k,mode=0700 tmpfs "$1" && '
             '{ dd if=/dev/zero of="$1/fill" bs=1024 2>/dev/null; true; }',
             "No space left on device"),
}


@pytest.mark.parametrize("fault", sorted(BREAK_STATE_DIR))
def test_state_dir_unwritable_login_keeps_working(env, tmp_path, fault):
    if not namespaces_usable():
        pytest.skip("needs root and unshare -m / nsenter (mounts private to the gateway)")
    up = socket.create_server(("127.0.0.1", 0))
    port = up.getsockname()[1]
    threading.Thread(target=lambda: [up.accept() for _ in range(8)], daemon=True).start()
    idms = env.idms(access_ttl=4)
    gw = NsGateway(tmp_path / "nsgw", idm_section(idms, env.pki, refresh_before="2s"),
                   tunnel={"allow": [f"127.0.0.2:{idms.authz_port}",
                                     f"127.0.0.3:{idms.token_port}"],
                           "allow_when_authorized": f"127.0.0.1:{port}"})
    env.gateways.append(gw)
    gw.start()
    login(env, gw)
    script, errno_text = BREAK_STATE_DIR[fault]
    stored = read_state(gw)["refresh_token"]
    gw.in_ns(script, gw.state_dir)
    if fault == "full":  # the fault is real: nothing fits any more
        out = gw.in_ns('df -k --output=avail "$1" | tail -1', gw.state_dir)
        assert int(out.split()[0]) == 0, out
    since = len(gw.records)
    failed = gw.msg("idm_state_save_failed", timeout=15, since=since)
    assert failed["level"] == "error", failed
    assert "idm-login.json" in failed["error"] and errno_text in failed["error"], failed
    # The rotated login lives on in memory: refreshes keep working.
    ok = gw.idm_status()["refreshes"]["ok"]
    wait_until(lambda: gw.idm_status()["refreshes"]["ok"] > ok, 15, "a refresh after the fault",
               interval=0.1)
    gw.wait_state("authorized")
    assert gw.connect(f"127.0.0.1:{port}") == 200
    assert gw.count("idm_login_needed") == 0 and gw.count("idm_access_token_expired") == 0
    # /status should say why the login would not survive a restart; polled
    # across the next refresh (each one fails to save again).
    ok = gw.idm_status()["refreshes"]["ok"]
    errors = set()

    def next_refresh():
        st = gw.idm_status()
        if st["last_error"]:
            errors.add(st["last_error"])
        return st["refreshes"]["ok"] > ok

    wait_until(next_refresh, 15, "another refresh", interval=0.05)
    # The test's own view of state_dir (outside mcgw's namespace) never
    # changed: nothing was written.
    assert read_state(gw)["refresh_token"] == stored
    # Repaired: the next refresh saves the live token again.
    gw.in_ns('umount "$1"', gw.state_dir)
    wait_until(lambda: read_state(gw)["refresh_token"] != stored, 15,
               "the login to be saved after the repair", interval=0.1)
    assert read_state(gw)["refresh_token"] in issued_refresh_tokens(idms)
    gw.wait_state("authorized")
    up.close()
    # /status said so while the state file could not be written.
    assert any("idm-login.json" in e and errno_text in e for e in errors), errors
