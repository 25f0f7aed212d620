"""Fault injection with real processes (issue 7, "Fault injection"): upstream,
resolver and device faults and resource limits. Each test also checks that

- a bystander tunnel opened before the fault still relays afterwards, and a
  fresh tunnel can be opened;
- the gateway holds no connection and no descriptor more than before;
- its RSS comes back to within RSS_SLACK_KIB of the baseline taken after a
  warm-up (not asserted for sanitizer builds, whose quarantine keeps freed
  memory on purpose; LSan checks for leaks there).

RSS_SLACK_KIB, and why: the baseline is taken after a warm-up of 20
concurrent bulk tunnels, which fills the engine's pool of free relay
buffers (at most 2 MiB kept, tunnel/bufpool.c) and glibc's heap. What
remains is allocator behaviour: glibc keeps freed memory below its trim
threshold and cannot return pages behind a live allocation (fragmentation). Measured here: +0.2
to +0.7 MiB after 10,000 connections. 2 MiB leaves room for that and still
catches a leak of 200 bytes per connection in the 10,000-connection test.
"""

import random
import select
import socket
import struct
import threading
import time

import pytest

import mcgwtest
from mcgwtest import (ProxyClosed, Upstream, blackhole, echo_handler, echo_roundtrip,
                      open_tunnel, read_response_head, reset, wait_until)
from sechelp import (gateway_factory, is_sanitized, namespaces_usable, reset_after_reading,
                     send_then_reset, silent, sink_handler, stop_all)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not namespaces_usable(),
                       reason="needs root and unshare -m (a private /etc/hosts per daemon)"),
]

RSS_SLACK_KIB = 2048
SANITIZED = is_sanitized()

TUNNEL = {
    "allow": ["127.0.0.1:*", "127.0.0.2:*", "[::1]:*", "*.mcgw-test:*"],
    "allow_private": "yes",
    "require_tls": "no",  # the faults below send plain test bytes
    "connect_timeout": "3s",
}


class Rig:
    """A gateway, an echo upstream, a bystander tunnel through it, and the
    baseline to come back to."""

    def __init__(self, start, hosts=(), nofile=None, warm=20, **keys):
        self.echo = Upstream(echo_handler)
        self.gw = start(tunnel={**TUNNEL, **keys}, hosts=hosts, nofile=nofile)
        self.warm_up(warm)
        self.bystander = self.tunnel()
        assert self.bystander.status == 200
        echo_roundtrip(self.bystander, b"bystander before")
        self.gw.wait_connections(1)
        self.base_rss = self.gw.rss_kib()
        self.base_fds = self.gw.open_fds()

    def warm_up(self, n):
        """Fills the buffer pool and the heap the way normal traffic does (n
        concurrent bulk tunnels): the baseline is a working gateway's."""
        tunnels = [self.tunnel() for _ in range(n)]
        for i, t in enumerate(tunnels):
            assert t.status == 200
            echo_roundtrip(t, bytes([65 + i % 26]) * 300000)
        for t in tunnels:
            t.close()
        self.gw.wait_connections(0)

    def tunnel(self, target=None, **kw):
        return open_tunnel(self.gw.proxy_port, target or f"127.0.0.1:{self.echo.port}", **kw)

    def after_fault(self, rss_timeout=10):
        """The checks every fault test ends with."""
        echo_roundtrip(self.bystander, b"bystander after: still relaying")
        fresh = self.tunnel()
        assert fresh.status == 200, "a fresh tunnel after the fault"
        echo_roundtrip(fresh, b"fresh tunnel")
        fresh.close()
        self.gw.wait_connections(1)
        wait_until(lambda: self.gw.open_fds() <= self.base_fds, 10,
                   f"descriptors back to {self.base_fds}")
        if SANITIZED:
            return
        limit = self.base_rss + RSS_SLACK_KIB
        wait_until(lambda: self.gw.rss_kib() <= limit, rss_timeout,
                   f"RSS back to {self.base_rss} KiB + {RSS_SLACK_KIB} KiB", interval=0.2)

    def close(self):
        self.bystander.close()
        self.echo.close()


@pytest.fixture
def rig(tmp_path):
    start, daemons = gateway_factory(tmp_path)
    rigs, upstreams = [], []

    def make(**kw):
        r = Rig(start, **kw)
        rigs.append(r)
        return r

    def upstream(handler, host="127.0.0.1"):
        u = Upstream(handler, host=host)
        upstreams.append(u)
        return u

    make.upstream = upstream
    yield make
    for u in upstreams:
        u.close()
    for r in rigs:
        r.close()
    stop_all(daemons)


def assert_closed(gw, client, **fields):
    rec = gw.tunnel_closed(client)
    for k, v in fields.items():
        assert rec[k] == v, rec
    return rec


# ---- upstream faults ----

def test_upstream_resets_during_download(rig):
    r = rig()
    up = rig.upstream(send_then_reset(8 << 20))
    t = r.tunnel(f"127.0.0.1:{up.port}")
    assert t.status == 200
    client = t.client
    got = len(t.read_to_eof())  # ends with the reset passed on, or EOF
    t.close()
    assert got <= 8 << 20
    assert_closed(r.gw, client, close="reset_up")
    r.after_fault()


def test_upstream_resets_during_upload(rig):
    r = rig()
    up = rig.upstream(reset_after_reading(1 << 20))
    t = r.tunnel(f"127.0.0.1:{up.port}")
    assert t.status == 200
    client = t.client
    chunk = b"u" * 65536
    with pytest.raises(OSError):  # EPIPE or ECONNRESET once the reset comes through
        for _ in range(4096):     # 256 MiB: far more than every buffer on the way
            t.sock.sendall(chunk)
    t.close()
    rec = assert_closed(r.gw, client, close="reset_up")
    assert rec["bytes_up"] >= 1 << 20, rec
    r.after_fault()


def test_device_resets_mid_transfer(rig):
    r = rig()
    up = rig.upstream(sink_handler)
    t = r.tunnel(f"127.0.0.1:{up.port}")
    assert t.status == 200
    before = r.gw.status()["bytes"]["upstream"]  # the warm-up's bytes count too
    t.sock.sendall(b"x" * (1 << 20))
    wait_until(lambda: r.gw.status()["bytes"]["upstream"] >= before + (1 << 20),
               what="the upload")
    client = t.client
    reset(t.sock)
    assert_closed(r.gw, client, close="reset_down")
    # Passed on as a reset, not a clean EOF that would look like a complete upload.
    assert isinstance(up.outcome(), ConnectionResetError)
    r.after_fault()


def test_device_resets_while_its_upload_is_in_flight(rig):
    """The reset lands while the gateway is still reading the upload. libuv
    then sometimes reports it as an end of stream (a short read followed by
    POLLHUP); the destination must still see a reset, every time."""
    r = rig()
    up = rig.upstream(sink_handler)
    for _ in range(12):
        t = r.tunnel(f"127.0.0.1:{up.port}")
        assert t.status == 200
        client = t.client
        t.sock.sendall(b"y" * (1 << 20))
        reset(t.sock)
        assert_closed(r.gw, client, close="reset_down")
        got = up.outcome()
        assert isinstance(got, ConnectionResetError), f"the destination saw {got!r}, not a reset"
    r.after_fault()


def test_upstream_silent_stays_up_then_idle_timeout(rig):
    """The upstream accepts and never reads nor writes: the tunnel stays up
    (backpressure stops reading the device; memory stays bounded) until
    idle_timeout closes it."""
    idle = 4.0
    r = rig(idle_timeout=f"{int(idle)}s")
    released = threading.Event()
    up = rig.upstream(silent(released))
    try:
        t = r.tunnel(f"127.0.0.1:{up.port}")
        assert t.status == 200
        s = t.sock
        s.setblocking(False)
        sent, last_progress = 0, time.monotonic()
        first_send = last_progress
        stall_deadline = time.monotonic() + 10
        while time.monotonic() < stall_deadline:  # push until every buffer is full
            try:
                sent += s.send(b"s" * 65536)
                last_progress = time.monotonic()
            except BlockingIOError:
                if time.monotonic() - last_progress > 0.5:
                    break
                select.select([], [s], [], 0.05)
        assert sent > 0
        if not SANITIZED:
            assert r.gw.rss_kib() <= r.base_rss + RSS_SLACK_KIB, "backpressure: bounded memory"
        readable, _, _ = select.select([s], [], [], idle * 0.5)
        assert not readable, "the tunnel closed before idle_timeout"
        assert r.gw.status()["tunnels"]["active"] == 2  # the bystander and this one
        rec = r.gw.tunnel_closed(t.client, timeout=idle + 15)
        closed_at = time.monotonic()
        assert rec["close"] == "idle_timeout", rec
        # Not before idle_timeout: the gateway's last activity on the tunnel
        # lies between the first send and the last one that progressed (it
        # stops reading under backpressure while the kernel's buffers still
        # take our bytes), so the lower bound counts from the first send.
        # The upper bound only has to tell the 4 s setting from the 30 min
        # default, so it leaves 10 s for a loaded 2-core machine (sweep, log
        # polling, scheduling).
        assert closed_at - first_send >= idle - 0.5, closed_at - first_send
        assert closed_at - last_progress <= idle + 10.0, closed_at - last_progress
        t.close()
    finally:
        released.set()
    # The bystander sat idle for longer than idle_timeout too: replace it.
    r.bystander.close()
    r.bystander = r.tunnel()
    assert r.bystander.status == 200
    r.after_fault()


def test_upstream_blackholed_connect_timeout_504(rig):
    r = rig(connect_timeout="1s")
    with blackhole() as port:
        if port is None:
            pytest.skip("this kernel completes connections beyond a full accept queue")
        t0 = time.monotonic()
        t = r.tunnel(f"127.0.0.1:{port}")
        elapsed = time.monotonic() - t0
        client = t.client
        mcgwtest.assert_error_response(t, 504)
        # Not before connect_timeout (1 s); the upper bound only has to tell
        # it from the 10 s default, so it leaves 5 s for a loaded machine.
        assert 0.9 <= elapsed <= 6.0, elapsed
        assert_closed(r.gw, client, result="timeout", connected="-")
    r.after_fault()


def test_resolver_failure_502(rig):
    """A name the resolver cannot answer (not in hosts; nothing answers on
    the nameserver 127.0.0.1): 502, well before connect_timeout."""
    r = rig(connect_timeout="8s")
    t0 = time.monotonic()
    t = r.tunnel("no-such-name.mcgw-test:443")
    client = t.client
    mcgwtest.assert_error_response(t, 502)
    assert time.monotonic() - t0 < 7
    assert_closed(r.gw, client, result="connect_failed", connected="-")
    assert any(x.get("target") == "no-such-name.mcgw-test:443"
               for x in r.gw.find("resolve_failed"))
    r.after_fault()


def test_several_addresses_first_unreachable_next_tried(rig):
    name = "multi.mcgw-test"
    try:  # two loopback addresses for one name; nothing listens on the first
        socket.socket(socket.AF_INET6).bind(("::1", 0))
        addrs = ["::1", "127.0.0.1"]
    except OSError:
        addrs = ["127.0.0.2", "127.0.0.1"]
    r = rig(hosts=[f"{a} {name}" for a in addrs])
    order = r.gw.resolve(name)  # what getaddrinfo gives mcgw, in its order
    assert sorted(order) == sorted(addrs), order
    first, last = order[0], order[-1]
    up = rig.upstream(echo_handler, host=last)
    probe = socket.socket(socket.AF_INET6 if ":" in first else socket.AF_INET)
    assert probe.connect_ex((first, up.port)) != 0, "the first address must be unreachable"
    probe.close()
    t = r.tunnel(f"{name}:{up.port}")
    assert t.status == 200
    echo_roundtrip(t, b"second address")
    client = t.client
    t.close()
    want = f"[{last}]:{up.port}" if ":" in last else f"{last}:{up.port}"
    assert_closed(r.gw, client, connected=want)
    failed = [x["addr"] for x in r.gw.find("connect_attempt_failed")]
    assert any(first in a for a in failed), failed
    r.after_fault()


# ---- device faults ----

def test_device_vanishes_mid_request(rig):
    r = rig()
    s = socket.create_connection(("127.0.0.1", r.gw.proxy_port))
    s.sendall(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0")
    client = "127.0.0.1:%d" % s.getsockname()[1]
    # Reset only once the gateway has it: a connection reset while still in
    # the accept queue may never reach the gateway at all.
    r.gw.wait_connections(2)
    reset(s)
    assert_closed(r.gw, client, result="error", connected="-")
    r.after_fault()


def test_device_vanishes_while_connecting(rig):
    """The device resets while the gateway is still connecting upstream
    (black-holed): the attempt ends at connect_timeout at the latest, and
    nothing is left open."""
    r = rig(connect_timeout="2s")
    with blackhole() as port:
        if port is None:
            pytest.skip("this kernel completes connections beyond a full accept queue")
        s = socket.create_connection(("127.0.0.1", r.gw.proxy_port))
        s.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        client = "127.0.0.1:%d" % s.getsockname()[1]
        r.gw.wait_active(2)
        reset(s)
        assert_closed(r.gw, client, connected="-")
    r.after_fault()


def test_device_vanishes_right_after_connect(rig):
    """The device resets right after sending CONNECT to a live upstream: the
    upstream connection the gateway made is closed too, not orphaned."""
    r = rig()
    up = rig.upstream(sink_handler)
    s = socket.create_connection(("127.0.0.1", r.gw.proxy_port))
    s.sendall(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\n\r\n".encode())
    client = "127.0.0.1:%d" % s.getsockname()[1]
    r.gw.wait_connections(2)
    reset(s)
    rec = r.gw.tunnel_closed(client)
    # ok once relaying; cancelled when the reset came while still connecting
    assert rec["result"] in ("ok", "cancelled", "error"), rec
    if up.accepted:
        up.outcome()  # the upstream's connection ended (EOF or reset), not left open
    r.after_fault()


def test_slowloris_closed_at_header_timeout_408(rig):
    r = rig(header_timeout="3s")
    s = socket.create_connection(("127.0.0.1", r.gw.proxy_port))
    t0 = time.monotonic()
    request = f"CONNECT 127.0.0.1:{r.echo.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    answered = False
    for byte in request:  # one byte a second, for as long as the gateway listens
        try:
            s.send(bytes([byte]))
        except OSError:
            break
        readable, _, _ = select.select([s], [], [], 1.0)
        if readable:
            answered = True
            break
    assert answered, "the whole request went through at one byte a second"
    status, _, _, _ = read_response_head(s)
    elapsed = time.monotonic() - t0
    client = "127.0.0.1:%d" % s.getsockname()[1]
    s.close()
    assert status == 408
    # Not before header_timeout (3 s). The whole request would take ~50 s at
    # one byte a second and the default is 10 s, so anything under 8 s is
    # this setting firing; the rest is headroom for a loaded 2-core machine.
    assert 2.8 <= elapsed <= 8.0, elapsed
    assert_closed(r.gw, client, result="timeout", status=408)
    r.after_fault()


def test_64k_of_headers_431(rig):
    r = rig()
    head = (f"CONNECT 127.0.0.1:{r.echo.port} HTTP/1.1\r\n".encode()
            + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(66)) + b"\r\n")
    assert len(head) > 64 * 1024
    t = open_tunnel(r.gw.proxy_port, request=head, send_in_background=True)
    client = t.client
    mcgwtest.assert_error_response(t, 431)
    assert_closed(r.gw, client, result="bad_request", connected="-")
    assert r.echo.accepted == 21  # the warm-up and the bystander only
    r.after_fault()


def _garbage(rng, kind):
    if kind == "random":
        return rng.randbytes(rng.randint(1, 3000))
    if kind == "tls":  # a ClientHello-looking record with a random body
        body = rng.randbytes(rng.randint(0, 600))
        return b"\x16\x03\x01" + struct.pack(">H", len(body) + 4) + b"\x01\x00" + body
    if kind == "http":
        return rng.choice([b"GET / HTTP/1.1\r\n\r\n", b"CONNECT\r\n\r\n",
                           b"CONNECT a:1 HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                           b"\r\n\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])
    return b""


def test_10000_garbage_connections(rig):
    """Random bytes, TLS junk, HTTP junk, half-open and reset connections,
    200 at a time; then the gateway still works and gives back its memory
    and descriptors. Bounded: the whole flood must finish within 120 s."""
    r = rig(header_timeout="2s")
    rng = random.Random(7)
    total, in_flight_max = 10000, 200
    kinds = ["random"] * 4 + ["tls"] * 3 + ["http"] + ["half_open"] + ["reset"]
    started = done = 0
    live = {}  # fd -> (sock, kind)
    t0 = time.monotonic()
    poller = select.poll()
    while done < total:
        assert time.monotonic() - t0 < 120, f"flood not done in 120 s ({done} done)"
        while started < total and len(live) < in_flight_max:
            kind = rng.choice(kinds)
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", r.gw.proxy_port))
            live[s.fileno()] = (s, kind, False)
            poller.register(s.fileno(), select.POLLOUT | select.POLLIN)
            started += 1
        for fd, ev in poller.poll(100):
            s, kind, sent = live[fd]
            finished = False
            if not sent and ev & select.POLLOUT:
                if kind == "reset":
                    finished = True
                elif kind == "half_open":
                    # Connected, never a byte: only header_timeout ends it.
                    poller.modify(fd, select.POLLIN)
                else:
                    try:
                        s.send(_garbage(rng, kind))
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        finished = True
                    poller.modify(fd, select.POLLIN)
                live[fd] = (s, kind, True)
            elif ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                try:
                    if s.recv(65536) == b"":
                        finished = True
                except BlockingIOError:
                    pass
                except OSError:
                    finished = True
            if finished:
                poller.unregister(fd)
                del live[fd]
                reset(s) if kind == "reset" else s.close()
                done += 1
    elapsed = time.monotonic() - t0
    r.after_fault(rss_timeout=15)
    print(f"10000 garbage connections in {elapsed:.1f}s; RSS {r.gw.rss_kib()} KiB "
          f"(baseline {r.base_rss} KiB)")


# ---- resource limits ----

def test_fd_exhaustion_503_then_recovery(rig):
    """RLIMIT_NOFILE 64: tunnels are opened until descriptors run out. A
    request whose upstream socket cannot be created gets 503; connections
    beyond that are closed at accept (libuv's EMFILE handling). Once tunnels
    close, new ones work again."""
    r = rig(nofile=64)
    idle = socket.create_connection(("127.0.0.1", r.gw.proxy_port))  # 1 descriptor, no request
    r.gw.wait_connections(2)
    held, statuses = [], []
    for _ in range(60):
        try:
            t = r.tunnel()
            status = t.status
        except (ProxyClosed, OSError):
            t, status = None, 0
        statuses.append(status)
        if status == 200:
            held.append(t)
            continue
        if t:
            t.close()
        if status == 503:
            break
        # Out of descriptors at accept: free exactly one (the idle
        # connection) so that the next accept works and its upstream
        # socket cannot be made.
        if idle:
            fds = r.gw.open_fds()
            idle.close()
            idle = None
            wait_until(lambda: r.gw.open_fds() < fds, what="the idle connection to close")
    assert held, statuses
    assert 503 in statuses, statuses
    r.gw.wait_log(lambda x: x.get("msg") in ("connect_resource_error", "accept_failed")
                  and x.get("error") in ("EMFILE", "ENFILE"), what="a descriptor shortage record")
    for t in held:
        t.close()
    if idle:
        idle.close()

    def works():  # recovery: new tunnels work once descriptors are free again
        try:
            t = r.tunnel()
        except (ProxyClosed, OSError):
            return False
        t.close()
        return t.status == 200

    wait_until(works, 15, "a tunnel to work again", interval=0.2)
    r.after_fault()


# ---- a device vanishing mid-TLS on listen_tls ----
# Each: the gateway had the connection (connections_active counted it), the
# device resets it; after_fault() then waits for connections_active to be
# back to the bystander's 1 and the descriptors to the baseline.

def tls_rig(rig, pki):
    r = rig(listen_tls="127.0.0.1:0", tls_cert=pki.server_cert, tls_key=pki.server_key)
    r.tls_port = r.gw._listening("proxy_tls")[0]
    return r


def tls_device(r, pki):
    """A raw socket to listen_tls and a TLS client driven over it (so that
    the test can reset the TCP connection under the TLS session)."""
    sock = socket.create_connection(("127.0.0.1", r.tls_port), timeout=30)
    tls = mcgwtest.MemoryTLSClient(pki.client_context(), "localhost")
    tls.attach(sock)
    return sock, tls


def test_device_vanishes_mid_client_hello_on_listen_tls(rig, pki):
    r = tls_rig(rig, pki)
    sock, tls = tls_device(r, pki)
    hello = tls.client_hello()
    sock.sendall(hello[: len(hello) // 2])
    r.gw.wait_connections(2)  # the bystander and this one
    reset(sock)
    r.after_fault()  # back to the bystander's connection only, and its descriptors


def test_device_vanishes_mid_request_head_on_listen_tls(rig, pki):
    r = tls_rig(rig, pki)
    sock, tls = tls_device(r, pki)
    tls.handshake()
    tls.write(f"CONNECT 127.0.0.1:{r.echo.port} HTTP/1.1\r\nHost: 127.0".encode())
    r.gw.wait_connections(2)
    reset(sock)
    r.after_fault()
    assert r.echo.accepted == 22, "the half request reached no upstream"  # warm-up, bystander, fresh


def test_device_vanishes_from_open_tunnel_on_listen_tls(rig, pki):
    r = tls_rig(rig, pki)
    up = rig.upstream(sink_handler)
    sock, tls = tls_device(r, pki)
    tls.handshake()
    tls.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += tls._run(lambda: tls.tls.read(65536))
    assert head.startswith(b"HTTP/1.1 200"), head
    tls.write(b"x" * 300000)
    wait_until(lambda: r.gw.status()["bytes"]["upstream"] >= 300000, what="the upload")
    client = "127.0.0.1:%d" % sock.getsockname()[1]
    reset(sock)
    rec = r.gw.tunnel_closed(client)
    assert rec["close"] == "reset_down", rec
    # The upstream connection is closed too (reset passed on, or EOF).
    outcome = up.outcome()
    assert isinstance(outcome, (int, ConnectionResetError)), outcome
    r.after_fault()
