"""HTTP/1.1 CONNECT over the TLS listener with real data, after the 200:
how each end of the device's TLS stream maps to TCP upstream and back
(tunnel/ep_tls.c, README "HTTP/1.1 CONNECT behaviour", docs/architecture.md:
EOF becomes a shutdown on the other side, FIN / close_notify).

- The device's close_notify is its half-close: upstream gets a FIN after
  every byte, and the device still receives the whole reply.
- A bare TCP FIN from the device (no close_notify) is treated the same way:
  the end of its stream, not an error.
- Upstream's FIN reaches the device as a close_notify (then FIN), never as a
  bare FIN: the test client tells the two apart (ssl.SSLEOFError vs a clean
  end), unlike a read that lumps them together.
- A device that stops reading stalls the tunnel: the gateway stops reading
  upstream, holds a bounded amount, and delivers everything byte-exact once
  the device reads again.
The device is a TLS client over MemoryBIOs (mcgwtest.MemoryTLSClient), so the
test decides exactly which records and TCP segments it sends."""

import socket
import time

import pytest

import mcgwtest
from mcgwtest import MiB, pattern, sha256
from sechelp import is_sanitized

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def gw(mcgw, pki):
    gw = mcgw(listen_tls="127.0.0.1:0", tls_cert=pki.server_cert, tls_key=pki.server_key,
              allow="127.0.0.1:*", require_tls="no")
    gw.tls_port = gw.listen_port("proxy_tls")
    return gw


def tls_tunnel(gw, pki, port):
    """A device: TLS to the gateway, CONNECT to 127.0.0.1:port, 200.
    Returns (device, its TCP socket, the client address as logged)."""
    sock = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=60)
    dev = mcgwtest.MemoryTLSClient(pki.client_context(), "localhost")
    dev.attach(sock)
    dev.handshake()
    dev.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = dev.read()
        assert chunk, f"the gateway ended the stream after {head!r}"
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert rest == b""  # nothing from upstream before the device writes
    return dev, sock, "127.0.0.1:%d" % sock.getsockname()[1]


def reply_after_eof(reply):
    """Upstream: reads to EOF (a reset raises), then sends reply and FIN."""
    def handler(conn):
        return mcgwtest.transfer(conn, reply, after_eof=True)
    return handler


@pytest.mark.parametrize("device_end", ["close_notify", "fin"])
def test_device_half_close_then_the_whole_reply(gw, pki, upstream, device_end):
    data, reply = pattern(1 * MiB, 1), pattern(2 * MiB, 2)
    up = upstream(reply_after_eof(reply))
    dev, sock, client = tls_tunnel(gw, pki, up.port)
    dev.write(data)
    if device_end == "close_notify":
        dev.close_notify()
    else:
        sock.shutdown(socket.SHUT_WR)  # a bare FIN: no close_notify first
    got, how = dev.read_to_end()
    # Upstream saw every byte, then a clean EOF (it only replies after one).
    t = up.result()
    assert (t.received_len, t.received_sha) == (len(data), sha256(data))
    assert t.sent_len == len(reply) and t.send_error is None
    # The reply came whole, and ended with the gateway's close_notify.
    assert got == reply
    assert how == "close_notify"
    rec = gw.tunnel_closed(client)
    assert rec["result"] == "ok" and rec["close"] == "eof", rec
    assert (rec["bytes_up"], rec["bytes_down"]) == (len(data), len(reply))
    sock.close()


def test_upstream_fin_first_device_keeps_sending(gw, pki, upstream):
    """Upstream half-closes first: the device gets its greeting and a
    close_notify, and can still send; upstream receives all of it."""
    greeting, data = b"greeting from upstream", pattern(512 * 1024, 3)
    up = upstream(mcgwtest.half_close_first(greeting))
    dev, sock, client = tls_tunnel(gw, pki, up.port)
    got, how = dev.read_to_end()
    assert (got, how) == (greeting, "close_notify")
    dev.write(data)
    dev.close_notify()
    t = up.result()
    assert (t.received_len, t.received_sha) == (len(data), sha256(data))
    rec = gw.tunnel_closed(client)
    assert rec["result"] == "ok" and rec["close"] == "eof", rec
    sock.close()


def test_device_that_stops_reading_stalls_the_tunnel_bounded(gw, pki, upstream):
    size = 64 * MiB
    reply = pattern(size, 4)
    up = upstream(mcgwtest.sink_and_send(size, 4))
    base_rss = gw.rss_kib()
    dev, sock, client = tls_tunnel(gw, pki, up.port)
    # The device reads nothing. The gateway's count of bytes relayed down
    # must stop growing well short of 64 MiB: it stopped reading upstream.
    last, stable_since = -1, None
    deadline = time.monotonic() + 60
    while True:
        down = gw.status()["bytes"]["downstream"]
        if down != last:
            last, stable_since = down, time.monotonic()
        elif time.monotonic() - stable_since >= 2.0:
            break  # unchanged for 2 s of polling: stalled
        assert time.monotonic() < deadline, "the downstream count never settled"
        time.sleep(0.1)  # polling interval, not synchronisation
    # Kernel socket buffers on both hops (autotuned, a few MiB each) plus
    # the relay's 256 KiB high-water mark; far below what upstream offers.
    assert last <= 24 * MiB, last
    if not is_sanitized():  # ASan's quarantine keeps freed memory: RSS says nothing there
        assert gw.rss_kib() - base_rss <= 8 * 1024, "memory bounded while stalled"
    # The device reads again: everything arrives, byte-exact, then close_notify.
    dev.close_notify()  # it sends nothing; upstream's reader gets its EOF
    got, how = dev.read_to_end()
    assert len(got) == size and sha256(got) == sha256(reply)
    assert how == "close_notify"
    t = up.result()
    assert t.sent_len == size and t.send_error is None
    rec = gw.tunnel_closed(client)
    assert rec["close"] == "eof" and rec["bytes_down"] == size, rec
    sock.close()


def test_h2_session_closed_after_the_device_goaway_ends_with_close_notify(gw, pki, upstream):
    """HTTP/2 over the TLS listener: the device finishes (GOAWAY and its
    close_notify); the gateway's side of the stream ends with its own
    close_notify too (RFC 8446 6.1), not a bare FIN."""
    import h2.config
    import h2.connection

    sock = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=30)
    ctx = pki.client_context()
    ctx.set_alpn_protocols(["h2"])
    dev = mcgwtest.MemoryTLSClient(ctx, "localhost")
    dev.attach(sock)
    dev.handshake()
    assert dev.tls.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    dev.write(conn.data_to_send())
    assert dev.read()  # the gateway's SETTINGS: the session is up
    conn.close_connection()
    # GOAWAY and close_notify in one segment: the gateway reads both before
    # it closes (a close_notify arriving after would be unread data, and
    # the kernel would answer it with a reset).
    dev.tls.write(conn.data_to_send())
    dev.close_notify()
    _, how = dev.read_to_end()
    assert how == "close_notify"
    sock.close()
