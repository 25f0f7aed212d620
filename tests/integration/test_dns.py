"""The resolver (c-ares on the loop) end to end: a real dnsmasq, and a
silent resolver for an uplink whose DNS is gone.

The daemon runs in a mount namespace whose /etc/hosts holds localhost only
(mcgwtest.loopback_dns_prefix) and is pointed at the test servers with
[dns] servers; nothing leaves this machine."""

import concurrent.futures
import signal
import subprocess
import time

import pytest

import mcgwtest
from dnstest import Dnsmasq, SilentResolver
from mcgwtest import echo_roundtrip, open_tunnel, wait_until

pytestmark = pytest.mark.skipif(not mcgwtest.DNS_ISOLATED,
                                reason="needs root and unshare for a private resolv.conf")


@pytest.fixture
def gateway(mcgw):
    """gateway(dns={...}, **tunnel) -> a started Mcgw with that [dns] section."""
    def start(dns, **tunnel):
        tunnel.setdefault("max_new_tunnels_per_client", "0/s")
        return mcgw(extra={"dns": dns}, **tunnel)
    return start


@pytest.fixture
def silent():
    s = SilentResolver()
    yield s
    s.close()


@pytest.fixture
def dnsmasq(tmp_path):
    servers = []

    def start(records, **kw):
        s = Dnsmasq(tmp_path, records, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def closed(daemon, resp):
    return daemon.tunnel_closed(resp.client)


def refused(daemon, target, status, close):
    resp = open_tunnel(daemon.proxy_port, target)
    assert resp.status == status, resp
    rec = closed(daemon, resp)
    resp.sock.close()
    assert rec["status"] == status and rec["close"] == close, rec
    return rec


def dns_status(daemon):
    return daemon.status()["dns"]


@pytest.mark.timeout(60)
def test_outage_leaves_hosts_names_and_literals_alone(gateway, silent, echo):
    """The issue's case: 64 lookups hang on a resolver that never answers;
    a name in /etc/hosts and an IP literal still open at once."""
    gw = gateway({"servers": silent.server}, allow=["*.example:443", f"localhost:{echo.port}",
                                                     f"127.0.0.1:{echo.port}"])
    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        hung = [pool.submit(open_tunnel, gw.proxy_port, f"n{i}.example:443") for i in range(64)]
        wait_until(lambda: len(set(silent.names)) >= 64, 10, "64 names asked of the resolver")
        for target in (f"localhost:{echo.port}", f"127.0.0.1:{echo.port}"):
            t0 = time.monotonic()
            t = open_tunnel(gw.proxy_port, target)
            took = time.monotonic() - t0
            assert t.status == 200, t
            assert took < 1.0, f"{target} took {took:.2f}s during the outage"
            echo_roundtrip(t, b"through the outage")
            t.close()
        # The hung ones end with the resolver's bound ([dns] timeout 2s x 2 tries): 504.
        for f in hung:
            resp = f.result(timeout=30)
            assert resp.status == 504, resp
            rec = closed(gw, resp)
            assert rec["close"] == "dns_timeout" and rec["result"] == "timeout", rec
            resp.sock.close()
    assert dns_status(gw)["queries"]["timeout"] >= 64


@pytest.mark.timeout(60)
def test_statuses_nxdomain_timeout_error(gateway, dnsmasq, silent):
    ns = dnsmasq({"ok.test": "127.0.0.1"})
    gw = gateway({"servers": ns.server}, allow=["*.test:443"])
    refused(gw, "missing.test:443", 502, "dns_nxdomain")
    gw2 = gateway({"servers": silent.server, "timeout": "300ms", "tries": "1"},
                  allow=["*.test:443"])
    t0 = time.monotonic()
    refused(gw2, "slow.test:443", 504, "dns_timeout")
    assert time.monotonic() - t0 < 5, "timeout x tries bounds a lookup"
    # A server that refuses (nothing listens on its port: ICMP unreachable).
    port = mcgwtest.free_port()
    gw3 = gateway({"servers": f"127.0.0.1:{port}"}, allow=["*.test:443"])
    refused(gw3, "gone.test:443", 502, "dns_error")


@pytest.mark.timeout(60)
def test_cache_ttl_capped_and_negative_ttl(gateway, dnsmasq, echo):
    """dnsmasq answers with a 60 s TTL; cache_max_ttl 1s caps it: lookups
    within the second reach dnsmasq once, and the next query comes only once
    the second has passed. Same for NXDOMAIN with negative_ttl 1s."""
    ns = dnsmasq({"ok.test": "127.0.0.1"}, ttl=60)
    gw = gateway({"servers": ns.server, "cache_max_ttl": "1s", "negative_ttl": "1s"},
                 allow=[f"ok.test:{echo.port}", "*.test:443"])
    t0 = time.monotonic()
    first = open_tunnel(gw.proxy_port, f"ok.test:{echo.port}")
    assert first.status == 200, first
    first.close()
    for _ in range(5):
        t = open_tunnel(gw.proxy_port, f"ok.test:{echo.port}")
        assert t.status == 200
        t.close()
    within_ttl = time.monotonic() - t0 < 1.0
    # dnsmasq's log line for the query is read from its pipe and may lag the
    # answer: wait for it (no lookup is made meanwhile), then count.
    wait_until(lambda: ns.count("ok.test") >= 1, 10, "dnsmasq logged the query")
    if within_ttl:
        assert ns.count("ok.test") == 1, ns.queries
    assert dns_status(gw)["cache_hits"]["fresh"] >= 1

    def asked_again():
        t = open_tunnel(gw.proxy_port, f"ok.test:{echo.port}")
        assert t.status == 200
        t.close()
        return ns.count("ok.test") >= 2
    wait_until(asked_again, 10, "a second query once the capped TTL passed", interval=0.1)
    assert time.monotonic() - t0 >= 1.0, "queried again before cache_max_ttl"

    n0 = time.monotonic()
    refused(gw, "missing.test:443", 502, "dns_nxdomain")
    refused(gw, "missing.test:443", 502, "dns_nxdomain")
    within_ttl = time.monotonic() - n0 < 1.0
    wait_until(lambda: ns.count("missing.test") >= 1, 10, "dnsmasq logged the query")
    if within_ttl:
        assert ns.count("missing.test") == 1, ns.queries
        assert dns_status(gw)["cache_hits"]["negative"] >= 1

    def nx_asked_again():
        refused(gw, "missing.test:443", 502, "dns_nxdomain")
        return ns.count("missing.test") >= 2
    wait_until(nx_asked_again, 10, "a second NXDOMAIN query after negative_ttl", interval=0.1)
    assert time.monotonic() - n0 >= 1.0, "queried again before negative_ttl"


@pytest.mark.timeout(60)
def test_concurrent_lookups_share_one_query(gateway, silent):
    gw = gateway({"servers": silent.server, "timeout": "1s", "tries": "1"},
                 allow=["same.test:443"])
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futs = [pool.submit(open_tunnel, gw.proxy_port, "same.test:443") for _ in range(16)]
        statuses = [f.result(timeout=30).status for f in futs]
    assert statuses == [504] * 16
    # One query: A and AAAA, one try each (c-ares asks both for AF_UNSPEC).
    assert silent.count("same.test") == 2, silent.names
    assert dns_status(gw)["queries"]["timeout"] == 1


@pytest.mark.timeout(60)
def test_serve_stale_while_servers_silent(gateway, dnsmasq, echo, tmp_path):
    """An answer past its TTL is served while the server does not answer
    (RFC 8767), and counted; the same name with no cached answer gets 504."""
    ns = dnsmasq({"ok.test": "127.0.0.1", "never.test": "127.0.0.1"}, ttl=1)
    port = ns.port
    gw = gateway({"servers": ns.server, "timeout": "300ms", "tries": "1"},
                 allow=[f"ok.test:{echo.port}", f"never.test:{echo.port}"])
    t = open_tunnel(gw.proxy_port, f"ok.test:{echo.port}")
    assert t.status == 200
    t.close()
    t0 = time.monotonic()
    ns.stop()
    silent = SilentResolver(port)  # the server's address now swallows queries
    try:
        def stale_served():
            s = open_tunnel(gw.proxy_port, f"ok.test:{echo.port}")
            assert s.status == 200, s
            echo_roundtrip(s, b"stale but reachable")
            s.close()
            return dns_status(gw)["cache_hits"]["stale"] >= 1
        wait_until(stale_served, 15, "a stale answer served", interval=0.2)
        assert time.monotonic() - t0 >= 0.9
        wait_until(lambda: silent.count("ok.test") >= 1, 10, "the server was asked first")
        refused(gw, f"never.test:{echo.port}", 504, "dns_timeout")
    finally:
        silent.close()


@pytest.mark.timeout(30)
def test_metrics_and_status(gateway, dnsmasq, echo):
    ns = dnsmasq({"ok.test": "127.0.0.1"})
    gw = gateway({"servers": ns.server}, allow=[f"ok.test:{echo.port}", "*.test:443"])
    t = open_tunnel(gw.proxy_port, f"ok.test:{echo.port}")
    assert t.status == 200
    t.close()
    refused(gw, "missing.test:443", 502, "dns_nxdomain")
    st = dns_status(gw)
    assert st["servers"] == ns.server, st
    assert st["queries"]["ok"] == 1 and st["queries"]["nxdomain"] == 1, st
    code, _, body = gw.admin("/metrics")
    assert code == 200
    text = body.decode()
    assert 'mcgw_dns_queries_total{result="ok"} 1' in text
    assert 'mcgw_dns_queries_total{result="nxdomain"} 1' in text
    assert 'mcgw_dns_cache_hits_total{kind="stale"} 0' in text
    assert "mcgw_dns_query_duration_seconds_count 2" in text


def reload_dns(gw, old, new):
    """Rewrites `old` as `new` in the config ([dns] lines), sends SIGHUP and
    returns the dns_reloaded record."""
    text = gw.config_path.read_text()
    assert old in text, (old, text)
    gw.config_path.write_text(text.replace(old, new, 1))
    n = len(gw.records)
    gw.send_signal(signal.SIGHUP)
    gw.wait_log(lambda r: r.get("msg") == "reloaded", what="reloaded", since=n)
    return gw.wait_log(lambda r: r.get("msg") == "dns_reloaded", what="dns_reloaded", since=n)


@pytest.mark.timeout(60)
def test_reload_applies_dns(gateway, dnsmasq, silent, echo):
    """A reload takes [dns] without a restart: lookups started after it go to
    the new servers (the cache emptied: other servers may answer otherwise),
    a lookup in flight finishes on the old channel with its own outcome, an
    open tunnel is untouched; a change of timeout only keeps the cache."""
    ns1 = dnsmasq({"a.test": "127.0.0.1"})
    ns2 = dnsmasq({"a.test": "127.0.0.1", "b.test": "127.0.0.1"})
    gw = gateway({"servers": ns1.server, "timeout": "2s", "tries": "1"},
                 allow=[f"a.test:{echo.port}", f"b.test:{echo.port}", f"127.0.0.1:{echo.port}"])
    held = open_tunnel(gw.proxy_port, f"127.0.0.1:{echo.port}")
    assert held.status == 200
    t = open_tunnel(gw.proxy_port, f"a.test:{echo.port}")
    assert t.status == 200
    t.close()
    wait_until(lambda: ns1.count("a.test") == 1, 10, "dnsmasq's log of the query")
    assert dns_status(gw)["cache_entries"] == 1

    rec = reload_dns(gw, f"servers = {ns1.server}", f"servers = {silent.server}")
    assert rec["servers"] == silent.server and rec["cache"] == "flushed", rec
    assert dns_status(gw)["cache_entries"] == 0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(open_tunnel, gw.proxy_port, f"a.test:{echo.port}")
        wait_until(lambda: silent.count("a.test") >= 1, 10, "the new server asked")
        assert dns_status(gw)["pending"] == 1
        # Another reload while that lookup is in flight on the silent channel.
        rec = reload_dns(gw, f"servers = {silent.server}", f"servers = {ns2.server}")
        assert rec["servers"] == ns2.server and rec["cache"] == "flushed", rec
        t = open_tunnel(gw.proxy_port, f"b.test:{echo.port}")
        assert t.status == 200, t
        echo_roundtrip(t, b"from the new server")
        t.close()
        wait_until(lambda: ns2.count("b.test") == 1, 10, "the new dnsmasq's log of the query")
        assert ns1.count("b.test") == 0
        slow = pending.result(timeout=30)
    assert slow.status == 504, slow  # its own timeout, not dropped by the reload
    assert closed(gw, slow)["close"] == "dns_timeout"
    slow.sock.close()
    assert ns1.count("a.test") == 1  # the first server was never asked again
    gw.wait_log(lambda r: r.get("msg") == "dns_channel_retired", what="the silent channel freed",
                since=gw.records.index(rec))

    rec = reload_dns(gw, "\ntimeout = 2s", "\ntimeout = 1s")
    assert rec["cache"] == "kept", rec
    t = open_tunnel(gw.proxy_port, f"b.test:{echo.port}")
    assert t.status == 200
    t.close()
    assert ns2.count("b.test") == 1  # a cache hit
    st = dns_status(gw)
    assert st["servers"] == ns2.server and st["pending"] == 0, st
    assert st["queries"]["ok"] == 2 and st["queries"]["timeout"] == 1, st
    assert st["cache_hits"]["fresh"] == 1, st
    echo_roundtrip(held, b"still open after three reloads")
    held.close()
    code, _, body = gw.admin("/metrics")
    assert code == 200 and 'mcgw_dns_queries_total{result="ok"} 2' in body.decode()


def v6_blackhole_and_v4_echo():
    """[::1]:P whose SYNs are dropped (a backlog-0 listener, its queue
    filled) and an echo server on 127.0.0.1:P; (port, closer), or None when
    the kernel completes connections anyway."""
    import select
    import socket
    import threading
    listener = socket.socket(socket.AF_INET6)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    listener.bind(("::1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers, blocked = [], False
    for _ in range(16):
        s = socket.socket(socket.AF_INET6)
        s.setblocking(False)
        fillers.append(s)
        if s.connect_ex(("::1", port)) == 0:
            continue
        _, writable, _ = select.select([], [s], [], 0.5)
        if not writable:
            blocked = True
            break
    echo = socket.socket()
    echo.bind(("127.0.0.1", port))
    echo.listen(16)

    def serve():
        while True:
            try:
                conn, _ = echo.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
    threading.Thread(target=serve, daemon=True).start()

    def close():
        for s in [*fillers, listener, echo]:
            s.close()
    if not blocked:
        close()
        return None
    return port, close


@pytest.mark.timeout(60)
def test_happy_eyeballs_blackholed_aaaa(gateway, dnsmasq):
    """he.test has AAAA ::1 (blackholed) and A 127.0.0.1: the IPv6 attempt
    hangs, the IPv4 one starts attempt_delay (250 ms) later and wins; the
    tunnel is up in about 250 ms, not after a share of connect_timeout."""
    hole = v6_blackhole_and_v4_echo()
    if hole is None:
        pytest.skip("no local IPv6 blackhole: the kernel accepted every connection")
    port, close = hole
    try:
        ns = dnsmasq({"he.test": "::1,127.0.0.1"})
        gw = gateway({"servers": ns.server}, allow=f"he.test:{port}", connect_timeout="10s")
        warm = open_tunnel(gw.proxy_port, f"he.test:{port}")  # the answer is cached now
        assert warm.status == 200, warm
        warm.close()
        t0 = time.monotonic()
        t = open_tunnel(gw.proxy_port, f"he.test:{port}")
        took = time.monotonic() - t0
        assert t.status == 200, t
        echo_roundtrip(t, b"over IPv4")
        rec_client = t.client
        t.close()
        assert 0.2 <= took < 1.0, f"took {took:.3f}s"
        rec = gw.tunnel_closed(rec_client)
        assert rec["connected"] == f"127.0.0.1:{port}", rec
    finally:
        close()


@pytest.mark.timeout(30)
def test_check_dns_section(tmp_path):
    """mcgw check takes the [dns] keys and names a bad value by FILE:LINE."""
    conf = tmp_path / "mcgw.ini"
    conf.write_text("[tunnel]\nlisten = 127.0.0.1:0\n[dns]\n"
                    "servers = 10.0.0.53, 10.0.0.54:5353, [fd00::53]:53\n"
                    "timeout = 500ms\ntries = 3\ncache_max_ttl = 1m\ncache_size = 10\n"
                    "negative_ttl = 5s\nstale_ttl = 0s\n")
    ok = subprocess.run([str(mcgwtest.BIN), "check", "-c", str(conf)], capture_output=True,
                        text=True, timeout=20)
    assert ok.returncode == 0, ok.stderr
    conf.write_text("[tunnel]\nlisten = 127.0.0.1:0\n[dns]\n"
                    "servers = dns.example\n"   # line 4
                    "tries = 0\n"               # line 5
                    "timeout = 2\n")            # line 6
    bad = subprocess.run([str(mcgwtest.BIN), "check", "-c", str(conf)], capture_output=True,
                         text=True, timeout=20)
    assert bad.returncode != 0
    for line, key in ((4, "servers"), (5, "tries"), (6, "timeout")):
        assert f"{conf}:{line}: {key}:" in bad.stderr, bad.stderr
