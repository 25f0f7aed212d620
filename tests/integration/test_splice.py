"""The zero-copy splice(2) relay ([tunnel] splice = auto | always | off).

Each test sets the mode in the config and removes MCGW_SPLICE from the
daemon's environment (that variable overrides the config, so CI can run the
whole suite with either relay path). Every test checks from the metrics
that the path it means to test is the one that ran, and checks bytes
end to end against sha256."""

import contextlib
import os
import select
import socket
import subprocess
import threading
import time

import pytest

import mcgwtest
from mcgwtest import MiB, echo_roundtrip, open_tunnel, pattern, sha256, transfer, wait_until
from sechelp import Gateway, is_sanitized

pytestmark = pytest.mark.timeout(180)

SPLICE_MAX = 256  # TN_SPLICE_MAX: tunnels spliced at once


@pytest.fixture
def gw(tmp_path):
    """gw(mode, **tunnel_keys) -> a started Gateway with [tunnel] splice = mode."""
    started = []

    def start(mode, nofile=None, gateway=None, **tunnel):
        g = Gateway(tmp_path / f"gw{len(started)}", tunnel={"splice": mode, **tunnel},
                    gateway=gateway, nofile=nofile)
        g.env = {k: v for k, v in os.environ.items() if k != "MCGW_SPLICE"}
        started.append(g)
        return g.start()

    yield start
    for g in started:
        g.stop()
    for g in started:
        g.assert_no_sanitizer_report()


def metric(g, name):
    code, _, body = g.admin("/metrics")
    assert code == 200, body
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def local(port):
    return f"127.0.0.1:{port}"


@contextlib.contextmanager
def echo_tunnels(g, port, n):
    """n tunnels to the echo upstream on port, each checked by a round trip
    as it opens, held open together; closed on exit."""
    tunnels = []
    try:
        for i in range(n):
            t = open_tunnel(g.proxy_port, local(port))
            assert t.status == 200, t
            echo_roundtrip(t, b"x%d" % i)
            tunnels.append(t)
        yield tunnels
    finally:
        for t in tunnels:
            t.close()


@pytest.mark.parametrize("mode,spliced", [("always", 1), ("auto", 1), ("off", 0)])
def test_bulk_both_ways_byte_exact(gw, upstream, mode, spliced):
    n = 32 * MiB
    up_data, down_data = pattern(n, 21), pattern(n, 22)
    server = upstream(mcgwtest.sink_and_send(n, seed=22))
    g = gw(mode, allow=local(server.port))
    resp = open_tunnel(g.proxy_port, local(server.port), timeout=60)
    assert resp.status == 200, resp
    got = transfer(resp.sock, up_data, initial=resp.buffered)
    assert got.send_error is None, got.send_error
    assert (got.received_len, got.received_sha) == (n, sha256(down_data))
    theirs = server.result(timeout=60)
    assert (theirs.received_len, theirs.received_sha) == (n, sha256(up_data))
    rec = g.tunnel_closed(resp.client)
    resp.close()
    assert rec["result"] == "ok" and rec["close"] == "eof", rec
    assert (rec["bytes_up"], rec["bytes_down"]) == (n, n), rec
    assert metric(g, "mcgw_tunnels_spliced_total") == spliced
    assert metric(g, "mcgw_tunnels_spliced_active") == 0
    code, _, body = g.admin("/metrics")
    assert f'mcgw_tunnel_bytes_total{{direction="upstream"}} {n}\n' in body.decode()


def test_auto_copies_short_exchanges_then_splices_bulk(gw, echo):
    """auto: an interactive exchange stays on the copy path; once the tunnel
    has carried 256 KiB it moves to splice mid-stream, in order."""
    g = gw("auto", allow=local(echo.port))
    t = open_tunnel(g.proxy_port, local(echo.port))
    assert t.status == 200, t
    for i in range(20):
        echo_roundtrip(t, b"floor request %d" % i)
    assert metric(g, "mcgw_tunnels_spliced_total") == 0
    data = pattern(8 * MiB, 23)  # echoed back through the switch
    got = transfer(t.sock, data, initial=t.buffered)
    assert (got.received_len, got.received_sha) == (len(data), sha256(data))
    assert metric(g, "mcgw_tunnels_spliced_total") == 1
    rec = g.tunnel_closed(t.client)
    t.close()
    assert rec["close"] == "eof", rec


def test_half_close_device_first(gw, upstream):
    """The device ends its side; everything the destination sends after that
    EOF still arrives, then the tunnel ends cleanly."""
    up_n, down_n = 300_000, 16 * MiB
    server = upstream(mcgwtest.sink_and_send(down_n, seed=24, after_eof=True))
    g = gw("always", allow=local(server.port))
    resp = open_tunnel(g.proxy_port, local(server.port))
    assert resp.status == 200, resp
    wait_until(lambda: metric(g, "mcgw_tunnels_spliced_active") == 1, what="the tunnel spliced")
    resp.sock.sendall(pattern(up_n, 25))
    resp.sock.shutdown(socket.SHUT_WR)
    n, digest, _ = mcgwtest.drain(resp.sock, resp.buffered)
    assert (n, digest) == (down_n, sha256(pattern(down_n, 24)))
    theirs = server.result()
    assert (theirs.received_len, theirs.received_sha) == (up_n, sha256(pattern(up_n, 25)))
    rec = g.tunnel_closed(resp.client)
    resp.close()
    assert (rec["result"], rec["close"]) == ("ok", "eof"), rec
    assert (rec["bytes_up"], rec["bytes_down"]) == (up_n, down_n), rec


def test_half_close_destination_first(gw, upstream):
    greeting, up_n = b"greeting then EOF\n", 16 * MiB
    server = upstream(mcgwtest.half_close_first(greeting))
    g = gw("always", allow=local(server.port))
    resp = open_tunnel(g.proxy_port, local(server.port))
    assert resp.status == 200, resp
    _, _, head = mcgwtest.drain(resp.sock, resp.buffered)  # up to the destination's EOF
    assert head == greeting
    got = transfer(resp.sock, pattern(up_n, 26))  # the device's side still carries
    assert got.send_error is None and got.received_len == 0, got
    theirs = server.result()
    assert (theirs.received_len, theirs.received_sha) == (up_n, sha256(pattern(up_n, 26)))
    rec = g.tunnel_closed(resp.client)
    resp.close()
    assert (rec["result"], rec["close"]) == ("ok", "eof"), rec
    assert metric(g, "mcgw_tunnels_spliced_total") == 1


def test_destination_reset_reaches_the_device(gw, upstream):
    server = upstream(mcgwtest.send_then_reset(b"hello"))
    g = gw("always", allow=local(server.port))
    t = open_tunnel(g.proxy_port, local(server.port))
    assert t.status == 200, t
    assert mcgwtest.recv_exactly(t, 5) == b"hello"
    t.sock.sendall(b"!")
    assert server.result() == b"!"
    with pytest.raises(ConnectionResetError):
        t.sock.recv(1)  # a reset, not an EOF that would look like a clean end
    rec = g.tunnel_closed(t.client)
    t.close()
    assert rec["close"] == "reset_up" and (rec["bytes_up"], rec["bytes_down"]) == (1, 5), rec
    assert metric(g, "mcgw_tunnels_spliced_total") == 1


def test_device_reset_reaches_the_destination(gw, echo):
    g = gw("always", allow=local(echo.port))
    t = open_tunnel(g.proxy_port, local(echo.port))
    assert t.status == 200, t
    wait_until(lambda: metric(g, "mcgw_tunnels_spliced_active") == 1, what="the tunnel spliced")
    echo_roundtrip(t, b"before the reset")
    client = t.client
    mcgwtest.reset(t.sock)
    assert isinstance(echo.outcome(), ConnectionResetError)
    rec = g.tunnel_closed(client)
    assert rec["close"] == "reset_down" and (rec["bytes_up"], rec["bytes_down"]) == (16, 16), rec


def test_stalled_device_bounds_what_is_in_flight(gw, upstream):
    """Backpressure: a device that stops reading stops the destination's
    sender once the socket buffers and one pipe are full; mcgw's memory does
    not grow (a spliced tunnel's bytes never enter user space). Then every
    byte arrives in order."""
    n = 256 * MiB
    sent = [0]
    release = threading.Event()

    def sender(conn):
        view = memoryview(pattern(4 * MiB, 27))
        for _ in range(n // len(view)):
            conn.sendall(view)
            sent[0] += len(view)
        conn.shutdown(socket.SHUT_WR)
        release.wait(60)

    server = upstream(sender)
    g = gw("always", allow=local(server.port))
    base_rss = g.rss_kib()
    t = open_tunnel(g.proxy_port, local(server.port))
    assert t.status == 200, t
    # Until the sender makes no progress for 0.5 s (each check waits on a
    # condition with a deadline; no fixed sleep).
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sent[0] != last:
            last, since = sent[0], time.monotonic()
        elif time.monotonic() - since > 0.5:
            break
        select.select([], [], [], 0.05)
    assert 0 < sent[0] < 64 * MiB, f"{sent[0]} bytes sent to a device that reads nothing"
    if not is_sanitized():
        assert g.rss_kib() <= base_rss + 2048, "spliced bytes stay in the kernel"
    got = transfer(t.sock, b"", initial=t.buffered)
    release.set()
    chunk_sha = pattern(4 * MiB, 27) * (n // (4 * MiB))
    assert (got.received_len, got.received_sha) == (n, sha256(chunk_sha))
    t.close()


def test_splice_limit_falls_back_to_copying(gw, echo):
    """Past TN_SPLICE_MAX spliced tunnels, new tunnels copy, and all work."""
    n = SPLICE_MAX + 8
    # 264 tunnels from 127.0.0.1 to one target in a burst: no new-tunnel
    # rates (20/s, burst 50, per client; 200/s per target).
    g = gw("always", allow=local(echo.port), max_tunnels_per_client=1000,
           max_new_tunnels_per_client="0/s", max_new_upstream_per_target="0/s")
    with echo_tunnels(g, echo.port, n) as tunnels:
        assert metric(g, "mcgw_tunnels_spliced_active") == SPLICE_MAX
        assert metric(g, "mcgw_tunnels_spliced_total") == SPLICE_MAX
        for i, t in enumerate(tunnels):
            echo_roundtrip(t, b"again %d" % i)
    g.wait_active(0, timeout=30)
    assert metric(g, "mcgw_tunnels_spliced_active") == 0
    # Descriptors came back: a new tunnel splices again.
    t = open_tunnel(g.proxy_port, local(echo.port))
    echo_roundtrip(t, b"after")
    assert metric(g, "mcgw_tunnels_spliced_total") == SPLICE_MAX + 1
    t.close()


def test_splice_bounded_by_descriptor_limit(gw, echo):
    """RLIMIT_NOFILE 240: at most 240 / 48 = 5 tunnels splice (an eighth of
    the descriptors); the rest copy, and all of them work."""
    g = gw("always", nofile=240, allow=local(echo.port))
    assert g.wait_log(lambda r: r.get("msg") == "nofile_limit")["splice_max"] == 5
    with echo_tunnels(g, echo.port, 12) as tunnels:
        for i, t in enumerate(tunnels):
            echo_roundtrip(t, pattern(300_000, i))
        assert metric(g, "mcgw_tunnels_spliced_active") == 5


def test_pipe_budget_spent_keeps_copying(gw, echo):
    """Run as an unprivileged user ([gateway] user = nobody), mcgw's 1 MiB
    pipes count against the user's pipe budget (fs.pipe-user-pages-soft,
    64 MiB by default): at most 32 tunnels get pipes large enough, the rest
    copy (small pipes would make splice slower than copying), all of them
    work, and the cause is logged once."""
    with open("/proc/sys/fs/pipe-user-pages-soft") as f:
        soft_pages = int(f.read())
    if os.geteuid() != 0 or soft_pages == 0:
        pytest.skip("needs root to drop to nobody, and a pipe budget (fs.pipe-user-pages-soft)")
    fits = soft_pages * 4096 // (2 * 1024 * 1024)  # tunnels with two 1 MiB pipes
    n = fits + 8
    g = gw("always", gateway={"user": "nobody"}, allow=local(echo.port),
           max_tunnels_per_client=1000)
    with echo_tunnels(g, echo.port, n) as tunnels:
        spliced = metric(g, "mcgw_tunnels_spliced_active")
        # At most the budget; less only by pipes other processes of nobody hold.
        assert fits // 2 < spliced <= fits, (spliced, fits)
        for i, t in enumerate(tunnels):
            echo_roundtrip(t, pattern(100_000, i))
    warnings = [r for r in g.find("splice_unavailable") if r.get("level") == "warn"]
    assert len(warnings) == 1 and warnings[0]["error"] == "EPERM", g.find("splice_unavailable")


def test_tls_listener_never_splices(gw, pki, upstream):
    """A TLS listener's tunnels are TLS on the device side: always copied."""
    server = upstream(mcgwtest.echo_handler)
    g = gw("always", allow=local(server.port), listen=None, listen_tls="127.0.0.1:0",
           tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    ctx = pki.client_context()
    raw = socket.create_connection(("127.0.0.1", g.listen_port("proxy_tls")), timeout=30)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(mcgwtest.connect_request(local(server.port)))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
        s.sendall(b"ping")
        assert s.recv(4) == b"ping"
    assert metric(g, "mcgw_tunnels_spliced_total") == 0


def test_bad_mode_is_a_config_error(tmp_path):
    conf = tmp_path / "mcgw.ini"
    conf.write_text("[tunnel]\nlisten = 127.0.0.1:0\nsplice = sometimes\n")
    code, out = mcgwtest.run_cli("check", "-c", conf)
    assert code != 0
    assert f"{conf}:3: splice" in out and "expected auto, always or off" in out, out
    ok = tmp_path / "ok.ini"
    ok.write_text("[tunnel]\nlisten = 127.0.0.1:0\nallow = 127.0.0.1:9\n")
    p = subprocess.run([str(mcgwtest.BIN), "check", "-c", str(ok)], capture_output=True,
                       text=True, timeout=30, env={**os.environ, "MCGW_SPLICE": "on"})
    assert p.returncode != 0
    assert "MCGW_SPLICE='on': expected auto, always or off" in p.stdout + p.stderr, p
