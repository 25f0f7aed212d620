"""'Authorized' means authorized for MC service (issue 16): after a login or
a refresh the gateway is authorized only with every [idm] required_scope
granted (default: the 3gpp:mc:* scopes of scope) and an MC service ID in the
ID token (TS 33.180 Table 5.1.2.1-1). Otherwise: state error, the precise
last_error, the allow_when_authorized gate closed. Also: a refreshed ID
token that fails validation removes the stored refresh token, so a restart
does not try it again."""

import socket
import threading

import pytest

from idmtest import env, pki, read_state, require_idms, wait_until  # noqa: F401
from test_idm_logout import refresh_error

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def upstream():
    """A TCP server standing in for an MC server; its host:port."""
    up = socket.create_server(("127.0.0.1", 0))

    def accept():
        try:
            while True:
                up.accept()
        except OSError:  # closed at the end of the test
            pass

    threading.Thread(target=accept, daemon=True).start()
    return up, f"127.0.0.1:{up.getsockname()[1]}"


def browser_login(env, gw):
    gw.msg("idm_discovered", timeout=20)
    return env.browser().login(gw.admin_url + "/login")


def test_required_scope_not_granted(env, pki):
    up, target = upstream()
    idms = env.idms(grant_scopes=["3gpp:mc:data_service"])  # no ptt_service
    gw = env.gateway(idms, tunnel={"allow_when_authorized": target})
    status, _, page = browser_login(env, gw)
    assert status == 403, page
    assert "the IdMS granted no 3gpp:mc:ptt_service" in page
    st = gw.wait_state("error")
    assert st["last_error"] == "the IdMS granted no 3gpp:mc:ptt_service"
    assert st["required_scope"] == "3gpp:mc:ptt_service 3gpp:mc:data_service"
    assert st["subject"] is None and st["access_token_expires_in_s"] == 0
    assert gw.connect(target) == 403
    assert not (gw.state_dir / "idm-login.json").exists()  # nothing adopted, nothing stored
    # The refresh token the IdMS issued for the refused login is revoked.
    assert gw.msg("idm_refused_login_revoked")["revoked"] == "yes"
    issued = [v for k, v in idms.secret_kinds if k == "refresh_token"]
    assert len(issued) == 1
    assert refresh_error(idms, pki, issued[0]) == "invalid_grant"
    up.close()


def test_required_scope_configured(env):
    """required_scope narrower than the default: what the IdMS grants is enough."""
    up, target = upstream()
    idms = env.idms(grant_scopes=["3gpp:mc:data_service"])
    gw = env.gateway(idms, tunnel={"allow_when_authorized": target},
                     idm={"required_scope": "3gpp:mc:data_service"})
    status, _, page = browser_login(env, gw)
    assert status == 200, page
    st = gw.wait_state("authorized")
    assert "3gpp:mc:data_service" in st["granted_scope"].split()
    assert "3gpp:mc:ptt_service" not in st["granted_scope"].split()
    assert gw.connect(target) == 200
    up.close()


def test_id_token_without_mc_service_id(env):
    up, target = upstream()
    idms = env.idms(mc_ids=False)
    gw = env.gateway(idms, tunnel={"allow_when_authorized": target})
    status, _, page = browser_login(env, gw)
    assert status == 403 and "the ID token holds no MC service ID" in page, page
    st = gw.wait_state("error")
    assert st["last_error"] == "the ID token holds no MC service ID"
    assert st["mc_service_ids"] == {}
    assert gw.connect(target) == 403
    up.close()


def test_refresh_that_loses_the_scope_ends_the_login(env):
    up, target = upstream()
    idms = env.idms(access_ttl=4)
    gw = env.gateway(idms, tunnel={"allow_when_authorized": target}, idm={"refresh_before": "2s"})
    status, _, page = browser_login(env, gw)
    assert status == 200, page
    gw.wait_state("authorized")
    assert gw.connect(target) == 200
    idms.command("grant 3gpp:mc:data_service")  # the next refresh is granted less
    st = gw.wait_state("error", timeout=20)
    assert st["last_error"] == "the IdMS granted no 3gpp:mc:ptt_service"
    assert st["access_token_expires_in_s"] == 0
    assert st["refreshes"]["not_for_mc_service"] == 1, st
    assert st["refreshes"]["invalid_grant"] == 0 and st["refreshes"]["id_token_invalid"] == 0, st
    assert gw.metric('mcgw_idm_refresh_total{result="not_for_mc_service"}') == 1
    assert gw.connect(target) == 403
    assert "refresh_token" not in read_state(gw)
    assert gw.msg("idm_refused_login_revoked")["revoked"] == "yes"
    up.close()


def test_refreshed_id_token_refused_then_restart(env):
    """The refreshed ID token fails validation (the IdMS's clock 10 min
    behind: it is expired on arrival): the login ends and the stored refresh
    token goes with it; a restart does not try it again."""
    idms = env.idms(access_ttl=4)
    gw = env.gateway(idms, idm={"refresh_before": "2s"})
    status, _, page = browser_login(env, gw)
    assert status == 200, page
    gw.wait_state("authorized")
    idms.command("clock -600")
    rec = gw.msg("idm_login_needed", timeout=20)
    assert "ID token refused" in rec["reason"]
    st = gw.wait_state("unauthorized")
    assert "ID token refused" in st["last_error"]
    assert st["refreshes"]["id_token_invalid"] == 1 and st["refreshes"]["invalid_grant"] == 0, st
    stored = read_state(gw)
    assert "refresh_token" not in stored, "the refresh token stayed on disk"
    idms.command("clock 0")
    gw.stop()
    gw.start()
    gw.msg("idm_discovered", timeout=20)
    rec = gw.msg("idm_starting")
    assert rec["stored_login"] == "no"
    st = gw.wait_state("unauthorized")
    wait_until(lambda: gw.count("idm_jwks_loaded") >= 1, 10, "the JWKS after the restart")
    assert not any(r.get("msg") == "idm_http" and r.get("method") == "POST" for r in gw.records)
    assert gw.count("idm_refreshed") == 0 and gw.count("idm_refresh_failed") == 0


def test_device_login_without_mc_service_id(env):
    """The device flow (mcgw login) is held to the same rule: exit 1 naming
    what is missing, state error."""
    from test_idm_device import Cli
    idms = env.idms(mc_ids=False)
    gw = env.gateway(idms, idm={"login": "device"})
    gw.msg("idm_discovered", timeout=20)
    cli = Cli(gw)
    uri = cli.line_after("To log this gateway in to the IdMS, open")
    code = cli.line_after("and enter the code")
    status, _, page = env.browser().device_login(uri, code)
    assert status == 200, page
    rc, out = cli.wait()
    assert rc == 1 and "the ID token holds no MC service ID" in out, out
    st = gw.wait_state("error")
    assert st["last_error"] == "the ID token holds no MC service ID"
