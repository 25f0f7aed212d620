"""Going back to limited service (README "Limited service"; compliance 1.5):
once the gateway's login is lost - invalid_grant on refresh, or the access
token running out during an IdMS outage - new tunnels to
`allow_when_authorized` targets are refused with 403 ("limited service" in
the access log's close field), `allow` targets (the IdMS) stay open, and
tunnels opened while authorized are not cut: the bit decides admission of
new tunnels only (tn_engine_set_authorized), like a reload. After the
IdMS comes back, service opens again without a restart."""

import pytest

from idmtest import env, pki, require_idms  # noqa: F401
from test_idm_refresh import echo_once, echo_server, login, open_tunnel, refresh_directly
from idmtest import read_state

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def gateway_with_mc_server(env, idms, process_env=None, **idm):
    """A gateway that allows the IdMS, and an echo server standing in for an
    MC server (require_tls = no) only while authorized. process_env: the
    daemon's environment (None: this one's). Returns (gw, mc, mc_target)."""
    mc = echo_server()
    mc_target = f"127.0.0.1:{mc.getsockname()[1]}"
    gw = env.gateway(idms, idm={"refresh_before": "2s", **idm}, start=False, tunnel={
        "allow": [f"127.0.0.2:{idms.authz_port}", f"127.0.0.3:{idms.token_port}"],
        "allow_when_authorized": mc_target})
    gw.env = process_env
    gw.start()
    return gw, mc, mc_target


def assert_limited(gw, idms, mc_target, since):
    assert gw.connect(mc_target) == 403
    refusal = gw.msg("tunnel_closed", target=mc_target, status=403, since=since)
    assert refusal["result"] == "denied" and "limited service" in refusal["close"], refusal
    assert gw.connect(f"127.0.0.3:{idms.token_port}") == 200  # the IdMS stays reachable


def test_invalid_grant_back_to_limited_service_open_tunnel_kept(env, pki):
    idms = env.idms(access_ttl=4)
    gw, mc, mc_target = gateway_with_mc_server(env, idms)
    login(env, gw)
    kept = open_tunnel(gw, mc_target)
    echo_once(kept, b"while authorized")
    # Someone else spends the refresh token: the gateway's next refresh
    # gets invalid_grant, and the login is gone.
    refresh_directly(idms, pki, read_state(gw)["refresh_token"])
    rec = gw.msg("idm_login_needed", timeout=15)
    assert "invalid_grant" in rec["reason"]
    st = gw.wait_state("unauthorized")
    assert st["refreshes"]["invalid_grant"] == 1 and st["refreshes"]["id_token_invalid"] == 0, st
    since = len(gw.log_records())
    gw.msg("idm_limited_service", active="yes")
    assert_limited(gw, idms, mc_target, since)
    echo_once(kept, b"the open tunnel still relays")
    kept.close()
    mc.close()


def test_expiry_during_idms_outage_back_to_limited_then_service_again(env):
    idms = env.idms(access_ttl=4)
    gw, mc, mc_target = gateway_with_mc_server(env, idms)
    login(env, gw)
    assert gw.connect(mc_target) == 200
    kept = open_tunnel(gw, mc_target)
    idms.command("stop")
    gw.msg("idm_access_token_expired", timeout=20)
    gw.wait_state("error")
    since = len(gw.log_records())
    assert gw.connect(mc_target) == 403
    refusal = gw.msg("tunnel_closed", target=mc_target, status=403, since=since)
    assert "limited service" in refusal["close"], refusal
    echo_once(kept, b"the open tunnel still relays during the outage")
    idms.command("start")
    gw.wait_state("authorized", timeout=40)
    assert gw.connect(mc_target) == 200
    echo_once(kept, b"and after")
    kept.close()
    mc.close()
