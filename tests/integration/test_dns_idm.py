"""The gateway's own CSC-1 traffic through a DNS outage: its IdMS is known
by name (dnsmasq, 1 s TTL); the DNS server then goes silent, and the token
refreshes still reach the IdMS with the stale answers (RFC 8767), counted in
/status dns. The same resolver as the tunnels' (tunnel/resolver.c)."""

import socket

import pytest

import mcgwtest
from dnstest import Dnsmasq, SilentResolver
from idmtest import _leaf, env, pki, require_idms, wait_until  # noqa: F401

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not mcgwtest.DNS_ISOLATED,
                                 reason="needs root and unshare for a private resolv.conf")]

NAMES = {"idms-authz.test": "127.0.0.2", "idms-token.test": "127.0.0.3"}


@pytest.fixture
def names_here(monkeypatch):
    """The test's own browser finds the IdMS names too (mcgw asks dnsmasq)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kw):
        return real(NAMES.get(host, host), *args, **kw)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_refresh_through_dns_outage_by_serve_stale(env, tmp_path, names_here):
    require_idms()
    cert, key = _leaf(env.pki.dir, "idms-names", "DNS:idms-authz.test,DNS:idms-token.test")
    ns = Dnsmasq(tmp_path, NAMES, ttl=1)
    silent = None
    try:
        idms = env.idms(access_ttl=4, cert=cert, key=key,
                        names=("idms-authz.test", "idms-token.test"))
        assert idms.issuer.startswith("https://idms-authz.test:"), idms.issuer
        gw = env.gateway(idms, idm={"refresh_before": "2s"}, start=False)
        gw.config_path.write_text(gw.config_path.read_text() + "\n[dns]\n"
                                  f"servers = {ns.server}\ntimeout = 300ms\ntries = 1\n")
        gw.start()
        gw.msg("idm_discovered", timeout=20)
        status, _, page = env.browser().login(gw.admin_url + "/login")
        assert status == 200, page
        gw.wait_state("authorized")
        wait_until(lambda: ns.count("idms-token.test") >= 1, 10, "the token host was looked up at dnsmasq")
        # The outage: the server's address swallows every query from now on.
        port = ns.port
        ns.stop()
        silent = SilentResolver(port)
        before = gw.idm_status()["refreshes"]["ok"]
        st = wait_until(lambda: gw.idm_status()["refreshes"]["ok"] >= before + 2 and gw.status(),
                        30, "two refreshes during the DNS outage", interval=0.2)
        assert st["idm"]["state"] in ("authorized", "refreshing"), st["idm"]
        assert st["idm"]["refreshes"]["failed"] == 0, st["idm"]
        assert st["dns"]["cache_hits"]["stale"] >= 1, st["dns"]
        wait_until(lambda: silent.count("idms-token.test") >= 1, 10, "the silent server was asked first")
    finally:
        ns.stop()
        if silent:
            silent.close()
