"""The gateway's own CSC-1 browser login against a real OpenID provider
(oidc-provider configured like an MCX IdMS), and limited service."""

import base64
import json
import os
import stat
import urllib.parse

import pytest

from idmtest import CLIENT_ID, SCOPE, env, pki, read_state, require_idms, wait_until  # noqa: F401

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_browser_login_full_flow(env):
    idms = env.idms()
    gw = env.gateway(idms)
    gw.msg("idm_discovered", timeout=20)
    st = gw.wait_state("unauthorized")
    assert st["subject"] is None and st["access_token_expires_in_s"] == 0

    browser = env.browser()
    status, url, page = browser.login(gw.admin_url + "/login")

    # The authorization request the gateway sent (Annex B.4.2.2).
    auth = urllib.parse.urlsplit(browser.visited[1])
    assert f"{auth.scheme}://{auth.netloc}" == idms.issuer  # 127.0.0.2
    q = dict(urllib.parse.parse_qsl(auth.query))
    assert q["response_type"] == "code" and q["client_id"] == CLIENT_ID
    assert q["scope"] == SCOPE and q["acr_values"] == "3gpp:acr:password"
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert len(q["state"]) >= 43 and len(q["nonce"]) >= 43
    assert q["redirect_uri"] == f"http://127.0.0.1:{gw.admin_port}/callback"

    # The operator's page names the MC service IDs now held.
    assert status == 200, page
    assert "officer-7" in page and "sip:officer-7@mcptt.mc.test" in page
    assert "sip:officer-7@mcdata.mc.test" in page

    st = gw.wait_state("authorized")
    assert st["subject"] == "officer-7"
    assert st["mc_service_ids"] == {"mcptt_id": "sip:officer-7@mcptt.mc.test",
                                    "mcdata_id": "sip:officer-7@mcdata.mc.test"}
    assert 0 < st["access_token_expires_in_s"] <= 5
    rec = gw.msg("idm_authorized", via="browser")
    # The token request went to the token endpoint on its own address.
    assert any(r.get("msg") == "idm_http" and r["url"].startswith("https://127.0.0.3:")
               and r["url"].endswith("/token") for r in gw.records)
    assert rec["mcptt_id"] == "sip:officer-7@mcptt.mc.test"

    # The IdMS behaves like an MCX IdMS: a JWT access token with the IDs.
    access = [s for s in idms.secrets if s.count(".") == 2 and
              jwt_claims(s).get("client_id") == CLIENT_ID and "mcptt_id" in jwt_claims(s)]
    assert access, "no JWT access token with client_id and mcptt_id issued"
    assert "3gpp:mc:ptt_service" in jwt_claims(access[0])["scope"]

    # The state dir and file: 0700 / 0600, no access token stored.
    assert stat.S_IMODE(os.stat(gw.state_dir).st_mode) == 0o700
    f = gw.state_dir / "idm-login.json"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    stored = read_state(gw)
    assert stored["subject"] == "officer-7" and stored["refresh_token"] in idms.secrets
    assert not any(a in f.read_text() for a in access)

    # /status shows expiry, never tokens.
    code, _, body = gw.admin("/status")
    assert not any(s in body.decode() for s in idms.secrets if len(s) > 8)


def test_wrong_state_is_dropped(env):
    idms = env.idms()
    gw = env.gateway(idms)
    gw.msg("idm_discovered", timeout=20)
    browser = env.browser()
    # Start a real login, then come back with a forged state.
    status, url, page = browser.request(gw.admin_url + "/login")
    assert "/interaction/" in url
    code, _, body = gw.admin("/callback?code=stolen-code&state=forged-state")
    assert code == 400 and b"Nothing was changed" in body
    code, _, body = gw.admin("/callback?code=stolen-code")
    assert code == 400
    gw.msg("idm_callback_refused")
    assert gw.idm_status()["state"] == "unauthorized"
    # The forged code was never sent to the token endpoint.
    assert not any(r.get("msg") == "idm_http" and r.get("method") == "POST" for r in gw.records)


def test_state_is_single_use_and_error_shown(env):
    idms = env.idms()
    gw = env.gateway(idms)
    gw.msg("idm_discovered", timeout=20)
    code, headers, _ = gw.admin("/login")
    assert code == 302
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(headers["location"]).query))["state"]
    env.extra_secrets.add(state)
    # An error response from the IdMS is shown to the operator...
    code, _, body = gw.admin(f"/callback?error=access_denied&error_description=User+said+no"
                             f"&state={state}&iss={urllib.parse.quote(idms.issuer)}")
    assert code == 403 and b"access_denied" in body and b"User said no" in body
    assert "access_denied" in gw.idm_status()["last_error"]
    # ... and the state is spent.
    code, _, body = gw.admin(f"/callback?code=x&state={state}")
    assert code == 400
    # A wrong iss (RFC 9207) is refused.
    code, headers, _ = gw.admin("/login")
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(headers["location"]).query))["state"]
    code, _, body = gw.admin(f"/callback?code=x&state={state}&iss=https%3A%2F%2Fevil.test")
    assert code == 400 and b"iss" in body
    assert gw.idm_status()["state"] == "unauthorized"


def test_allow_when_authorized_before_and_after_login(env, tmp_path):
    import socket
    import threading
    # A plain TCP upstream standing in for an MC server (require_tls = no).
    up = socket.create_server(("127.0.0.1", 0))
    port = up.getsockname()[1]
    threading.Thread(target=lambda: [up.accept() for _ in range(4)], daemon=True).start()
    idms = env.idms()
    gw = env.gateway(idms, tunnel={
        "allow": [f"127.0.0.2:{idms.authz_port}", f"127.0.0.3:{idms.token_port}"],
        "allow_when_authorized": f"127.0.0.1:{port}"})
    gw.msg("idm_discovered", timeout=20)
    # Limited service: the MC server is refused with a reason, the IdMS is not.
    assert gw.connect(f"127.0.0.1:{port}") == 403
    refusal = gw.msg("tunnel_closed", target=f"127.0.0.1:{port}")
    assert refusal["status"] == 403 and refusal["result"] == "denied"
    assert "limited service" in refusal["close"]  # the reason is in the access log
    assert gw.connect(f"127.0.0.2:{idms.authz_port}") == 200
    assert gw.connect(f"127.0.0.3:{idms.token_port}") == 200
    env.browser().login(gw.admin_url + "/login")
    gw.wait_state("authorized")
    assert gw.connect(f"127.0.0.1:{port}") == 200
    up.close()


def test_no_secrets_in_debug_logs(env):
    """Login and refreshes at log_level = debug: not one token, code,
    verifier, state or nonce in the log (the env teardown checks every other
    test's logs the same way)."""
    idms = env.idms(access_ttl=4)
    gw = env.gateway(idms, idm={"refresh_before": "2s"})
    gw.msg("idm_discovered", timeout=20)
    env.browser().login(gw.admin_url + "/login")
    wait_until(lambda: gw.idm_status()["refreshes"]["ok"] >= 2, 20, "two refreshes")
    kinds = {"access_token", "refresh_token", "id_token", "code", "code_verifier", "state", "nonce"}
    assert kinds <= idms.kinds, idms.kinds
    assert gw.records and all(r["level"] in ("debug", "info", "warn", "error") for r in gw.records)
    assert any(r["level"] == "debug" for r in gw.records)
    text = gw.text
    leaked = {kind for kind, value in idms.secret_kinds if value in text}
    assert not leaked, f"secrets in mcgw's log: {sorted(leaked)}"
    assert len(idms.secrets) >= 10


def test_admin_token_guards_login_but_not_callback(env, tmp_path):
    """On a non-loopback admin listener /login needs the admin token; the
    IdMS's redirect to /callback cannot carry it and is bound to a login the
    gateway started by state and PKCE instead: a bogus state gets 400."""
    import os
    token = tmp_path / "admin.token"
    token.write_text("a-long-admin-token-for-this-test\n")
    os.chmod(token, 0o600)
    idms = env.idms()
    gw = env.gateway(idms, admin={"listen": "0.0.0.0:0", "admin_token_file": str(token)})
    gw.msg("idm_discovered", timeout=20)
    assert gw.admin("/login")[0] == 401
    assert gw.admin("/callback?state=forged&code=stolen")[0] == 400
    assert gw.admin("/status")[0] == 401
    # mcgw login -c sends the token from admin_token_file: it gets the state.
    import subprocess
    from mcgwtest import BIN
    cli = subprocess.Popen([str(BIN), "login", "-c", str(gw.config_path),
                            "--admin", f"127.0.0.1:{gw.admin_port}"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [cli.stdout.readline() for _ in range(3)]
    finally:
        cli.kill()
        cli.wait(10)
    assert any("waiting for the login... (state unauthorized)" in ln for ln in lines), lines
