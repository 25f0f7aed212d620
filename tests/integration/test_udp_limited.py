"""CONNECT-UDP and the gateway's own login: allow_udp_when_authorized opens a
UDP destination only while the gateway is authorized (limited service
otherwise, 403), against the test IdMS (oidc-provider)."""

import pytest

from idmtest import env, pki, require_idms  # noqa: F401
from test_udp import connect_udp, datagram, h2c, udp_target

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def test_allow_udp_when_authorized_before_and_after_login(env):  # noqa: F811
    target = udp_target()
    port = target.getsockname()[1]
    idms = env.idms()
    gw = env.gateway(idms, tunnel={
        "allow": [f"127.0.0.2:{idms.authz_port}", f"127.0.0.3:{idms.token_port}"],
        "allow_udp_when_authorized": f"127.0.0.1:{port}"})
    gw.msg("idm_discovered", timeout=20)
    client = h2c(gw)
    s = connect_udp(client, "127.0.0.1", port)
    assert s.status == 403
    refusal = gw.msg("tunnel_closed", target=f"127.0.0.1:{port}")
    assert refusal["type"] == "udp" and "allow_udp_when_authorized" in refusal["close"]
    env.browser().login(gw.admin_url + "/login")
    gw.wait_state("authorized")
    s = connect_udp(client, "127.0.0.1", port)
    assert s.status == 200
    client.send(s, datagram(b"authorized"))
    assert target.recvfrom(100)[0] == b"authorized"
    client.close()
