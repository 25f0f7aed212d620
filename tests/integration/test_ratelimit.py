"""Per-device new-tunnel rates (issue 18): one device must not turn the
gateway into a connection flood against an MC server.

- the rapid-reset loop with python3-h2 (CONNECT then RST_STREAM, 1000 per
  connection, reconnect) on the plain and TLS listeners: the target sees at
  most burst + rate x seconds (plus 10 %), the device gets 429s and
  GOAWAY(ENHANCE_YOUR_CALM), a second device is served all the while;
- the same with HTTP/1.1 connect, CONNECT, close loops;
- the per-target cap: 10 devices (127.0.0.2..11), each under its own rate,
  together over max_new_upstream_per_target: the target sees the cap, the
  others get 503 close=target_rate;
- a reset (h2) or close (h1) while the upstream connect is pending closes
  the half-open socket at once (mcgw's descriptors) and logs
  close=reset_down, result=cancelled.

Pacing loops (a device sending N per second) wait on the clock; nothing
waits to let the gateway do something: that is polled with a deadline."""

import collections
import os
import re
import selectors
import socket
import threading
import time

import h2.errors
import pytest

from h2client import H2Client, make_device_pki
from mcgwtest import (DNS_ISOLATED, Mcgw, blackhole, loopback_dns_prefix, open_tunnel,
                     recv_exactly, run_cli, wait_until)
from opsutil import ARTIFACTS
from test_ops_page import browser  # noqa: F401  (the headless Chromium fixture)

RATE, BURST = 20, 50
SLACK = 1.10  # the 10 % the issue allows on burst + rate x seconds


class CountingTarget:
    """A listener that accepts and closes, counting connections: the MC
    server the device floods."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            conn.close()

    def close(self):
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(10)


@pytest.fixture
def target():
    t = CountingTarget()
    yield t
    t.close()


def limited_gateway(mcgw, pki, **keys):
    """A gateway with the issue's defaults written out, plain and TLS
    listeners, allowing loopback targets."""
    keys = {"max_new_tunnels_per_client": f"{RATE}/s", "new_tunnels_burst": BURST,
            "h2_max_refused_per_connection": 100, **keys}
    gw = mcgw(allow="127.0.0.1:*", listen_tls="127.0.0.1:0", tls_cert=pki.server_cert,
              tls_key=pki.server_key, **keys)
    gw.tls_port = gw._listening("proxy_tls")[0]
    return gw


def metric(gw, name):
    """The value of one sample line ("name{labels}") of /metrics."""
    return gw.metric(name)


def settle(gw):
    """Until the gateway has nothing open or being set up, so the target's
    count is final."""
    gw.wait_status(lambda s: s["tunnels"]["active"] == 0, 30, "no tunnel left")


class WellBehaved(threading.Thread):
    """A second device (its own source address, so its own client) opening a
    tunnel to the echo server every 100 ms, over HTTP/2 on port, each checked
    by a round trip, until stopped."""

    def __init__(self, port, echo_port, context=None, source="127.0.0.2"):
        super().__init__(daemon=True)
        self.args = (port, echo_port, context, source)
        self.stop = threading.Event()
        self.ok = 0
        self.failures = []

    def run(self):
        port, echo_port, context, source = self.args
        c = H2Client(port, context, source=source)
        try:
            while not self.stop.wait(0.1):
                s = c.connect(f"127.0.0.1:{echo_port}")
                c.wait_response(s)
                if s.status != 200:
                    self.failures.append(s.status or s.reset_code)
                    continue
                c.send(s, b"ping %d" % self.ok, end=True)
                c.finish([s])
                if bytes(s.body) != b"ping %d" % self.ok:
                    self.failures.append(bytes(s.body))
                self.ok += 1
        except Exception as e:  # reported by the test, not lost in the thread
            self.failures.append(repr(e))
        finally:
            c.close()


def rapid_reset_connection(port, context, authority, stats):
    """One connection of the loop: 1000 CONNECT streams, each reset at once
    except every 50th (a probe whose answer is awaited), until the gateway
    says GOAWAY or closes."""
    c = H2Client(port, context, timeout=30)
    probes = []
    try:
        for i in range(1000):
            if c.goaway is not None or c.closed:
                break
            s = c.connect(authority, keep_body=False)
            if i % 50 == 0:
                probes.append(s)
            else:
                c.reset(s)
            if i % 100 == 99:
                c.pump_once(0)
        try:
            c.pump(lambda: c.goaway is not None or c.closed, 30, "GOAWAY")
        except AssertionError:
            pass  # counted below: a connection without GOAWAY fails the test
        for s in probes:
            if s.status is not None:
                stats["status"][s.status] += 1
        stats["goaway"][c.goaway.error_code if c.goaway else None] += 1
        stats["connections"] += 1
    finally:
        c.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("listener", ["plain", "tls"])
def test_h2_rapid_reset_loop_bounded(mcgw, pki, echo, target, listener):
    gw = limited_gateway(mcgw, pki)
    port, context = ((gw.proxy_port, None) if listener == "plain"
                     else (gw.tls_port, pki.client_context()))
    good = WellBehaved(port, echo.port, pki.client_context() if context else None)
    stats = {"status": collections.Counter(), "goaway": collections.Counter(), "connections": 0}
    start = time.monotonic()
    good.start()
    while time.monotonic() - start < 4:
        rapid_reset_connection(port, context, f"127.0.0.1:{target.port}", stats)
    good.stop.set()
    good.join(30)
    settle(gw)
    elapsed = time.monotonic() - start
    bound = (BURST + RATE * elapsed) * SLACK
    assert target.accepted <= bound, (target.accepted, bound, stats)
    assert target.accepted >= BURST / 2, (target.accepted, stats)  # the limit is not "nothing"
    assert stats["status"][429] > 0, stats
    calm = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    # Every connection of the loop ended with GOAWAY(ENHANCE_YOUR_CALM).
    assert stats["goaway"] == {calm: stats["connections"]} and stats["connections"] > 1, stats
    assert metric(gw, 'mcgw_h2_goaway_total{reason="rate_limited"}') >= stats["connections"]
    assert metric(gw, 'mcgw_tunnels_total{proto="h2",type="tcp",result="rate_limited"}') > 100
    assert not good.failures and good.ok >= 10, (good.ok, good.failures)
    rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed" and r.get("status") == 429)
    assert rec["result"] == "rate_limited" and rec["connected"] == "-", rec
    assert not any(r.get("msg") == "tunnel_closed" and r.get("result") == "error"
                   and r.get("client", "").startswith("127.0.0.1:") and r.get("proto") == "h2"
                   for r in gw.records), "a device reset counted as error"


@pytest.mark.timeout(180)
def test_h1_connect_close_loop_bounded(mcgw, pki, echo, target):
    gw = limited_gateway(mcgw, pki)
    good = WellBehaved(gw.proxy_port, echo.port)
    request = f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\n\r\n".encode()
    statuses = collections.Counter()
    start = time.monotonic()
    good.start()
    i = 0
    while time.monotonic() - start < 4:
        if i % 20 == 0:  # a probe: read the answer
            t = open_tunnel(gw.proxy_port, f"127.0.0.1:{target.port}")
            statuses[t.status] += 1
            if t.status == 429:
                assert t.header("retry-after") and int(t.header("retry-after")) >= 1, t.headers
                assert (t.header("connection") or "").lower() == "close", t.headers
            t.close()
        else:  # connect, CONNECT, close
            with socket.create_connection(("127.0.0.1", gw.proxy_port)) as s:
                s.sendall(request)
        i += 1
    good.stop.set()
    good.join(30)
    settle(gw)
    elapsed = time.monotonic() - start
    bound = (BURST + RATE * elapsed) * SLACK
    assert i > bound, "the loop was too slow to test anything"
    assert target.accepted <= bound, (target.accepted, bound, i)
    assert statuses[429] > 0, statuses
    assert not good.failures and good.ok >= 10, (good.ok, good.failures)
    # Ops: the device is listed as rate limited now, by address.
    st = gw.status()
    limited = {c["client"]: c for c in st["clients"]["rate_limited"]}
    assert "127.0.0.1" in limited and limited["127.0.0.1"]["refused"] > 0, st["clients"]
    assert "127.0.0.2" not in limited, st["clients"]
    rc, out = run_cli("status", "--admin", gw.admin_url)
    assert rc == 0 and re.search(r"^rate limited now.*\n  127\.0\.0\.1 +\d+", out, re.M), out
    assert metric(gw, "mcgw_clients_rate_limited") >= 1
    assert metric(gw, 'mcgw_tunnels_total{proto="h1",type="tcp",result="rate_limited"}') > 0


@pytest.mark.timeout(120)
def test_per_target_cap_across_devices(mcgw, pki, target):
    """10 devices at 15/s each (under their 20/s, burst 50), 150/s together,
    to one target capped at 50/s."""
    cap, per_device, seconds = 50, 15, 3
    gw = limited_gateway(mcgw, pki, max_new_upstream_per_target=f"{cap}/s")
    results = collections.Counter()
    retry_after = []
    lock = threading.Lock()

    def device(n):
        source = f"127.0.0.{n}"
        t0 = time.monotonic()
        for k in range(per_device * seconds):
            # pacing: the k-th request at t0 + k / per_device
            time.sleep(max(0.0, t0 + k / per_device - time.monotonic()))
            t = open_tunnel(gw.proxy_port, f"127.0.0.1:{target.port}", source=source)
            with lock:
                results[t.status] += 1
                if t.status == 503:
                    retry_after.append(t.header("retry-after"))
            t.close()

    start = time.monotonic()
    threads = [threading.Thread(target=device, args=(n,), daemon=True) for n in range(2, 12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    settle(gw)
    elapsed = time.monotonic() - start
    bound = (cap + cap * elapsed) * SLACK
    assert results[429] == 0, results  # every device stayed under its own rate
    assert results[503] > 0 and all(r and int(r) >= 1 for r in retry_after), results
    assert target.accepted <= bound, (target.accepted, bound, results)
    assert target.accepted >= cap, (target.accepted, results)
    rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed" and r.get("status") == 503)
    assert rec["result"] == "limit" and rec["close"] == "target_rate", rec
    # Logged as the 429s are: one line a 10 s window for the target, the
    # others counted by its target_rate_suppressed summary.
    name = f"127.0.0.1:{target.port}"

    def accounted():
        recs = gw.log_records()
        lines = [r for r in recs if r.get("msg") == "tunnel_closed" and r.get("status") == 503
                 and r.get("target") == name]
        summaries = [r for r in recs if r.get("msg") == "target_rate_suppressed"
                     and r.get("target") == name]
        return lines, summaries, len(lines) + sum(int(r["suppressed"]) for r in summaries)

    wait_until(lambda: accounted()[2] >= results[503], 30, "the summaries of every 503")
    lines, summaries, total = accounted()
    assert total == results[503], (len(lines), summaries, results)
    assert 1 <= len(lines) <= 2 + int(elapsed // 10) and summaries, (len(lines), summaries)
    for s in summaries:
        assert s["level"] == "warn" and s["close"] == "target_rate" and int(s["status"]) == 503, s
        assert int(s["suppressed"]) > 0 and 0 < int(s["window_ms"]) <= 10000, s


def open_fds(gw):
    return len(os.listdir(f"/proc/{gw.proc.pid}/fd"))


def steady_fds(gw):
    """mcgw's descriptor count once it holds still (an admin connection the
    test just used may still be closing)."""
    seen = []

    def steady():
        seen.append(open_fds(gw))
        return len(seen) >= 5 and len(set(seen[-5:])) == 1 and seen[-1]
    return wait_until(steady, 10, "a steady descriptor count", interval=0.05)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_reset_cancels_half_open_connect(mcgw, pki, proto):
    """The upstream connect cannot complete (a listener whose backlog is
    full): the device's reset closes the half-open socket at once, long
    before connect_timeout (30 s here)."""
    gw = limited_gateway(mcgw, pki, connect_timeout="30s")
    with blackhole() as port:
        if port is None:
            pytest.skip("this kernel completes connections beyond a full accept queue")
        if proto == "h1":
            dev = socket.create_connection(("127.0.0.1", gw.proxy_port))
            client = "127.0.0.1:%d" % dev.getsockname()[1]
        else:
            dev = H2Client(gw.proxy_port)
            client = "127.0.0.1:%d" % dev.sock.getsockname()[1]
        gw.wait_status(lambda s: s["tunnels"]["connections_active"] == 1, 10, "the device")
        base = steady_fds(gw)
        t0 = time.monotonic()
        if proto == "h1":
            dev.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        else:
            s = dev.connect(f"127.0.0.1:{port}")
        wait_until(lambda: open_fds(gw) == base + 1, 10, "the upstream socket")
        if proto == "h1":
            dev.close()  # the device closes its connection
            expected = base - 1
        else:
            dev.reset(s)  # RST_STREAM; the connection stays
            expected = base
        wait_until(lambda: open_fds(gw) == expected, 5, "the half-open socket closed")
        rec = gw.tunnel_closed(client)
        assert rec["close"] == "reset_down" and rec["result"] == "cancelled", rec
        assert rec["connected"] == "-" and rec["duration_ms"] < 10000, rec
        assert time.monotonic() - t0 < 10
        if proto == "h2":
            # The connection still works for the next stream.
            assert dev.wait_response(dev.connect("127.0.0.1:1")).status in (502, 403), "h2"
            dev.close()
    st = gw.status()
    assert st["tunnels"]["by_result"]["cancelled"] == 1, st["tunnels"]
    assert st["tunnels"]["by_result"]["error"] == 0, st["tunnels"]


def test_rate_limited_device_gets_429_with_retry_after_h2(mcgw, pki, target):
    """Past the burst, HTTP/2 streams get :status 429 with retry-after, and no
    connection is made for them."""
    gw = limited_gateway(mcgw, pki, new_tunnels_burst=3, max_new_tunnels_per_client="1/s")
    c = H2Client(gw.proxy_port)
    streams = [c.connect(f"127.0.0.1:{target.port}") for _ in range(6)]
    for s in streams:
        c.wait_response(s)
    statuses = [s.status for s in streams]
    # the burst, and at most one more if a second passed meanwhile (1/s)
    assert statuses[:3] == [200] * 3 and statuses.count(429) >= 2, statuses
    assert set(statuses) == {200, 429}, statuses
    refused = [s for s in streams if s.status == 429]
    assert all(int(s.headers["retry-after"]) >= 1 for s in refused), [s.headers for s in refused]
    c.close()
    settle(gw)
    assert target.accepted == statuses.count(200)


def test_rate_exempt_device(mcgw, pki, target):
    """rate_exempt = ADDRESS: that device is not held to the rate; the
    others still are."""
    gw = limited_gateway(mcgw, pki, new_tunnels_burst=2, max_new_tunnels_per_client="1/s",
                         rate_exempt="127.0.0.3")
    got = {}
    for source in ("127.0.0.3", "127.0.0.4"):
        got[source] = []
        for _ in range(5):
            t = open_tunnel(gw.proxy_port, f"127.0.0.1:{target.port}", source=source)
            got[source].append(t.status)
            t.close()
    assert got["127.0.0.3"] == [200] * 5, got
    # burst 2, then 429s (one more 200 if a second passed meanwhile, at 1/s)
    assert got["127.0.0.4"][:2] == [200, 200] and got["127.0.0.4"].count(429) >= 2, got


@pytest.mark.timeout(120)
def test_page_lists_rate_limited_device(mcgw, pki, target, browser):
    """The status page's refusals card names the device being rate limited
    (headless Chromium, tests/ui)."""
    gw = limited_gateway(mcgw, pki, new_tunnels_burst=2, max_new_tunnels_per_client="1/s")
    got = []
    for _ in range(5):
        t = open_tunnel(gw.proxy_port, f"127.0.0.1:{target.port}", source="127.0.0.5")
        got.append(t.status)
        t.close()
    assert got.count(429) >= 2, got
    browser("open", url=gw.admin_url + "/", width=1280, height=900)
    browser("wait_match", selector="#rate-limited td:first-child", pattern=r"^127\.0\.0\.5$")
    refused = int(browser("text", selector="#rate-limited td:nth-child(2)")["text"])
    assert refused == got.count(429), (refused, got)
    assert "rate_limited" in browser("text", selector="#refusals")["text"]
    browser("screenshot", path=str(ARTIFACTS / "status-page-rate-limited.png"))
    assert browser("errors")["errors"] == []


@pytest.mark.timeout(60)
def test_device_certificate_subject_is_the_client(mcgw, pki, target, tmp_path):
    """On a client_ca listener the bucket is the device's certificate
    subject: the same device from two addresses shares it, /status names the
    subject, and rate_exempt = SUBJECT exempts it."""
    (tmp_path / "devices").mkdir()
    dev = make_device_pki(tmp_path / "devices")
    ctx = dev.context(pki.ca_cert, dev.cert, dev.key)
    statuses = []
    gw = limited_gateway(mcgw, pki, client_ca=dev.ca_cert, new_tunnels_burst=2,
                         max_new_tunnels_per_client="1/s")
    for source in ("127.0.0.6", "127.0.0.7", "127.0.0.6", "127.0.0.7"):
        c = H2Client(gw.tls_port, ctx, source=source)
        statuses.append(c.wait_response(c.connect(f"127.0.0.1:{target.port}")).status)
        c.close()
    # burst 2 for both addresses together (one more if a second passed, at 1/s)
    assert statuses[:2] == [200, 200] and statuses.count(429) >= 1, statuses
    limited = gw.status()["clients"]["rate_limited"]
    assert [(x["client"], x["is_subject"], x["refused"]) for x in limited] == \
        [(dev.subject, True, statuses.count(429))], limited
    gw2 = limited_gateway(mcgw, pki, client_ca=dev.ca_cert, new_tunnels_burst=2,
                          max_new_tunnels_per_client="1/s", rate_exempt=dev.subject)
    c = H2Client(gw2.tls_port, ctx, source="127.0.0.6")
    streams = [c.connect(f"127.0.0.1:{target.port}") for _ in range(4)]
    assert [c.wait_response(s).status for s in streams] == [200] * 4
    c.close()


class HeldDns:
    """A DNS server on ADDR:53 that answers A queries with 127.0.0.1 (and
    AAAA with no address) only once released: a resolver that is slow
    exactly as long as the test wants."""

    ADDR = "127.0.0.99"

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.ADDR, 53))
        self.queries = []
        self.answered = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            with self._lock:
                self.queries.append(data)
            threading.Thread(target=self._answer, args=(data, peer), daemon=True).start()

    def _answer(self, q, peer):
        self.release.wait(60)
        end = 12
        while q[end]:
            end += 1 + q[end]
        question = q[12:end + 5]
        qtype = int.from_bytes(q[end + 1:end + 3], "big")
        answers = (b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" +
                   socket.inet_aton("127.0.0.1")) if qtype == 1 else b""
        head = q[:2] + b"\x81\x80\x00\x01" + (b"\x00\x01" if answers else b"\x00\x00") + b"\0" * 4
        try:
            self.sock.sendto(head + question + answers, peer)
        except OSError:
            return
        with self._lock:
            self.answered += 1

    def close(self):
        self.release.set()
        self.sock.close()


class HeldDnsGateway(Mcgw):
    def command_prefix(self):
        return loopback_dns_prefix(self.workdir, nameserver=HeldDns.ADDR, dns_timeout_s=30)


@pytest.mark.timeout(60)
def test_close_during_lookup_drops_its_answer(tmp_path, target):
    """The device closes while its target's name is being looked up (a
    resolver that answers only when the test says): the tunnel closes at
    once as cancelled/reset_down (its lookup cancelled: tn_resolver_cancel);
    the answer that comes later only fills the resolver's cache and nothing
    is connected."""
    if not DNS_ISOLATED:
        pytest.skip("needs root and unshare for the daemon's own resolv.conf")
    dns = HeldDns()
    gw = HeldDnsGateway(tmp_path / "gw", tunnel={"allow": f"slow.example.org:{target.port}"})
    try:
        gw.start()
        dev = socket.create_connection(("127.0.0.1", gw.proxy_port))
        client = "127.0.0.1:%d" % dev.getsockname()[1]
        dev.sendall(f"CONNECT slow.example.org:{target.port} HTTP/1.1\r\n\r\n".encode())
        wait_until(lambda: dns.queries, 10, "the lookup at the resolver")
        t0 = time.monotonic()
        dev.close()
        rec = gw.tunnel_closed(client)
        assert rec["result"] == "cancelled" and rec["close"] == "reset_down", rec
        assert time.monotonic() - t0 < 10  # not the 30 s resolver timeout
        dns.release.set()
        late = gw.wait_log(lambda r: r.get("msg") == "dns_answer" and
                           r.get("name") == "slow.example.org", 20, "the late answer")
        assert late["result"] == "ok" and dns.answered >= 1, (late, dns.answered)
        assert target.accepted == 0
        assert not any(r.get("msg") == "connect_attempt_failed" for r in gw.records)
        assert gw.status()["tunnels"]["active"] == 0
    finally:
        gw.stop()
        dns.close()
    gw.assert_no_sanitizer_report()


def flood(gw, proto, target_port, n, source):
    """n CONNECT requests from source as fast as they go: over one HTTP/2
    connection, or one HTTP/1.1 connection each. Their statuses."""
    authority = f"127.0.0.1:{target_port}"
    if proto == "h1":
        statuses = collections.Counter()
        for _ in range(n):
            t = open_tunnel(gw.proxy_port, authority, source=source)
            statuses[t.status] += 1
            t.close()
        return statuses
    c = H2Client(gw.proxy_port, source=source)
    try:
        # In batches well under h2_max_concurrent_streams: the gateway answers
        # a read's requests when the read is done, so hundreds in one read
        # would meet REFUSED_STREAM, not the rate limit.
        streams = []
        for _ in range(0, n, 50):
            batch = [c.connect(authority) for _ in range(min(50, n - len(streams)))]
            for s in batch:
                c.wait_response(s)
            streams += batch
        return collections.Counter(s.status for s in streams)
    finally:
        c.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_flood_of_429s_logs_a_bounded_number_of_lines(mcgw, pki, target, proto):
    """A flooding device's 429s cost a bounded number of log lines: the first
    refusal of each 10 s window is its access-log line, the others are only
    counted, and one rate_limited_suppressed line a window says how many;
    /metrics counts every 429, and the access log of the tunnels that were
    opened is untouched. The summary is waited for (the window is 10 s of
    the gateway's monotonic clock); the arithmetic of the windows is
    tests/unit/test_ratelimit.c's."""
    source, n = "127.0.0.8", 300
    gw = limited_gateway(mcgw, pki, new_tunnels_burst=2, max_new_tunnels_per_client="1/s",
                         h2_max_refused_per_connection=0)
    start = time.monotonic()
    statuses = flood(gw, proto, target.port, n, source)
    elapsed = time.monotonic() - start
    refused = statuses[429]
    assert set(statuses) == {200, 429} and refused >= n - 2 - elapsed - 1, statuses
    settle(gw)
    assert metric(gw, f'mcgw_tunnels_total{{proto="{proto}",type="tcp",result="rate_limited"}}') \
        == refused

    def mine(r, msg):
        return r.get("msg") == msg and (r.get("client") == source
                                        or r.get("client", "").startswith(source + ":"))

    def accounted():
        lines = [r for r in gw.log_records() if mine(r, "tunnel_closed") and r["status"] == 429]
        summaries = [r for r in gw.log_records() if mine(r, "rate_limited_suppressed")]
        return lines, summaries, len(lines) + sum(int(r["suppressed"]) for r in summaries)

    wait_until(lambda: accounted()[2] >= refused, 40, "the summaries of every 429")
    lines, summaries, total = accounted()
    assert total == refused, (len(lines), summaries, refused)
    # One line a window that began within the flood (10 s each), not one a 429.
    windows = 1 + int(elapsed // 10) + 1
    assert 1 <= len(lines) <= windows and len(summaries) <= len(lines), (len(lines), elapsed)
    for s in summaries:
        assert s["level"] == "warn" and s["subject"] == "-", s
        assert s["result"] == "rate_limited" and int(s["status"]) == 429, s
        assert int(s["suppressed"]) > 0 and 0 < int(s["window_ms"]) <= 10000, s
    assert all(r["result"] == "rate_limited" for r in lines), lines
    # The tunnels that were opened keep their access-log lines, every one.
    ok = [r for r in gw.log_records() if mine(r, "tunnel_closed") and r["status"] == 200]
    assert len(ok) == statuses[200], (ok, statuses)


def flood_sources(port, sources, request, concurrency=256, timeout=60):
    """One HTTP/1.1 connection from each source address (the socket bound to
    it before connecting), sending request and reading the response head;
    `concurrency` at once on non-blocking sockets, as opening thousands one
    after the other takes too long. The statuses counted."""
    sel = selectors.DefaultSelector()
    statuses = collections.Counter()
    waiting = iter(sources)
    deadline = time.monotonic() + timeout

    def start():
        src = next(waiting, None)
        if src is None:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.bind((src, 0))
        s.connect_ex(("127.0.0.1", port))  # EINPROGRESS: writable once connected
        sel.register(s, selectors.EVENT_WRITE, bytearray())

    for _ in range(concurrency):
        start()
    while sel.get_map():
        assert time.monotonic() < deadline, f"flood still running after {timeout} s"
        for key, events in sel.select(timeout=1):
            s, head = key.fileobj, key.data
            if events & selectors.EVENT_WRITE:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                assert err == 0, os.strerror(err)
                assert s.send(request) == len(request)  # a few dozen bytes: never partial
                sel.modify(s, selectors.EVENT_READ, head)
                continue
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            head += data
            if b"\r\n\r\n" in head or not data:
                line = bytes(head).split(b"\r\n", 1)[0].split()
                statuses[int(line[1]) if len(line) > 1 else "no response"] += 1
                sel.unregister(s)
                s.close()
                start()
    sel.close()
    return statuses


def rss_kib(gw):
    with open(f"/proc/{gw.proc.pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M)[1])


def sanitized(gw):
    """Whether the daemon runs with ASan (gcc links it as libasan.so)."""
    with open(f"/proc/{gw.proc.pid}/maps") as f:
        return "libasan" in f.read()


def denied_until_429(gw, source, authority, limit):
    """Tunnel requests from source, one at a time, until the first 429 (at
    most limit): how many were answered otherwise (403, each took a token)."""
    for n in range(limit + 1):
        t = open_tunnel(gw.proxy_port, authority, source=source)
        status = t.status
        t.close()
        if status == 429:
            return n
        assert status == 403, status
    raise AssertionError(f"no 429 from {source} after {limit} requests")


FLOOD_DEVICE = "127.0.0.3"
DENIED = "192.0.2.1:9"  # TEST-NET-1: not in limited_gateway's allow = 127.0.0.1:*
DENIED_REQUEST = f"CONNECT {DENIED} HTTP/1.1\r\nHost: {DENIED}\r\n\r\n".encode()


def flood_addresses(n):
    """n distinct source addresses in 127.100.0.0/16 (all local on Linux)."""
    assert n <= 254 * 256
    return [f"127.100.{i // 254}.{1 + i % 254}" for i in range(n)]


def flood_gateway(mcgw, pki):
    """A gateway at 1/s, burst 50 (a flood entry, one token taken, stays
    not-full, so not prunable, for a second), its client table's bound from
    /status, and one device (127.0.0.3) that used its whole burst and was
    refused: the oldest entry, not full until it is evicted, so nothing
    behind it is pruned (pruning stops at the first entry it cannot drop)
    and the table reaches its bound whatever the speed of the flood.
    Returns (gw, cap, when the device was drained)."""
    gw = limited_gateway(mcgw, pki, max_new_tunnels_per_client="1/s")
    st = gw.status()
    cap = st["clients"]["rate_tracked_max"]
    assert cap == 4096 and st["clients"]["rate_tracked"] == 0, st["clients"]
    assert st["targets"] == {"rate_tracked": 0, "rate_tracked_max": 4096}, st["targets"]
    t0 = time.monotonic()
    first = denied_until_429(gw, FLOOD_DEVICE, DENIED, 2 * BURST)
    assert BURST <= first <= BURST + 1 + (time.monotonic() - t0), first
    drained = time.monotonic()
    assert gw.status()["clients"]["rate_tracked"] == 1
    return gw, cap, drained


def flood_denied(gw, sources):
    statuses = flood_sources(gw.proxy_port, sources, DENIED_REQUEST)
    assert statuses == {403: len(sources)}, statuses


@pytest.mark.timeout(120)
def test_flood_from_many_addresses_is_bounded(mcgw, pki, echo):
    """A flood of new tunnels from 7,000 distinct source addresses, more
    than the client rate table holds, one request each, to a target no rule
    allows (403: the client's token is taken first, nothing goes upstream).

    - The table fills to exactly its bound (4,096) and never exceeds it:
      /status clients.rate_tracked and mcgw_rate_limit_entries midway, after
      each 1,000 more, and at the end.
    - A device rate limited (its bucket empty) and then evicted by the flood
      comes back as a fresh device with its whole burst, more than its
      bucket could have refilled: the consequence of the bound that
      docs/security.md states.
    - A normal device is served afterwards.

    The limited device, drained first, keeps the table from pruning
    (flood_gateway): it reaches its bound whatever the speed of the flood."""
    gw, cap, drained = flood_gateway(mcgw, pki)

    sources = flood_addresses(7000)
    start = time.monotonic()
    flood_denied(gw, sources[:cap])
    phase1 = time.monotonic() - start
    mid = gw.status()["clients"]["rate_tracked"]
    assert mid == cap, mid  # full: the bound is reached, not avoided by pruning
    assert metric(gw, 'mcgw_rate_limit_entries{table="clients"}') == cap
    assert metric(gw, 'mcgw_rate_limit_entries_max{table="clients"}') == cap
    seen = []
    for i in range(cap, len(sources), 1000):
        flood_denied(gw, sources[i:i + 1000])
        seen.append(gw.status()["clients"]["rate_tracked"])
    flood_s = time.monotonic() - start
    assert 0 < max(seen) <= cap, seen
    assert metric(gw, 'mcgw_rate_limit_entries{table="clients"}') <= cap
    print(f"flood of {len(sources)} addresses in {flood_s:.1f} s (the first {cap}: "
          f"{phase1:.1f} s); table {mid} midway, then {seen}")

    # Evicted (the least recently seen), the device starts afresh: its whole
    # burst again, where its own bucket would hold only what refilled at 1/s.
    since = time.monotonic() - drained
    again = denied_until_429(gw, FLOOD_DEVICE, DENIED, 2 * BURST)
    assert again >= BURST > int(since) + 1, (again, since)

    # A normal device is served: a tunnel to the echo server, a round trip;
    # the target table holds that target.
    t = open_tunnel(gw.proxy_port, f"127.0.0.1:{echo.port}", source="127.0.0.2")
    assert t.status == 200, t.status
    t.sock.sendall(b"still served")
    assert recv_exactly(t, 12) == b"still served"
    t.close()
    st = gw.status()
    assert st["targets"]["rate_tracked"] == 1, st["targets"]
    assert metric(gw, 'mcgw_rate_limit_entries{table="targets"}') == 1
    assert st["clients"]["rate_tracked"] <= cap


@pytest.mark.timeout(120)
def test_flood_from_many_addresses_memory_is_bounded(mcgw, pki):
    """mcgw's RSS after 4x the table's bound more addresses is what it was
    with the table full: their entries replace evicted ones.

    Keeping them would cost at least 16,384 x 96 bytes (an entry with its
    5-byte key, before malloc's header): 1.5 MiB. Measured on the plain build
    (14 x 1,024-address steps): +128 KiB over the first 2,048 past the
    bound, then flat; the slack, 512 KiB, is four times that and a third of
    the cost of keeping them. Not under ASan: its quarantine and
    allocation-stack depot grow with every connection (+4.7 MiB per 1,024),
    which says nothing about the table. The drained device (flood_gateway)
    keeps every entry from pruning, so none would go but by eviction."""
    gw, cap, _ = flood_gateway(mcgw, pki)
    if sanitized(gw):
        pytest.skip("RSS under ASan measures its quarantine, not the table")
    sources = flood_addresses(5 * cap)
    flood_denied(gw, sources[:cap])
    assert gw.status()["clients"]["rate_tracked"] == cap
    full = rss_kib(gw)
    flood_denied(gw, sources[cap:])
    after = rss_kib(gw)
    print(f"RSS {full} KiB with the table full, {after} KiB after {len(sources) - cap} more")
    assert after - full <= 512, (full, after)
    assert gw.status()["clients"]["rate_tracked"] <= cap
