"""HTTP/2 streams against the gateway's limits and timeouts (README,
"HTTP/2 CONNECT behaviour": refusals use the HTTP/1.1 statuses on the
stream, and a refused or failed stream never disturbs the connection's
other streams): max_tunnels and max_tunnels_per_client answer 503 on the
stream past the limit, idle_timeout closes only the idle stream, and the
set-up deadline (header_timeout) holds on h2c connections too. python3-h2
is the client (h2client.py), h2c with prior knowledge on the plain
listener."""

import socket
import time

import pytest

import mcgwtest
from h2client import H2Client
from mcgwtest import pattern

pytestmark = pytest.mark.timeout(120)


def echo_round(client, streams, size=64 * 1024, seed=5):
    """Each stream sends size bytes and gets them echoed back, byte-exact,
    without ending the stream."""
    want = {s.sid: pattern(size, seed + s.sid) for s in streams}
    start = {s.sid: s.received for s in streams}
    for s in streams:
        client.send(s, want[s.sid])
    client.pump(lambda: all(s.received - start[s.sid] >= size for s in streams), 30,
                "the echo on every stream")
    for s in streams:
        assert bytes(s.body[start[s.sid]:]) == want[s.sid], f"stream {s.sid}"


def refused_503(gw, client, stream, reason="tunnel limit reached"):
    client.wait_response(stream)
    assert stream.status == 503, stream.status
    client.pump(lambda: stream.ended, 10, "the 503 body's END_STREAM")
    assert reason in stream.body.decode()
    rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed" and r.get("status") == 503,
                      what="the access-log line of the 503")
    assert rec["result"] == "limit" and rec["proto"] == "h2", rec


def test_max_tunnels_503_on_the_stream_others_unaffected(mcgw, echo):
    gw = mcgw(allow="127.0.0.1:*", require_tls="no", max_tunnels=3, max_tunnels_per_client=3)
    client = H2Client(gw.proxy_port)
    target = f"127.0.0.1:{echo.port}"
    open_ = [client.connect(target) for _ in range(3)]
    for s in open_:
        assert client.wait_response(s).status == 200
    over = client.connect(target)
    refused_503(gw, client, over)
    # The three admitted streams still relay, byte-exact, on the same connection.
    echo_round(client, open_)
    assert client.goaway is None and not client.closed
    # One ends: its slot is free again for a new stream.
    client.end(open_[0])
    client.pump(lambda: open_[0].ended, 10, "the echo's END_STREAM")
    gw.wait_status(lambda st: st["tunnels"]["active"] == 2, 10, "the slot freed")
    again = client.connect(target)
    assert client.wait_response(again).status == 200
    echo_round(client, [again, *open_[1:]], seed=9)
    client.close()


def test_max_tunnels_per_client_503_others_and_other_clients_unaffected(mcgw, echo):
    gw = mcgw(allow="127.0.0.1:*", require_tls="no", max_tunnels_per_client=2)
    target = f"127.0.0.1:{echo.port}"
    a = H2Client(gw.proxy_port)
    mine = [a.connect(target) for _ in range(2)]
    for s in mine:
        assert a.wait_response(s).status == 200
    refused_503(gw, a, a.connect(target))
    # Another client address is counted on its own.
    b = H2Client(gw.proxy_port, source="127.0.0.2")
    theirs = [b.connect(target) for _ in range(2)]
    for s in theirs:
        assert b.wait_response(s).status == 200
    echo_round(a, mine)
    echo_round(b, theirs, seed=11)
    assert a.goaway is None and b.goaway is None
    a.close()
    b.close()


def test_idle_timeout_closes_only_the_idle_stream(mcgw, echo):
    idle = 2.0
    gw = mcgw(allow="127.0.0.1:*", require_tls="no", idle_timeout=f"{int(idle)}s")
    client = H2Client(gw.proxy_port)
    target = f"127.0.0.1:{echo.port}"
    quiet, busy = client.connect(target), client.connect(target)
    for s in (quiet, busy):
        assert client.wait_response(s).status == 200
    t0 = time.monotonic()
    # busy sends a little every 0.5 s (well within idle_timeout); quiet never does.
    sent = bytearray()
    while not quiet.done_receiving:
        assert time.monotonic() - t0 < idle + 15, "the idle stream was never closed"
        chunk = pattern(100, len(sent))
        sent += chunk
        client.send(busy, chunk)
        client.pump(lambda: busy.received == len(sent), 10, "the busy stream's echo")
        client.pump_once(0.5)
    closed_after = time.monotonic() - t0
    assert closed_after >= idle - 0.5, closed_after
    rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed", what="the idle stream's line")
    assert rec["close"] == "idle_timeout" and rec["proto"] == "h2", rec
    # The busy stream is untouched: it still echoes, then ends cleanly.
    assert busy.reset_code is None and not busy.ended
    echo_round(client, [busy], seed=21)
    assert bytes(busy.body[:len(sent)]) == bytes(sent)
    client.end(busy)
    client.pump(lambda: busy.ended, 10, "the busy stream's END_STREAM")
    assert gw.status()["tunnels"]["active"] == 0
    assert client.goaway is None
    client.close()


def test_header_timeout_closes_an_h2c_connection_that_never_sends_its_preface(mcgw):
    """The set-up deadline (header_timeout) covers a plain connection until
    its first bytes tell HTTP/2 from HTTP/1.1: a partial preface is closed
    like a partial HTTP/1.1 head."""
    gw = mcgw(allow="127.0.0.1:*", require_tls="no", header_timeout="2s")
    s = socket.create_connection(("127.0.0.1", gw.proxy_port))
    t0 = time.monotonic()
    s.sendall(b"PRI * HTTP/2.0\r\n")  # the first half of the preface
    s.settimeout(20)
    data = s.recv(4096)
    while data:
        data = s.recv(4096)
    elapsed = time.monotonic() - t0
    # Not before header_timeout; under 8 s tells it from the 10 s default.
    assert 1.8 <= elapsed <= 8.0, elapsed
    s.close()


def test_header_timeout_h2_request_head_never_completed(mcgw, echo):
    """A HEADERS frame without END_HEADERS whose CONTINUATION never comes:
    the request head is not complete within header_timeout (README: else
    408), so the gateway must not keep the connection past it."""
    import hpack  # python3-h2's own dependencies, for framing by hand
    from hyperframe.frame import HeadersFrame, SettingsFrame

    gw = mcgw(allow="127.0.0.1:*", require_tls="no", header_timeout="2s")
    s = socket.create_connection(("127.0.0.1", gw.proxy_port))
    block = hpack.Encoder().encode([(":method", "CONNECT"),
                                    (":authority", f"127.0.0.1:{echo.port}")])
    headers = HeadersFrame(1)
    headers.data = block[:3]  # no END_HEADERS flag: a CONTINUATION should follow
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()
              + headers.serialize())
    t0 = time.monotonic()
    s.settimeout(10)
    got = b""
    try:
        data = s.recv(65536)
        while data:
            got += data
            data = s.recv(65536)
    except (ConnectionResetError, socket.timeout) as e:
        pytest.fail(f"no close within 10 s ({e!r}), header_timeout is 2 s")
    elapsed = time.monotonic() - t0
    assert 1.8 <= elapsed <= 8.0, elapsed
    s.close()


@pytest.mark.timeout(240)
def test_uploads_to_upstreams_that_stop_reading_hold_bounded_memory(mcgw, upstream):
    """20 streams upload to upstreams that accept and then read nothing:
    each stream stalls on its own flow-control window, and what the gateway
    holds stays within the documented bound (per stream: its window plus
    256 KiB) - measured as RSS growth. Once the upstreams read, every upload
    arrives byte-exact."""
    import threading

    from sechelp import is_sanitized

    # 6 MiB a stream: more than the kernel can buffer on the upstream hop
    # (the gateway's send buffer autotunes to tcp_wmem's 4 MiB at most, the
    # upstream's receive buffer is pinned to 64 KiB below), so every stream
    # has to stall on its window with the gateway holding its share.
    n, size, window = 20, 6 * 1024 * 1024, 256 * 1024
    release = threading.Event()

    def late_reader(conn):
        release.wait(120)
        return mcgwtest.Transfer(*mcgwtest.drain(conn), sent_len=0)

    up = upstream(late_reader)
    up.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # accepted ones inherit it
    gw = mcgw(allow="127.0.0.1:*", require_tls="no", h2_stream_window="256KiB")
    base = gw.rss_kib()
    client = H2Client(gw.proxy_port)
    streams = [client.connect(f"127.0.0.1:{up.port}", keep_body=False) for _ in range(n)]
    client.pump(lambda: all(s.status is not None for s in streams), 30, "the responses")
    assert all(s.status == 200 for s in streams)
    data = {s.sid: pattern(size, 100 + i) for i, s in enumerate(streams)}
    for s in streams:
        client.send(s, data[s.sid], end=True)

    def all_stalled():
        return all(s.to_send and client.conn.local_flow_control_window(s.sid) <= 0
                   for s in streams)
    client.pump(all_stalled, 120, "every stream to stall on its window")
    held = gw.status()["bytes"]["upstream"]
    grown = gw.rss_kib() - base
    # Everything relayed so far sits in kernel socket buffers or in the
    # gateway; the gateway's share is bounded per stream.
    assert held < n * size
    if not is_sanitized():
        bound_kib = n * (window + 256 * 1024) // 1024 + 8 * 1024  # + 8 MiB slack
        assert grown <= bound_kib, (grown, bound_kib)
    release.set()
    client.finish(streams, 180)
    got = sorted(up.result(60).received_sha for _ in range(n))
    assert got == sorted(mcgwtest.sha256(d) for d in data.values())
    assert client.goaway is None
    client.close()
