"""HTTP/2 CONNECT (RFC 9113 8.5): many device tunnels multiplexed over one
connection, with python3-h2 as an independent client. TLS (ALPN h2) on a
listen_tls listener, and h2c with prior knowledge on a plain listener."""

import signal
import socket
import threading

import h2.errors
import pytest

import h2client
import mcgwtest
from h2client import H2Client
from mcgwtest import MiB, pattern, sha256


@pytest.fixture
def gw_tls(mcgw, pki):
    """A gateway with a TLS listener (and the default plain one)."""
    def start(**tunnel):
        tunnel.setdefault("allow", "127.0.0.1:*")
        gw = mcgw(listen_tls="127.0.0.1:0", tls_cert=pki.server_cert, tls_key=pki.server_key,
                  **tunnel)
        gw.tls_port = gw._listening("proxy_tls")[0]
        return gw
    return start


def h2_tls(gw, pki):
    return H2Client(gw.tls_port, pki.client_context())


def test_many_streams_byte_exact_over_one_tls_connection(gw_tls, pki, upstream):
    """50 concurrent CONNECT streams on one TLS connection, 8 MiB each way
    on 10 of them and 8 MiB up on the rest, checked by sha256 at both ends."""
    n_streams, size, both_ways = 50, 8 * MiB, 10
    sink = upstream(mcgwtest.sink_and_send(0, 0))
    source = upstream(mcgwtest.sink_and_send(size, 7))
    gw = gw_tls()
    client = h2_tls(gw, pki)
    streams, sent = [], {}
    for i in range(n_streams):
        port = source.port if i < both_ways else sink.port
        s = client.connect(f"127.0.0.1:{port}", keep_body=False)
        streams.append(s)
        sent[s.sid] = pattern(size, 1000 + i)
    client.pump(lambda: all(s.status is not None for s in streams), 30, "50 responses")
    assert all(s.status == 200 for s in streams)
    for s in streams:
        client.send(s, sent[s.sid], end=True)
    client.finish(streams, 240)
    for i, s in enumerate(streams[:both_ways]):
        assert s.received == size and s.sha256 == sha256(pattern(size, 7)), f"stream {i}"
    for s in streams[both_ways:]:
        assert s.received == 0
    got = [source.result(60).received_sha for _ in range(both_ways)]
    got += [sink.result(60).received_sha for _ in range(n_streams - both_ways)]
    assert sorted(got) == sorted(sha256(d) for d in sent.values())
    closed = lambda: [r for r in gw.records if r.get("msg") == "tunnel_closed"]  # noqa: E731
    mcgwtest.wait_until(lambda: len(closed()) >= n_streams, 30, "50 access-log lines")
    closed = closed()
    assert len(closed) == n_streams
    assert all(r["proto"] == "h2" and r["result"] == "ok" and r["close"] == "eof" for r in closed)
    assert sum(r["bytes_up"] for r in closed) == n_streams * size
    assert sum(r["bytes_down"] for r in closed) == both_ways * size
    client.close()


def test_slow_reader_stalls_only_its_own_stream(gw_tls, pki, upstream):
    """A stream whose reader holds its window closed does not hold back the
    others; once it reads again it completes byte-exact."""
    size = 8 * MiB
    source = upstream(mcgwtest.sink_and_send(size, 3))
    gw = gw_tls()
    client = h2_tls(gw, pki)
    slow = client.connect(f"127.0.0.1:{source.port}", keep_body=False)
    slow.hold_window = True
    fast = [client.connect(f"127.0.0.1:{source.port}", keep_body=False) for _ in range(5)]
    client.pump(lambda: all(s.status == 200 for s in [slow, *fast]), 20, "responses")
    for s in [slow, *fast]:
        client.end(s)
    client.pump(lambda: all(s.ended for s in fast), 120, "the fast streams")
    assert all(s.received == size and s.sha256 == sha256(pattern(size, 3)) for s in fast)
    # The slow stream got at most its window (plus what the gateway may
    # buffer for it): it is stalled, not finished.
    assert not slow.ended and slow.received <= 4 * MiB + 1
    client.release(slow)
    client.pump(lambda: slow.ended, 60, "the slow stream")
    assert slow.received == size and slow.sha256 == sha256(pattern(size, 3))
    client.close()


def test_denied_and_reset_streams_leave_the_others_running(gw_tls, pki, upstream, echo):
    hold = threading.Event()

    def outcome(conn):
        hold.wait(20)
        try:
            n = len(mcgwtest.drain(conn)[2])
            return ("eof", n)
        except ConnectionResetError:
            return ("reset", None)

    victim_up = upstream(outcome)
    gw = gw_tls(allow=[f"127.0.0.1:{echo.port}"])
    client = h2_tls(gw, pki)
    ok = client.connect(f"127.0.0.1:{echo.port}")
    denied = client.connect("example.org:443")
    client.wait_response(denied)
    assert denied.status == 403
    client.pump(lambda: denied.ended, 10, "the 403 body")
    assert b"not allowed" in bytes(denied.body)
    client.wait_response(ok)
    assert ok.status == 200
    client.close()

    gw2 = gw_tls()
    client = h2_tls(gw2, pki)
    victim = client.connect(f"127.0.0.1:{victim_up.port}")
    other = client.connect(f"127.0.0.1:{echo.port}")
    client.pump(lambda: victim.status == 200 and other.status == 200, 10, "responses")
    client.send(victim, b"x" * 1000)
    client.reset(victim)
    hold.set()
    assert victim_up.result()[0] == "reset"  # the device's reset reached the destination
    client.send(other, b"still here", end=True)
    client.finish([other], 20)
    assert bytes(other.body) == b"still here"
    rec = gw2.wait_log(lambda r: r.get("msg") == "tunnel_closed" and r.get("close") == "reset_down")
    assert rec["proto"] == "h2"
    client.close()


def test_half_close_device_first(gw_tls, pki, upstream):
    """END_STREAM from the device becomes a FIN upstream; the upstream's
    answer, sent after it saw EOF, still arrives."""
    answer = pattern(1 * MiB, 5)
    up = upstream(mcgwtest.sink_and_send(len(answer), 5, after_eof=True))
    gw = gw_tls()
    client = h2_tls(gw, pki)
    s = client.connect(f"127.0.0.1:{up.port}")
    client.wait_response(s)
    data = pattern(2 * MiB, 6)
    client.send(s, data, end=True)
    client.finish([s], 30)
    assert bytes(s.body) == answer
    assert up.result().received_sha == sha256(data)
    client.close()


def test_half_close_upstream_first(gw_tls, pki, upstream):
    """Upstream EOF becomes END_STREAM; the device keeps sending and the
    upstream receives everything."""
    up = upstream(mcgwtest.half_close_first(b"bye early"))
    gw = gw_tls()
    client = h2_tls(gw, pki)
    s = client.connect(f"127.0.0.1:{up.port}")
    client.wait_response(s)
    client.pump(lambda: s.ended, 10, "END_STREAM from the upstream's EOF")
    assert bytes(s.body) == b"bye early"
    data = pattern(3 * MiB, 9)
    client.send(s, data, end=True)
    client.pump(lambda: client.all_sent([s]), 30, "our data")
    t = up.result()
    assert t.received_sha == sha256(data)
    rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed")
    assert rec["result"] == "ok" and rec["close"] == "eof"
    client.close()


def test_end_stream_then_rst_no_error_keeps_the_live_half(gw_tls, pki, upstream):
    """DATA(END_STREAM) then RST_STREAM(NO_ERROR) from the device: what it
    sent still reaches the destination, followed by a clean FIN, not a
    reset (Envoy PR #45361)."""
    gate = threading.Event()

    def late_reader(conn):
        gate.wait(20)
        return mcgwtest.Transfer(*mcgwtest.drain(conn), sent_len=0)

    up = upstream(late_reader)
    gw = gw_tls()
    client = h2_tls(gw, pki)
    s = client.connect(f"127.0.0.1:{up.port}")
    client.wait_response(s)
    data = pattern(2 * MiB, 11)
    client.send(s, data, end=True)
    client.pump(lambda: not s.to_send and s.sent_end, 20, "our END_STREAM")
    client.reset(s, h2.errors.ErrorCodes.NO_ERROR)
    gate.set()
    t = up.result()  # raises ConnectionResetError if the gateway reset instead
    assert t.received_sha == sha256(data)
    client.close()


def test_upstream_reset_becomes_connect_error(gw_tls, pki, upstream):
    def rst(conn):
        conn.recv(10)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()

    up = upstream(rst)
    gw = gw_tls()
    client = h2_tls(gw, pki)
    s = client.connect(f"127.0.0.1:{up.port}")
    client.wait_response(s)
    client.send(s, b"hello")
    client.pump(lambda: s.reset_code is not None, 10, "RST_STREAM")
    assert s.reset_code == h2.errors.ErrorCodes.CONNECT_ERROR
    client.close()


def test_headers_on_established_stream_is_a_stream_error(gw_tls, pki, echo):
    gw = gw_tls()
    client = h2_tls(gw, pki)
    s = client.connect(f"127.0.0.1:{echo.port}")
    other = client.connect(f"127.0.0.1:{echo.port}")
    client.pump(lambda: s.status == 200 and other.status == 200, 10, "responses")
    client.conn.send_headers(s.sid, [("x-trailer", "1")], end_stream=True)
    client.flush()
    client.pump(lambda: s.reset_code is not None, 10, "RST_STREAM")
    assert s.reset_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    client.send(other, b"ping", end=True)
    client.pump(lambda: other.ended, 10, "the other stream")
    assert bytes(other.body) == b"ping"
    client.close()


def test_malformed_connect_requests(gw_tls, pki, echo):
    gw = gw_tls()
    client = h2_tls(gw, pki)
    with_path = client.connect(f"127.0.0.1:{echo.port}", extra=[(":scheme", "https"), (":path", "/")])
    extended = client.connect(f"127.0.0.1:{echo.port}", extra=[(":protocol", "websocket"),
                                                              (":scheme", "https"), (":path", "/")])
    good = client.connect(f"127.0.0.1:{echo.port}")
    client.pump(lambda: with_path.reset_code is not None and extended.status is not None
                and good.status is not None, 10, "answers")
    assert with_path.reset_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert extended.status == 501
    assert good.status == 200
    client.close()


def test_h2c_prior_knowledge_on_plain_listener(mcgw, echo):
    gw = mcgw(allow="127.0.0.1:*")
    client = H2Client(gw.proxy_port)
    s = client.connect(f"127.0.0.1:{echo.port}")
    client.wait_response(s)
    assert s.status == 200
    client.send(s, b"over h2c", end=True)
    client.pump(lambda: s.ended, 10, "echo")
    assert bytes(s.body) == b"over h2c"
    client.close()
    rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed")
    assert rec["proto"] == "h2" and rec["result"] == "ok"


def test_sigterm_sends_goaway_and_drains_open_streams(gw_tls, pki, upstream):
    size = 4 * MiB
    up = upstream(mcgwtest.sink_and_send(0, 0))
    gw = gw_tls(drain_timeout="20s")
    client = h2_tls(gw, pki)
    s = client.connect(f"127.0.0.1:{up.port}")
    client.wait_response(s)
    data = pattern(size, 21)
    client.send(s, data[: size // 2])
    gw.send_signal(signal.SIGTERM)
    client.pump(lambda: client.goaway is not None, 10, "GOAWAY")
    assert client.goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    client.send(s, data[size // 2:], end=True)
    client.finish([s], 30)
    assert up.result().received_sha == sha256(data)
    assert gw.wait_exit(30) == 0


def test_require_tls_checks_data_sent_before_the_200(gw_tls, pki, upstream):
    """DATA a device sends before it has seen the 200 is held until the
    tunnel is up; with require_tls it is checked as it arrives, so plaintext
    never reaches the destination that way either."""
    import mcgwtest as mt
    up = upstream(mt.sink_and_send(0, 0))
    gw = gw_tls(require_tls="yes")
    client = h2_tls(gw, pki)
    # HEADERS and DATA in one write, so that the DATA arrives while the
    # gateway is still connecting and is held, not relayed at once.
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", f"127.0.0.1:{up.port}")])
    client.conn.send_data(sid, b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n")
    s = client.streams[sid] = h2client.Stream(sid)
    client.flush()
    client.pump(lambda: s.reset_code is not None or s.ended, 10, "the stream to be refused")
    rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed")
    assert rec["result"] == "refused_not_tls"
    assert rec["status"] == 0  # refused before any 200: the held bytes were checked
    assert rec["bytes_up"] == 0
    assert b"/secret" not in bytes(gw.output)
    if up.accepted:  # the connect may have completed; nothing was relayed
        assert up.result().received_len == 0
    client.close()
