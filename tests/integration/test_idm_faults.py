"""IdMS faults (issue 7): the IdMS flapping down and up repeatedly.

Still to come here (not written yet): kill -9 of mcgw during a refresh-token
rotation, and the state directory read-only or full."""

import pytest

from idmtest import env, pki, require_idms, wait_until  # noqa: F401
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
