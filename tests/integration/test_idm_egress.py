"""[idm] egress: the gateway's own CSC-1 connections leave by the named
[egress NAME]. Through an egress bound to an interface that is down, the
IdMS cannot be reached (network is down) while the tunnels' default way is
untouched; through one bound to lo (where the test IdMS listens), discovery
succeeds. An [idm] egress whose interface does not exist yet does not stop
the gateway: it starts with a warning and the IdMS is unreachable (network
is down) until the interface appears."""

import subprocess

import pytest

from idmtest import env, pki, require_idms  # noqa: F401
from netns import Uplink, require_netns

pytestmark = pytest.mark.timeout(90)


def gateway_with_egress(env, idms, interface):
    gw = env.gateway(idms, start=False)
    text = gw.config_path.read_text().replace("[idm]\n", "[idm]\negress = csc1\n", 1)
    gw.config_path.write_text(text + f"\n[egress csc1]\ninterface = {interface}\n")
    return gw.start()


def test_idm_traffic_uses_its_egress(env):
    require_idms()
    require_netns()
    idms = env.idms()
    up = Uplink()
    try:
        subprocess.run(["ip", "link", "set", up.host_if, "down"], check=True)
        down = gateway_with_egress(env, idms, up.host_if)
        rec = down.msg("idm_discovery_failed", timeout=20)
        assert "network is down" in rec["error"], rec
        assert down.count("idm_discovered") == 0
        lo = gateway_with_egress(env, idms, "lo")
        lo.msg("idm_discovered", timeout=20)
    finally:
        up.close()


def test_idm_egress_missing_interface_starts(env):
    """The interface of the [idm] egress does not exist (an LTE modem not up
    yet): the gateway starts with a config warning naming FILE:LINE, and
    discovery fails fast (network is down), retried with backoff, instead of
    the daemon refusing to start."""
    require_idms()
    require_netns()
    idms = env.idms()
    up = Uplink(plugged=False)  # its host_if is a name no interface has
    try:
        gw = gateway_with_egress(env, idms, up.host_if)
        rec = gw.msg("config_warning")
        line = gw.config_path.read_text().splitlines().index(f"interface = {up.host_if}") + 1
        assert rec["warning"].startswith(
            f"{gw.config_path}:{line}: warning: interface: no network interface "
            f"'{up.host_if}'"), rec
        failed = gw.msg("idm_discovery_failed", timeout=20)
        assert "network is down" in failed["error"], failed
        assert gw.proc.poll() is None
    finally:
        up.close()
