"""Logging the gateway out (issue 16): the refresh token revoked at the IdMS
(RFC 7009), the stored login removed, the state unauthorized, the
allow_when_authorized gate closed for new tunnels while open tunnels stay;
the same when the IdMS is down (a local logout, the error reported); the
JSON-only POST /logout (415, 405); a crew change from user A to user B.
Against the bundled oidc-provider with revocation enabled."""

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from idmtest import CLIENT_ID, env, pki, read_state, require_idms  # noqa: F401
from mcgwtest import run_cli
from test_idm_refresh import echo_once, echo_server, open_tunnel

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def login(env, gw, user="officer-7"):
    gw.msg("idm_discovered", timeout=20)
    status, _, page = env.browser().login(gw.admin_url + "/login", user=user)
    assert status == 200, page
    return gw.wait_state("authorized")


def refresh_error(idms, pki, refresh_token):
    """The IdMS's answer to a refresh with refresh_token: its OAuth error
    code, or None when it issued tokens."""
    body = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": refresh_token,
                                   "client_id": CLIENT_ID}).encode()
    req = urllib.request.Request(f"https://127.0.0.3:{idms.token_port}/token", data=body)
    try:
        with urllib.request.urlopen(req, context=pki.context(), timeout=10):
            return None
    except urllib.error.HTTPError as e:
        return json.loads(e.read())["error"]


def post_logout(gw, content_type="application/json", body=b"{}"):
    """POST /logout; (status, body)."""
    headers = {"Content-Type": content_type} if content_type else {}
    conn = http.client.HTTPConnection("127.0.0.1", gw.admin_port, timeout=15)
    try:
        conn.request("POST", "/logout", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def logout_metric(gw, result):
    _, _, body = gw.admin("/metrics")
    lines = [ln for ln in body.decode().splitlines()
             if ln.startswith(f'mcgw_idm_logout_total{{result="{result}"}} ')]
    assert len(lines) == 1, body
    return int(lines[0].split()[1])


def gated_gateway(env, idms, echo):
    """A gateway whose only way to the echo server is allow_when_authorized."""
    target = f"127.0.0.1:{echo.getsockname()[1]}"
    gw = env.gateway(idms, tunnel={"allow_when_authorized": target})
    return gw, target


def assert_logged_out(gw, idms, pki, refresh_token):
    assert not (gw.state_dir / "idm-login.json").exists()
    st = gw.wait_state("unauthorized")
    assert st["subject"] is None and st["mc_service_ids"] == {}
    assert st["access_token_expires_in_s"] == 0
    gw.msg("idm_limited_service", active="yes", reason="logged out")
    # Revoked: the IdMS itself now refuses the old refresh token.
    assert refresh_error(idms, pki, refresh_token) == "invalid_grant"


def test_cli_logout_revokes_and_closes_the_gate_not_open_tunnels(env, pki):
    echo = echo_server()
    idms = env.idms(access_ttl=60)
    gw, target = gated_gateway(env, idms, echo)
    login(env, gw)
    tunnel = open_tunnel(gw, target)
    echo_once(tunnel, b"before the logout")
    refresh_token = read_state(gw)["refresh_token"]  # the test runs as root: it may read 0600

    code, out = run_cli("logout", "--admin", gw.admin_url)
    assert code == 0, out
    assert "revoked at the IdMS" in out
    assert f"{idms.issuer}/session/end" in out  # the end_session_endpoint, shown as a link
    assert_logged_out(gw, idms, pki, refresh_token)
    assert gw.msg("idm_logout")["revoked"] == "yes"
    # New tunnels to the gated target: refused; the open one relays on.
    assert gw.connect(target) == 403
    echo_once(tunnel, b"after the logout")
    tunnel.close()
    echo.close()
    # A second logout: nothing held, nothing to revoke, still exit 0.
    code, out = run_cli("logout", "--admin", gw.admin_url)
    assert code == 0 and "no refresh token to revoke" in out, out
    assert logout_metric(gw, "revoked") == 1 and logout_metric(gw, "nothing_held") == 1
    assert logout_metric(gw, "not_revoked") == 0


def test_admin_api_logout_json_only(env, pki):
    idms = env.idms(access_ttl=60)
    gw = env.gateway(idms)
    login(env, gw)
    refresh_token = read_state(gw)["refresh_token"]
    # Not JSON, or a GET: refused and nothing changes.
    for ctype in (None, "application/x-www-form-urlencoded", "text/plain", "multipart/form-data",
                  "application/jsonx"):
        status, body = post_logout(gw, ctype)
        assert status == 415, (ctype, status, body)
    status, _, _ = gw.admin("/logout")
    assert status == 405
    assert gw.idm_status()["state"] in ("authorized", "refreshing")
    assert read_state(gw)["refresh_token"] == refresh_token
    # JSON: logged out and revoked.
    status, body = post_logout(gw, "application/json; charset=utf-8")
    assert status == 200, body
    doc = json.loads(body)
    assert doc == {"state": "unauthorized", "revoked": True, "error": None,
                   "end_session_endpoint": f"{idms.issuer}/session/end"}
    assert_logged_out(gw, idms, pki, refresh_token)
    assert gw.idm_status()["end_session_endpoint"] == f"{idms.issuer}/session/end"


def test_login_routes_refuse_other_sites(env):
    """GET /login asked for by a page of another site (the browser says so in
    Sec-Fetch-Site) and a non-JSON POST /login/device start nothing."""
    idms = env.idms()
    gw = env.gateway(idms)
    gw.msg("idm_discovered", timeout=20)
    for site in ("cross-site", "same-site"):
        status, _, body = gw.admin_request("/login", headers={"Sec-Fetch-Site": site})
        assert status == 403 and b"another site" in body, (site, status, body)
    assert gw.count("idm_login_started") == 0
    for site in ("same-origin", "none"):  # the status page's link, a typed URL
        status, headers, _ = gw.admin_request("/login", headers={"Sec-Fetch-Site": site})
        assert status == 302 and dict(headers)["Location"].startswith(idms.issuer), site
    conn = http.client.HTTPConnection("127.0.0.1", gw.admin_port, timeout=15)
    conn.request("POST", "/login/device", body=b"x=1",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert conn.getresponse().status == 415
    conn.close()
    assert json.loads(gw.admin("/login/device")[2])["status"] == "none"


def test_logout_with_admin_token(env, tmp_path):
    token_file = tmp_path / "admin.token"
    token_file.write_text("s3cret-admin-token-for-logout\n")
    token_file.chmod(0o600)
    idms = env.idms(access_ttl=60)
    gw = env.gateway(idms, admin={"admin_token_file": str(token_file)})
    gw.msg("idm_discovered", timeout=20)
    status, _ = post_logout(gw)
    assert status == 401
    code, out = run_cli("logout", "--admin", gw.admin_url)
    assert code == 1 and "401" in out, out
    code, out = run_cli("logout", "--admin", gw.admin_url, "--token-file", token_file)
    assert code == 0, out
    # -c FILE: the admin listener and its token from the configuration (a
    # copy naming the port the gateway's listen = 127.0.0.1:0 got).
    cli_conf = tmp_path / "cli.ini"
    cli_conf.write_text(gw.config_path.read_text().replace(
        "listen = 127.0.0.1:0\nadmin_token_file", f"listen = 127.0.0.1:{gw.admin_port}\n"
        "admin_token_file"))
    assert f"127.0.0.1:{gw.admin_port}" in cli_conf.read_text()
    code, out = run_cli("logout", "-c", cli_conf)
    assert code == 0 and "no refresh token to revoke" in out, out


def test_logout_while_the_idms_is_down(env, pki):
    idms = env.idms(access_ttl=60)
    gw = env.gateway(idms)
    login(env, gw)
    refresh_token = read_state(gw)["refresh_token"]
    idms.command("stop")
    code, out = run_cli("logout", "--admin", gw.admin_url)
    assert code == 1, out
    assert "NOT revoked" in out and "connect" in out
    # Logged out here all the same: nothing left on disk, nothing kept to retry.
    assert not (gw.state_dir / "idm-login.json").exists()
    st = gw.wait_state("unauthorized")
    assert "not revoked" in st["last_error"]
    rec = gw.msg("idm_logout", revoked="no")
    assert "connect" in rec["error"]
    assert logout_metric(gw, "not_revoked") == 1 and logout_metric(gw, "revoked") == 0
    idms.command("start")
    # The report is true: the IdMS never heard of the logout.
    assert refresh_error(idms, pki, refresh_token) is None


def test_crew_change(env, pki):
    """User A logged in, logout, user B logged in: /status shows B's MC
    service IDs, and A's refresh token is dead at the IdMS."""
    idms = env.idms(access_ttl=60)
    gw = env.gateway(idms)
    st = login(env, gw, user="crew-a")
    assert st["mc_service_ids"]["mcptt_id"] == "sip:crew-a@mcptt.mc.test"
    token_a = read_state(gw)["refresh_token"]
    code, out = run_cli("logout", "--admin", gw.admin_url)
    assert code == 0, out
    gw.wait_state("unauthorized")
    st = login(env, gw, user="crew-b")
    assert st["subject"] == "crew-b"
    assert st["mc_service_ids"] == {"mcptt_id": "sip:crew-b@mcptt.mc.test",
                                    "mcdata_id": "sip:crew-b@mcdata.mc.test"}
    assert read_state(gw)["subject"] == "crew-b"
    assert refresh_error(idms, pki, token_a) == "invalid_grant"
    code, out = run_cli("status", "--admin", gw.admin_url)
    assert code == 0 and "crew-b" in out and "crew-a" not in out, out
