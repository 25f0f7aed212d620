"""The gateway's own CSC-1 traffic to an IdMS known by name (dnsmasq),
through the same resolver as the tunnels' (tunnel/resolver.c):

- a DNS outage: the server goes silent, and the token refreshes still reach
  the IdMS with the stale answers (RFC 8767), counted in /status dns;
- a broken IPv6 path: the names' AAAA is blackholed (in an uplink network
  namespace) and their A works; the client's Happy Eyeballs race
  (csc1/https_connect.c) reaches the IdMS over IPv4 attempt_delay later."""

import datetime
import socket

import pytest

import mcgwtest
from dnstest import Dnsmasq, SilentResolver
from idmtest import _leaf, env, pki, require_idms, wait_until  # noqa: F401
from netns import Uplink, require_netns

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


def log_time(rec):
    """A record's ts (the daemon's wall clock, milliseconds) in seconds."""
    return datetime.datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def refresh_durations(gw, token_host):
    """Each refresh's duration by the daemon's own clock: from its POST to
    the token endpoint to the idm_refreshed record that ends it."""
    out, posted = [], None
    for r in gw.log_records():
        if r.get("msg") == "idm_http" and r.get("method") == "POST" and \
                f"//{token_host}:" in r.get("url", ""):
            posted = log_time(r)
        elif r.get("msg") == "idm_refreshed" and posted is not None:
            out.append(log_time(r) - posted)
            posted = None
    return out


ATTEMPT_DELAY_S = 1.0  # [tunnel] attempt_delay; the IdMS requests' own deadline is 10 s


def test_refresh_races_past_a_blackholed_aaaa(env, tmp_path, names_here):
    """Both IdMS names have an AAAA whose packets vanish (a blackhole route
    in an uplink namespace) and a working A. Every request (discovery, JWKS,
    token) tries IPv6 first, as RFC 6724 ranks it, and IPv4
    [tunnel] attempt_delay later: a refresh takes about attempt_delay (not
    less: IPv6 went first; far less than the 10 s deadline a one-by-one
    client would spend on the IPv6 address) and none fails."""
    require_netns()
    require_idms()
    up = Uplink()
    ns = None
    try:
        hole = up.blackhole6()
        ns = Dnsmasq(tmp_path, {name: f"{hole},{v4}" for name, v4 in NAMES.items()})
        cert, key = _leaf(env.pki.dir, "idms-he", "DNS:idms-authz.test,DNS:idms-token.test")
        idms = env.idms(access_ttl=4, cert=cert, key=key,
                        names=("idms-authz.test", "idms-token.test"))
        gw = env.gateway(idms, tunnel={"attempt_delay": f"{int(ATTEMPT_DELAY_S * 1000)}ms"},
                         idm={"refresh_before": "2s"}, start=False)
        gw.config_path.write_text(gw.config_path.read_text() + f"\n[dns]\nservers = {ns.server}\n")
        gw.start()
        gw.msg("idm_discovered", timeout=20)
        status, _, page = env.browser().login(gw.admin_url + "/login")
        assert status == 200, page
        gw.wait_state("authorized")
        assert ns.count("idms-token.test", "AAAA") >= 1, ns.queries
        wait_until(lambda: len(refresh_durations(gw, "idms-token.test")) >= 2, 30,
                   "two refreshes", interval=0.2)
        took = refresh_durations(gw, "idms-token.test")[:2]
        for t in took:
            assert ATTEMPT_DELAY_S - 0.05 <= t < ATTEMPT_DELAY_S + 3.5, took
        assert gw.idm_status()["refreshes"]["failed"] == 0, gw.idm_status()
    finally:
        if ns:
            ns.stop()
        up.close()
