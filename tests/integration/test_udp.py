"""CONNECT-UDP (RFC 9298) over HTTP/2 extended CONNECT (RFC 8441), with
python3-h2 as an independent client and its own capsule encoding (RFC 9297)
written here, and plain UDP sockets as targets."""

import os
import signal
import socket

import h2.errors
import h2.settings
import pytest

from h2client import H2Client

PREFIX = "/.well-known/masque/udp"


# ---- the test's own capsule encoding (RFC 9000 16 varints, RFC 9297 3.2)

def varint(v):
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return (0x4000 | v).to_bytes(2, "big")
    if v < 1 << 30:
        return (0x80000000 | v).to_bytes(4, "big")
    return (0xC000000000000000 | v).to_bytes(8, "big")


def read_varint(b, i):
    n = 1 << (b[i] >> 6)
    v = b[i] & 0x3F
    for k in range(1, n):
        v = (v << 8) | b[i + k]
    return v, i + n


def capsule(ctype, payload):
    return varint(ctype) + varint(len(payload)) + payload


def datagram(payload, context=0):
    return capsule(0, varint(context) + payload)


def parse_datagrams(body):
    """The UDP payloads in a stream of capsules (complete ones only)."""
    out, i = [], 0
    while i < len(body):
        try:
            t, j = read_varint(body, i)
            n, j = read_varint(body, j)
        except IndexError:
            break
        if j + n > len(body):
            break
        if t == 0:
            ctx, k = read_varint(body, j)
            assert ctx == 0
            out.append(bytes(body[k:j + n]))
        i = j + n
    return out


# ---- helpers

def udp_target():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    return s


def connect_udp(client, host, port, path=None, protocol="connect-udp"):
    sid = client.conn.get_next_available_stream_id()
    headers = [(":method", "CONNECT"), (":protocol", protocol), (":scheme", "https"),
               (":authority", "gateway.test"),
               (":path", path or f"{PREFIX}/{host}/{port}/"), ("capsule-protocol", "?1")]
    client.conn.send_headers(sid, headers)
    from h2client import Stream
    client.streams[sid] = Stream(sid)
    client.flush()
    return client.wait_response(client.streams[sid])


def h2c(gw):
    client = H2Client(gw.proxy_port)
    client.pump(lambda: client.remote_settings_seen, 10, "the gateway's SETTINGS")
    return client


def wait_datagrams(client, stream, n, what):
    client.pump(lambda: len(parse_datagrams(stream.body)) >= n, 10, what)
    return parse_datagrams(stream.body)


@pytest.fixture
def gw_udp(mcgw):
    def start(**tunnel):
        tunnel.setdefault("allow_udp", "127.0.0.1:1-65535")
        return mcgw(**tunnel)
    return start


def rss_kib(gw):
    with open(f"/proc/{gw.proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def closed_record(gw, target):
    return gw.wait_log(lambda r: r.get("msg") == "tunnel_closed" and r.get("type") == "udp"
                       and r.get("target") == target, 10, f"the access log of {target}")


# ---- tests

def test_settings_enable_connect_protocol(gw_udp):
    """mcgw announces SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441 3)."""
    client = h2c(gw_udp())
    assert client.conn.remote_settings.enable_connect_protocol == 1
    client.close()


def test_datagrams_both_ways_h2c(gw_udp):
    """A DATAGRAM capsule's payload reaches the target as one UDP datagram
    from the gateway's connected socket; the target's replies come back as
    DATAGRAM capsules; the access log says type=udp with the counts."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp()
    client = h2c(gw)
    s = connect_udp(client, "127.0.0.1", port)
    assert s.status == 200 and s.headers.get("capsule-protocol") == "?1"
    payloads = [bytes([i]) * (12 + i) for i in range(5)]
    client.send(s, b"".join(datagram(p) for p in payloads))
    got, peer = [], None
    for _ in payloads:
        data, peer = target.recvfrom(2048)
        got.append(data)
    assert got == payloads
    for p in (b"reply-1", b"", b"reply-3" * 100):
        target.sendto(p, peer)
    assert wait_datagrams(client, s, 3, "3 replies") == [b"reply-1", b"", b"reply-3" * 100]
    client.end(s)
    rec = closed_record(gw, f"127.0.0.1:{port}")
    assert rec["result"] == "ok" and rec["proto"] == "h2"
    assert (rec["datagrams_up"], rec["datagrams_down"], rec["dropped"]) == (5, 3, 0)
    assert rec["bytes_up"] == sum(map(len, payloads))
    client.close()


def test_percent_encoded_ipv6_target(gw_udp):
    """target_host as an IPv6 literal with its colons percent-encoded."""
    target = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    target.bind(("::1", 0))
    target.settimeout(10)
    port = target.getsockname()[1]
    gw = gw_udp(allow_udp="[::1]:1-65535")
    client = h2c(gw)
    s = connect_udp(client, None, None, path=f"{PREFIX}/%3A%3A1/{port}/")
    assert s.status == 200
    client.send(s, datagram(b"v6"))
    assert target.recvfrom(100)[0] == b"v6"
    client.close()


def test_unknown_context_and_capsule_type_dropped(gw_udp):
    """A datagram with Context ID 1 and a capsule of an unknown type are
    dropped silently; the next datagram still goes through."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp()
    client = h2c(gw)
    s = connect_udp(client, "127.0.0.1", port)
    client.send(s, datagram(b"ctx1", context=1) + capsule(0x2a, b"unknown") + datagram(b"ok"))
    assert target.recvfrom(100)[0] == b"ok"
    client.end(s)
    rec = closed_record(gw, f"127.0.0.1:{port}")
    assert (rec["datagrams_up"], rec["dropped"]) == (1, 1)


def test_malformed_capsule_resets_only_its_stream(gw_udp):
    """A DATAGRAM capsule too short for its Context ID: RST_STREAM
    (PROTOCOL_ERROR) on that stream; a second stream on the same connection
    goes on."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp()
    client = h2c(gw)
    bad = connect_udp(client, "127.0.0.1", port)
    good = connect_udp(client, "127.0.0.1", port)
    client.send(bad, b"\x00\x00")
    client.pump(lambda: bad.reset_code is not None, 10, "the reset")
    assert bad.reset_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    client.send(good, datagram(b"still here"))
    assert target.recvfrom(100)[0] == b"still here"
    assert good.reset_code is None


def test_reply_from_another_host_not_relayed(gw_udp):
    """Only the target's address and port reach the device: a datagram sent
    from a second socket to the gateway's upstream port is never relayed."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp()
    client = h2c(gw)
    s = connect_udp(client, "127.0.0.1", port)
    client.send(s, datagram(b"hello"))
    _, gateway_addr = target.recvfrom(100)
    stranger = udp_target()
    stranger.sendto(b"intruder", gateway_addr)
    target.sendto(b"genuine", gateway_addr)
    assert wait_datagrams(client, s, 1, "the genuine reply") == [b"genuine"]
    # the stranger's datagram was sent first: had it passed, it came first
    client.send(s, datagram(b"ping"))
    target.recvfrom(100)
    target.sendto(b"second", gateway_addr)
    assert wait_datagrams(client, s, 2, "the second reply") == [b"genuine", b"second"]


@pytest.mark.parametrize("path,status", [
    ("/not/the/template", 404),
    (f"{PREFIX}/127.0.0.1/5004", 404),
    (f"{PREFIX}/127.0.0.1/0/", 400),
    (f"{PREFIX}/127.0.0.1/65536/", 400),
    (f"{PREFIX}/exa%2Fmple/5004/", 400),
    (f"{PREFIX}/255.255.255.255/5004/", 403),
    (f"{PREFIX}/224.0.0.1/5004/", 403),
    (f"{PREFIX}/0.0.0.0/5004/", 403),
    (f"{PREFIX}/127.0.0.1/80/", 403),  # only a TCP rule allows port 80
])
def test_refusals(gw_udp, path, status):
    """Each refusal with its status, on a stream of a connection whose other
    streams are not disturbed."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp(allow_udp=["127.0.0.1:1024-65535", "255.255.255.255:5004", "224.0.0.1:5004",
                           "0.0.0.0:5004"], allow="127.0.0.1:80")
    client = h2c(gw)
    s = connect_udp(client, None, None, path=path)
    assert s.status == status
    ok = connect_udp(client, "127.0.0.1", port)
    assert ok.status == 200


def test_private_address_after_dns_refused(mcgw):
    """A name allowed by allow_udp that resolves to a private address: 403
    without allow_private."""
    gw = mcgw(allow_udp="localhost:5004", allow_private="no")
    client = h2c(gw)
    s = connect_udp(client, "localhost", 5004)
    assert s.status == 403


def test_other_protocol_still_501(gw_udp):
    client = h2c(gw_udp())
    s = connect_udp(client, "127.0.0.1", 5004, protocol="websocket")
    assert s.status == 501


def test_tcp_rule_does_not_permit_udp(mcgw):
    target = udp_target()
    port = target.getsockname()[1]
    gw = mcgw(allow=f"127.0.0.1:{port}")
    s = connect_udp(h2c(gw), "127.0.0.1", port)
    assert s.status == 403


def test_idle_timeout(gw_udp):
    """udp_idle_timeout without a datagram either way ends the tunnel."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp(udp_idle_timeout="1s")
    client = h2c(gw)
    s = connect_udp(client, "127.0.0.1", port)
    client.send(s, datagram(b"x"))
    target.recvfrom(10)
    client.pump(lambda: s.done_receiving, 15, "the idle tunnel to end")
    rec = closed_record(gw, f"127.0.0.1:{port}")
    assert rec["close"] == "idle_timeout"


def test_icmp_unreachable_keeps_tunnel(gw_udp):
    """A target port with nobody behind it answers ICMP port unreachable:
    counted (the access log's icmp_unreachable, the metric
    mcgw_udp_icmp_unreachable_total), and the tunnel stays up (the datagram
    after it still goes)."""
    closed = udp_target()
    port = closed.getsockname()[1]
    closed.close()
    gw = gw_udp()
    client = h2c(gw)
    s = connect_udp(client, "127.0.0.1", port)
    for _ in range(3):
        client.send(s, datagram(b"nobody home"))
        client.pump_once(0.05)
    assert s.reset_code is None and not s.ended
    client.end(s)
    rec = closed_record(gw, f"127.0.0.1:{port}")
    assert rec["result"] == "ok" and rec["close"] == "eof"
    assert rec["datagrams_up"] == 3  # each sent, after the ICMP of the one before
    assert 1 <= rec["icmp_unreachable"] <= 3, rec
    code, _, body = gw.admin("/metrics")
    assert code == 200
    # the gateway's only tunnel: the metric is its count
    assert f'mcgw_udp_icmp_unreachable_total {rec["icmp_unreachable"]}\n' in body.decode()


def test_payload_over_max_dropped(gw_udp):
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp(udp_max_payload="100B")
    client = h2c(gw)
    s = connect_udp(client, "127.0.0.1", port)
    client.send(s, datagram(b"L" * 101) + datagram(b"S" * 100))
    assert target.recvfrom(200)[0] == b"S" * 100
    client.end(s)
    rec = closed_record(gw, f"127.0.0.1:{port}")
    assert (rec["datagrams_up"], rec["dropped"]) == (1, 1)


def test_client_rate_applies(gw_udp):
    """max_new_tunnels_per_client counts CONNECT-UDP requests: past the
    burst, 429 with Retry-After."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp(max_new_tunnels_per_client="1/s", new_tunnels_burst="2")
    client = h2c(gw)
    got = [connect_udp(client, "127.0.0.1", port) for _ in range(3)]
    assert [s.status for s in got] == [200, 200, 429]
    assert "retry-after" in got[2].headers


def test_small_datagrams_bounded_by_count(gw_udp):
    """Towards a device that does not read, at most 64 small datagrams wait
    (64 KiB would hold ~1500 of these): the rest are dropped and counted."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp()
    client = h2c(gw)
    client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024})
    client.flush()
    slow = connect_udp(client, "127.0.0.1", port)
    slow.hold_window = True
    client.send(slow, datagram(b"s"))
    _, peer = target.recvfrom(10)
    for i in range(2000):
        target.sendto(b"%040d" % i, peer)
        if i % 100 == 0:
            client.pump_once(0)
    client.end(slow)
    rec = closed_record(gw, f"127.0.0.1:{port}")
    # 1 KiB window: about 23 capsules of 43 bytes, plus at most 64 waiting
    assert rec["datagrams_down"] <= 1024 // 43 + 1 + 64, rec
    assert rec["dropped"] > 0


def test_limits_apply(gw_udp):
    """max_tunnels_per_client counts UDP tunnels: the next one gets 503."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp(max_tunnels_per_client="2")
    client = h2c(gw)
    a = connect_udp(client, "127.0.0.1", port)
    b = connect_udp(client, "127.0.0.1", port)
    c = connect_udp(client, "127.0.0.1", port)
    assert (a.status, b.status, c.status) == (200, 200, 503)


def test_reload_applies_udp_rules(gw_udp):
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp(allow_udp="127.0.0.1:1-10")
    client = h2c(gw)
    assert connect_udp(client, "127.0.0.1", port).status == 403
    text = gw.config_path.read_text().replace("allow_udp = 127.0.0.1:1-10",
                                              f"allow_udp = 127.0.0.1:{port}")
    gw.config_path.write_text(text)
    since = len(gw.log_records())
    gw.send_signal(signal.SIGHUP)
    gw.wait_log(lambda r: r.get("msg") == "reloaded", 10, "the reload", since=since)
    assert connect_udp(client, "127.0.0.1", port).status == 200


# ---- HTTP/1.1 Upgrade (RFC 9298 3.2), raw sockets

def h1_upgrade(port, path, upgrade="connect-udp", method="GET"):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: gateway.test\r\nConnection: Upgrade\r\n"
                 f"Upgrade: {upgrade}\r\nCapsule-Protocol: ?1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"closed after {head!r}"
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    return sock, head.decode(), bytearray(rest)


def recv_datagrams(sock, buf, n):
    while len(parse_datagrams(buf)) < n:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        buf += chunk
    return parse_datagrams(buf)


def test_h1_upgrade_datagrams_both_ways(gw_udp):
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp()
    sock, head, rest = h1_upgrade(gw.proxy_port, f"{PREFIX}/127.0.0.1/{port}/")
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    assert "Upgrade: connect-udp" in lines and "Connection: Upgrade" in lines
    sock.sendall(datagram(b"one") + datagram(b"two", context=5) + datagram(b"three"))
    assert target.recvfrom(100)[0] == b"one"
    data, peer = target.recvfrom(100)
    assert data == b"three"
    target.sendto(b"back", peer)
    assert recv_datagrams(sock, rest, 1) == [b"back"]
    sock.close()
    rec = closed_record(gw, f"127.0.0.1:{port}")
    assert rec["proto"] == "h1" and rec["status"] == 101
    assert (rec["datagrams_up"], rec["datagrams_down"], rec["dropped"]) == (2, 1, 1)


def test_kernel_drops_counted(gw_udp):
    """A burst from the target while the gateway cannot read (stopped):
    the kernel drops what the tunnel's socket buffer cannot hold. Those
    drops are counted too (receive_overflow), so that what was sent is
    exactly what reached the device plus what was dropped."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp()
    sock, head, buf = h1_upgrade(gw.proxy_port, f"{PREFIX}/127.0.0.1/{port}/")
    assert head.startswith("HTTP/1.1 101"), head
    sock.sendall(datagram(b"hello"))
    _, peer = target.recvfrom(100)
    burst = 3000  # 3 MB of 1,000-byte datagrams: far more than a socket buffer holds
    os.kill(gw.proc.pid, signal.SIGSTOP)
    try:
        for i in range(burst):
            target.sendto(b"%04d" % i + b"x" * 996, peer)
    finally:
        os.kill(gw.proc.pid, signal.SIGCONT)
    target.sendto(b"end", peer)  # sent once the gateway reads again: it gets through
    while b"end" not in parse_datagrams(buf):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        buf += chunk
    got = len(parse_datagrams(buf))
    sock.close()
    rec = closed_record(gw, f"127.0.0.1:{port}")
    assert rec["datagrams_down"] == got, (rec, got)
    assert rec["datagrams_down"] + rec["dropped"] == burst + 1, rec
    overflow = gw.metric('mcgw_udp_datagrams_dropped_total{reason="receive_overflow"}')
    busy = gw.metric('mcgw_udp_datagrams_dropped_total{reason="device_busy"}')
    assert overflow > 0 and overflow + busy == rec["dropped"], (overflow, busy, rec)


@pytest.mark.parametrize("path,upgrade,status", [
    (f"{PREFIX}/127.0.0.1/5004/", "websocket", 405),
    ("/elsewhere/", "connect-udp", 404),
    (f"{PREFIX}/127.0.0.1/0/", "connect-udp", 400),
    (f"{PREFIX}/127.0.0.1/80/", "connect-udp", 403),
])
def test_h1_upgrade_refusals(gw_udp, path, upgrade, status):
    gw = gw_udp(allow_udp="127.0.0.1:1024-65535", allow="127.0.0.1:80")
    sock, head, _ = h1_upgrade(gw.proxy_port, path, upgrade)
    assert head.split("\r\n")[0].split(" ")[1] == str(status)
    sock.close()


def test_h1_malformed_capsule_closes_connection(gw_udp):
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp()
    sock, head, rest = h1_upgrade(gw.proxy_port, f"{PREFIX}/127.0.0.1/{port}/")
    assert " 101 " in head.split("\r\n")[0]
    sock.sendall(b"\x00\x01\x40")
    try:
        assert sock.recv(100) == b""
    except ConnectionResetError:
        pass
    rec = closed_record(gw, f"127.0.0.1:{port}")
    assert rec["close"] == "malformed_capsule"


def test_h2_on_tls_listener(gw_udp, pki):
    """The same over the TLS listener (ALPN h2)."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp(listen_tls="127.0.0.1:0", tls_cert=pki.server_cert, tls_key=pki.server_key)
    client = H2Client(gw.listen_port("proxy_tls"), pki.client_context())
    s = connect_udp(client, "127.0.0.1", port)
    assert s.status == 200
    client.send(s, datagram(b"over tls"))
    data, peer = target.recvfrom(100)
    assert data == b"over tls"
    target.sendto(b"and back", peer)
    assert wait_datagrams(client, s, 1, "the reply") == [b"and back"]
    client.close()


def test_device_not_reading_drops_others_go_on(gw_udp):
    """A device that stops reading one stream (its window held closed):
    datagrams towards it are dropped and counted (device_busy) once 64 KiB
    wait for it, while another stream on the same connection still gets
    every reply."""
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp()
    client = h2c(gw)
    # the device's window per stream: 16 KiB, so a stream it does not read
    # closes after 16 KiB
    client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16384})
    client.flush()
    slow = connect_udp(client, "127.0.0.1", port)
    fast = connect_udp(client, "127.0.0.1", port)
    slow.hold_window = True
    client.send(slow, datagram(b"s"))
    _, slow_peer = target.recvfrom(10)
    client.send(fast, datagram(b"f"))
    _, fast_peer = target.recvfrom(10)
    rss_before = rss_kib(gw)
    for i in range(10000):  # 14 MB: far over the stream window and the 64 KiB bound
        target.sendto(b"x" * 1400, slow_peer)
        if i % 50 == 0:
            client.pump_once(0)
    for i in range(20):
        target.sendto(b"fast %d" % i, fast_peer)
    got = wait_datagrams(client, fast, 20, "every reply on the reading stream")
    assert got == [b"fast %d" % i for i in range(20)]
    # what waits for the slow device is bounded: 14 MB sent, RSS grew far less
    assert rss_kib(gw) - rss_before < 4096, (rss_before, rss_kib(gw))
    client.end(slow)
    client.end(fast)
    closed = lambda: [r for r in gw.log_records() if r.get("msg") == "tunnel_closed"]  # noqa: E731
    client.pump(lambda: len(closed()) >= 2, 10, "both tunnels closed")
    by_sent = sorted(closed(), key=lambda r: r["datagrams_down"])
    assert by_sent[0]["dropped"] == 0 and by_sent[0]["datagrams_down"] == 20
    # the slow one: at most 16 KiB in its window and 64 KiB waiting; the rest dropped
    assert by_sent[1]["bytes_down"] <= 16384 + 65536
    assert by_sent[1]["datagrams_down"] + by_sent[1]["dropped"] > 1000
    # (the kernel may drop some of the burst itself: those mcgw never saw)
    assert by_sent[1]["dropped"] > 0


def test_ops_surface(gw_udp):
    """/status tunnels.by_type, /tunnels' type, the metrics with the type
    label and the datagram counters, and `mcgw status` / `mcgw tunnels`."""
    import json

    import mcgwtest
    target = udp_target()
    port = target.getsockname()[1]
    gw = gw_udp(udp_max_payload="100B")
    client = h2c(gw)
    s = connect_udp(client, "127.0.0.1", port)
    client.send(s, datagram(b"a" * 10) + datagram(b"L" * 101))
    _, peer = target.recvfrom(100)
    target.sendto(b"r", peer)
    wait_datagrams(client, s, 1, "the reply")
    st = gw.status()["tunnels"]
    assert st["by_type"]["udp"]["active"] == 1 and st["by_type"]["tcp"]["active"] == 0
    code, _, body = gw.admin("/tunnels")
    assert code == 200
    doc = json.loads(body)
    rows = doc if isinstance(doc, list) else doc["tunnels"]
    assert [(r["proto"], r["type"]) for r in rows] == [("h2", "udp")]
    code, _, body = gw.admin("/metrics")
    text = body.decode()
    assert 'mcgw_tunnels_active{proto="h2",type="udp"} 1\n' in text
    assert 'mcgw_tunnels_active{proto="h2",type="tcp"} 0\n' in text
    assert 'mcgw_udp_datagrams_total{direction="upstream"} 1\n' in text
    assert 'mcgw_udp_datagrams_total{direction="downstream"} 1\n' in text
    assert 'mcgw_udp_datagrams_dropped_total{reason="too_large"} 1\n' in text
    out = mcgwtest.run_cli("status", "--admin", gw.admin_url)[1]
    assert "(h1 0, h2 1), 1 udp," in out, out
    lines = mcgwtest.run_cli("tunnels", "--admin", gw.admin_url)[1].splitlines()
    assert lines[0].split()[9] == "TYPE" and lines[1].split()[9] == "udp", lines
    client.end(s)
    closed_record(gw, f"127.0.0.1:{port}")
    gw.wait_status(lambda d: d["tunnels"]["by_type"]["udp"]["closed"] == 1, 10, "udp closed 1")
    code, _, body = gw.admin("/metrics")
    assert 'mcgw_tunnels_total{proto="h2",type="udp",result="ok"} 1\n' in body.decode()
