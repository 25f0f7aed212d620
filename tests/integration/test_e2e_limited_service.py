"""Limited service (TS 33.180 5.1.2.1): while the gateway itself is logged
out, a device still logs in to the IdMS through it, but targets allowed only
while the gateway holds a valid access token (allow_when_authorized) are
refused. After the gateway's own login they are allowed."""

import socket

import pytest

import e2etest
from e2etest import allow_idms, idms_clients, mcx_login, result_of, wait_tunnels_closed
from idmtest import env, pki  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def mc_server():
    """A stand-in MC application server: a listening socket on 127.0.0.4."""
    s = socket.socket()
    s.bind(("127.0.0.4", 0))
    s.listen(16)
    yield f"127.0.0.4:{s.getsockname()[1]}"
    s.close()


def test_device_logs_in_while_gateway_logged_out_then_service_opens(env, mc_server, tmp_path):
    e2etest.require_binaries()
    idms = env.idms(clients=idms_clients(), access_ttl=300)
    gw = env.gateway(idms, tunnel={"allow": allow_idms(idms),
                                   "allow_when_authorized": mc_server})
    assert gw.wait_state("unauthorized")["subject"] is None

    # Logged out: the MC server is refused (limited service) ...
    assert gw.connect(mc_server) == 403
    # ... but a device's own CSC-1 login through the gateway works.
    res = result_of(mcx_login(f"http://127.0.0.1:{gw.proxy_port}", idms, env.pki, tmp_path))
    assert res["mcptt_id"] == "sip:officer-7@mcptt.mc.test"
    closed = wait_tunnels_closed(gw, allow_idms(idms))
    assert {r["target"] for r in closed if r["result"] == "ok"} == set(allow_idms(idms))
    assert gw.connect(mc_server) == 403
    assert gw.idm_status()["state"] == "unauthorized"

    # The operator logs the gateway in; now the MC server is reachable.
    status, _, page = env.browser().login(gw.admin_url + "/login", user="vehicle-17")
    assert status == 200, page
    gw.wait_state("authorized")
    assert gw.connect(mc_server) == 200
    # The device's login is unaffected by the gateway's: it logs in again.
    res = result_of(mcx_login(f"http://127.0.0.1:{gw.proxy_port}", idms, env.pki, tmp_path,
                              "--h2", user="officer-9"))
    assert res["subject"] == "officer-9"
    env.extra_secrets.add("correct horse battery staple")
