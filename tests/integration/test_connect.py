"""The CONNECT relay end to end: real daemon, real sockets, loopback only."""

import concurrent.futures
import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

import mcgwtest
from mcgwtest import (MiB, RESULT_FOR_STATUS, MemoryTLSClient, UPSTREAM_BODY,
                      assert_error_response, echo_roundtrip, open_tunnel, pattern,
                      sha256, transfer, wait_until)


def local(port):
    return f"127.0.0.1:{port}"


def assert_refused(daemon, resp, status):
    """An error response with `status`, and its access-log record."""
    client = resp.client
    body = assert_error_response(resp, status)
    rec = daemon.tunnel_closed(client)
    assert rec["status"] == status, rec
    assert rec["result"] == RESULT_FOR_STATUS[status], rec
    assert rec["bytes_up"] == 0 and rec["bytes_down"] == 0, rec
    return body


def curl_through(proxy_port, url, cacert):
    mcgwtest.require_tool("curl")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        ["curl", "-sS", "-p", "-x", f"http://127.0.0.1:{proxy_port}", "--cacert", str(cacert),
         "--max-time", "30", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)


# ---------------------------------------------------------------- TLS end to end


def test_curl_https_through_tunnel(mcgw, tls_upstream, pki):
    target = f"localhost:{tls_upstream.port}"
    daemon = mcgw(allow=target, require_tls="yes")
    p = curl_through(daemon.proxy_port, f"https://{target}/", pki.ca_cert)
    assert p.returncode == 0, p.stderr
    assert p.stdout == UPSTREAM_BODY
    assert tls_upstream.result().startswith(b"GET / HTTP/1.1\r\n")
    rec = daemon.wait_log(lambda r: r.get("msg") == "tunnel_closed")
    assert rec["result"] == "ok" and rec["status"] == 200, rec
    assert rec["target"] == target, rec


def test_curl_with_another_ca_fails(mcgw, tls_upstream, pki):
    """The proxy relays the upstream's own certificate: a client trusting a
    different CA refuses it (mcgw does not terminate TLS)."""
    target = f"localhost:{tls_upstream.port}"
    daemon = mcgw(allow=target, require_tls="yes")
    p = curl_through(daemon.proxy_port, f"https://{target}/", pki.other_ca_cert)
    assert p.returncode == 60, (p.returncode, p.stderr)  # CURLE_PEER_FAILED_VERIFICATION
    assert p.stdout == b""
    rec = daemon.wait_log(lambda r: r.get("msg") == "tunnel_closed")
    assert rec["status"] == 200, rec  # the tunnel itself was established


def test_pipelined_client_hello(mcgw, tls_upstream, pki):
    """CONNECT and the ClientHello in one write; the handshake completes with
    the upstream through the tunnel."""
    target = f"localhost:{tls_upstream.port}"
    daemon = mcgw(allow=target, require_tls="yes")
    client = MemoryTLSClient(pki.client_context(), "localhost")
    hello = client.client_hello()
    resp = open_tunnel(daemon.proxy_port, target, payload=hello)
    assert resp.status == 200, resp
    client.attach(resp.sock, resp.buffered)
    client.handshake()
    assert client.tls.getpeercert()["subject"] == ((("commonName", "localhost"),),)
    client.write(b"GET /pipelined HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert client.read_to_eof().endswith(b"\r\n\r\n" + UPSTREAM_BODY)
    assert tls_upstream.result().startswith(b"GET /pipelined HTTP/1.1\r\n")
    conn_client = resp.client
    resp.close()
    rec = daemon.tunnel_closed(conn_client)
    assert rec["result"] == "ok", rec
    assert rec["bytes_up"] >= len(hello), rec


@pytest.mark.parametrize("pipelined", [False, True], ids=["after-200", "pipelined"])
def test_require_tls_refuses_plaintext(mcgw, echo, pipelined):
    marker = f"MARKER-{uuid.uuid4().hex}"
    plaintext = (f"GET /{marker} HTTP/1.1\r\nHost: {marker}.example\r\n"
                 f"User-Agent: {marker}\r\n\r\n").encode()
    daemon = mcgw(allow=local(echo.port), require_tls="yes")
    if pipelined:
        # Closed at once, or after the 200 at most.
        client, reply = mcgwtest.raw_exchange(
            daemon.proxy_port, mcgwtest.connect_request(local(echo.port)) + plaintext)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 200 "), reply
    else:
        resp = open_tunnel(daemon.proxy_port, local(echo.port))
        assert resp.status == 200, resp
        resp.sock.sendall(plaintext)
        client = resp.client
        reply = resp.read_to_eof()  # the tunnel is closed
        assert reply == b"", reply
    assert marker.encode() not in reply
    rec = daemon.tunnel_closed(client)
    assert rec["result"] == "refused_not_tls", rec
    assert rec["bytes_up"] == 0 and rec["bytes_down"] == 0, rec
    if rec.get("connected") not in (None, "", "-"):  # if made, the upstream got nothing
        assert echo.result() == b"", "plaintext reached the upstream"
    assert marker.encode() not in daemon.output, "payload bytes were logged"


# ---------------------------------------------------------------- byte relay


@pytest.mark.timeout(300)
def test_64mib_each_way(mcgw, upstream):
    n = 64 * MiB
    up_data, down_data = pattern(n, 1), pattern(n, 2)
    server = upstream(mcgwtest.sink_and_send(n, seed=2))
    daemon = mcgw(allow=local(server.port))
    resp = open_tunnel(daemon.proxy_port, local(server.port), timeout=60)
    assert resp.status == 200, resp
    got = transfer(resp.sock, up_data, initial=resp.buffered)
    client = resp.client
    resp.close()
    assert got.send_error is None, got.send_error
    assert (got.received_len, got.received_sha) == (n, sha256(down_data))
    theirs = server.result(timeout=60)
    assert theirs.send_error is None, theirs.send_error
    assert (theirs.received_len, theirs.received_sha) == (n, sha256(up_data))
    rec = daemon.tunnel_closed(client)
    assert (rec["bytes_up"], rec["bytes_down"]) == (n, n), rec


def test_half_close_client_first(mcgw, upstream):
    """The client shuts down its write side first and still receives all the
    upstream sends after seeing that EOF."""
    up_n, down_n = 100_000, 4 * MiB
    server = upstream(mcgwtest.sink_and_send(down_n, seed=3, after_eof=True))
    daemon = mcgw(allow=local(server.port))
    resp = open_tunnel(daemon.proxy_port, local(server.port))
    assert resp.status == 200, resp
    resp.sock.sendall(pattern(up_n, 4))
    resp.sock.shutdown(socket.SHUT_WR)
    n, digest, _ = mcgwtest.drain(resp.sock, resp.buffered)
    assert (n, digest) == (down_n, sha256(pattern(down_n, 3)))
    theirs = server.result()
    assert (theirs.received_len, theirs.received_sha) == (up_n, sha256(pattern(up_n, 4)))
    rec = daemon.tunnel_closed(resp.client)
    assert rec["result"] == "ok" and (rec["bytes_up"], rec["bytes_down"]) == (up_n, down_n), rec
    resp.close()


def test_half_close_upstream_first(mcgw, upstream):
    """The upstream shuts down first; the client keeps sending and the
    upstream receives it all."""
    greeting, up_n = b"greeting then EOF\n", 4 * MiB
    server = upstream(mcgwtest.half_close_first(greeting))
    daemon = mcgw(allow=local(server.port))
    resp = open_tunnel(daemon.proxy_port, local(server.port))
    assert resp.status == 200, resp
    _, _, head = mcgwtest.drain(resp.sock, resp.buffered)  # up to the upstream's EOF
    assert head == greeting
    got = transfer(resp.sock, pattern(up_n, 5))  # the write side still works
    assert got.send_error is None and got.received_len == 0, got
    theirs = server.result()
    assert (theirs.received_len, theirs.received_sha) == (up_n, sha256(pattern(up_n, 5)))
    rec = daemon.tunnel_closed(resp.client)
    assert rec["result"] == "ok", rec
    assert (rec["bytes_up"], rec["bytes_down"]) == (up_n, len(greeting)), rec
    resp.close()


def test_access_log_fields(mcgw, upstream):
    up_n, down_n = 12_345, 54_321
    server = upstream(mcgwtest.sink_and_send(down_n, seed=6))
    daemon = mcgw(allow=local(server.port))
    started = time.monotonic()
    resp = open_tunnel(daemon.proxy_port, local(server.port))
    assert resp.status == 200, resp
    got = transfer(resp.sock, pattern(up_n, 7), initial=resp.buffered)
    elapsed_ms = (time.monotonic() - started) * 1000
    assert got.received_len == down_n
    client = resp.client
    resp.close()
    rec = daemon.tunnel_closed(client)
    assert isinstance(rec["ts"], str) and isinstance(rec["level"], str), rec
    assert isinstance(rec["id"], int), rec
    assert rec["target"] == local(server.port), rec
    assert rec["connected"] == local(server.port), rec
    assert rec["result"] == "ok" and rec["status"] == 200, rec
    assert isinstance(rec["close"], str) and rec["close"], rec
    assert (rec["bytes_up"], rec["bytes_down"]) == (up_n, down_n), rec
    assert isinstance(rec["duration_ms"], int) and 0 <= rec["duration_ms"] <= elapsed_ms + 1000, rec
    # A second tunnel gets another id.
    resp2 = open_tunnel(daemon.proxy_port, local(server.port))
    transfer(resp2.sock, b"", initial=resp2.buffered)
    client2 = resp2.client
    resp2.close()
    assert daemon.tunnel_closed(client2)["id"] != rec["id"]


def test_pipelined_payload_is_relayed(mcgw, upstream):
    """Bytes sent with the CONNECT, before the 200, reach the upstream."""
    n = MiB
    data = pattern(n, 11)
    server = upstream(mcgwtest.sink_and_send(0, seed=10))
    daemon = mcgw(allow=local(server.port))
    resp = open_tunnel(daemon.proxy_port, local(server.port), payload=data)
    assert resp.status == 200, resp
    got = transfer(resp.sock, b"", initial=resp.buffered)
    assert got.received_len == 0, got
    theirs = server.result()
    assert (theirs.received_len, theirs.received_sha) == (n, sha256(data))
    rec = daemon.tunnel_closed(resp.client)
    assert (rec["bytes_up"], rec["bytes_down"]) == (n, 0), rec
    resp.close()


def test_client_reset_closes_upstream(mcgw, echo):
    daemon = mcgw(allow=local(echo.port))
    t = open_tunnel(daemon.proxy_port, local(echo.port))
    assert t.status == 200, t
    echo_roundtrip(t, b"before the reset")
    client = t.client
    mcgwtest.reset(t.sock)
    outcome = echo.outcome()  # the upstream connection ended: EOF or reset
    assert outcome == b"before the reset" or isinstance(outcome, ConnectionResetError), outcome
    rec = daemon.tunnel_closed(client)
    assert (rec["bytes_up"], rec["bytes_down"]) == (16, 16), rec


def test_upstream_reset_closes_client(mcgw, upstream):
    server = upstream(mcgwtest.send_then_reset(b"hello"))
    daemon = mcgw(allow=local(server.port))
    t = open_tunnel(daemon.proxy_port, local(server.port))
    assert t.status == 200, t
    assert mcgwtest.recv_exactly(t, 5) == b"hello"
    t.sock.sendall(b"!")
    assert server.result() == b"!"
    assert t.read_to_eof() == b""  # EOF or reset
    client = t.client
    t.close()
    rec = daemon.tunnel_closed(client)
    assert (rec["bytes_up"], rec["bytes_down"]) == (1, 5), rec


def test_ipv6_target(mcgw, upstream):
    server = upstream(mcgwtest.echo_handler, host="::1")
    target = f"[::1]:{server.port}"
    daemon = mcgw(allow=target)
    t = open_tunnel(daemon.proxy_port, target)
    assert t.status == 200, t
    echo_roundtrip(t, b"over IPv6")
    client = t.client
    t.close()
    rec = daemon.tunnel_closed(client)
    assert rec["target"] == target and rec["connected"] == target, rec


@pytest.mark.parametrize("rule, target, status", [
    ("localhost:{port}", "localhost:{port}", 200),
    ("localhost:{port}", "LOCALHOST:{port}", 200),
    ("LocalHost.:{port}", "localhost:{port}", 200),
    ("localhost:*", "localhost:{port}", 200),
    ("127.0.0.1:{port}", "127.0.0.1:{port}", 200),
    ("127.0.0.0/8:{port}", "127.0.0.1:{port}", 200),
    ("127.0.0.0/8:{port}", "localhost:{port}", 403),  # CIDR rules match IP literals only
    ("localhost:{port}", "127.0.0.1:{port}", 403),
    ("*.localhost:{port}", "localhost:{port}", 403),  # a suffix rule excludes the apex
    ("localhost:{other}", "localhost:{port}", 403),
])
def test_allow_rules(mcgw, echo, rule, target, status):
    fmt = {"port": echo.port, "other": echo.port % 65535 + 1}
    daemon = mcgw(allow=rule.format(**fmt))
    resp = open_tunnel(daemon.proxy_port, target.format(**fmt))
    if status != 200:
        assert_refused(daemon, resp, status)
        assert echo.accepted == 0
        return
    assert resp.status == 200, resp
    echo_roundtrip(resp, b"allowed")
    resp.close()


# ---------------------------------------------------------------- error statuses


def test_400_junk_request_line(mcgw):
    daemon = mcgw(allow="localhost:443")
    resp = open_tunnel(daemon.proxy_port, request=b"THIS IS NOT HTTP AT ALL\r\n\r\n")
    assert_refused(daemon, resp, 400)


@pytest.mark.parametrize("authority", [
    "127.1:443",            # not a strict dotted quad
    "2130706433:443",       # an IPv4 address as one number
    "localhost",            # no port
    "localhost:0",
    "localhost:65536",
    "user@localhost:443",   # userinfo
    "[::1%lo]:443",         # zone id
])
def test_400_bad_authority(mcgw, authority):
    daemon = mcgw(allow=["localhost:*", "127.0.0.0/8:443"])
    resp = open_tunnel(daemon.proxy_port, authority)
    assert_refused(daemon, resp, 400)


def test_403_not_in_allowlist(mcgw, echo):
    daemon = mcgw(allow=["example.org:443", f"127.0.0.2:{echo.port}"])
    resp = open_tunnel(daemon.proxy_port, local(echo.port))
    assert_refused(daemon, resp, 403)
    assert echo.accepted == 0


def test_403_private_target_without_allow_private(mcgw, echo):
    daemon = mcgw(allow=[local(echo.port), f"localhost:{echo.port}"], allow_private="no")
    for target in (local(echo.port), f"localhost:{echo.port}"):
        resp = open_tunnel(daemon.proxy_port, target)
        assert_refused(daemon, resp, 403)
    assert echo.accepted == 0


def test_405_other_method(mcgw):
    daemon = mcgw(allow="localhost:80")
    resp = open_tunnel(daemon.proxy_port,
                       request=b"GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert resp.header("allow") == "CONNECT", resp.headers
    assert_refused(daemon, resp, 405)


def filler_headers(size):
    """About `size` bytes of header lines."""
    return [f"X-Filler-{i:04d}: {'a' * 100}" for i in range(size // 117 + 1)]


def test_431_headers_too_large(mcgw, echo):
    daemon = mcgw(allow=local(echo.port))
    # 12 KiB of headers is within the 16 KiB limit...
    ok = open_tunnel(daemon.proxy_port, local(echo.port), headers=filler_headers(12 * 1024))
    assert ok.status == 200, ok
    ok.close()
    echo.result()
    # ...64 KiB is not.
    resp = open_tunnel(daemon.proxy_port, local(echo.port), headers=filler_headers(64 * 1024),
                       send_in_background=True)
    assert_refused(daemon, resp, 431)
    assert echo.accepted == 1


def test_502_nothing_listening(mcgw):
    port = mcgwtest.free_port()
    daemon = mcgw(allow=local(port))
    resp = open_tunnel(daemon.proxy_port, local(port))
    assert_refused(daemon, resp, 502)


@pytest.mark.skipif(not mcgwtest.DNS_ISOLATED,
                    reason="needs root and unshare to keep the lookup on this machine")
def test_502_unresolvable_name(mcgw):
    # .invalid never resolves (RFC 6761); the daemon's resolver is 127.0.0.1
    # only (mcgwtest.loopback_dns_prefix), so the lookup fails locally.
    daemon = mcgw(allow="nonexistent.invalid:443")
    resp = open_tunnel(daemon.proxy_port, "nonexistent.invalid:443")
    assert_refused(daemon, resp, 502)


def test_503_max_tunnels(mcgw, echo):
    # mcgw refuses max_tunnels_per_client > max_tunnels, so both are 1; the
    # second tunnel comes from another client address, so only the global
    # limit can refuse it.
    daemon = mcgw(allow=local(echo.port), max_tunnels=1, max_tunnels_per_client=1)
    held = open_tunnel(daemon.proxy_port, local(echo.port))
    assert held.status == 200, held
    echo_roundtrip(held, b"held")
    refused = open_tunnel(daemon.proxy_port, local(echo.port), source="127.0.0.2")
    assert_refused(daemon, refused, 503)
    echo_roundtrip(held, b"still fine")  # the held tunnel is not disturbed
    held.close()
    daemon.wait_active(0)
    again = open_tunnel(daemon.proxy_port, local(echo.port))
    assert again.status == 200, again
    echo_roundtrip(again, b"x")
    again.close()


def test_503_max_tunnels_per_client(mcgw, echo):
    daemon = mcgw(allow=local(echo.port), max_tunnels_per_client=1)
    held = open_tunnel(daemon.proxy_port, local(echo.port))
    assert held.status == 200, held
    echo_roundtrip(held, b"held")
    refused = open_tunnel(daemon.proxy_port, local(echo.port))
    assert_refused(daemon, refused, 503)
    # Another client address is not limited by the first one's tunnel.
    other = open_tunnel(daemon.proxy_port, local(echo.port), source="127.0.0.2")
    assert other.status == 200, other
    echo_roundtrip(other, b"other client")
    other.close()
    held.close()
    daemon.wait_active(0)
    again = open_tunnel(daemon.proxy_port, local(echo.port))  # the slot was released
    assert again.status == 200, again
    again.close()


def test_504_connect_timeout(mcgw):
    with mcgwtest.blackhole() as port:
        if port is None:
            pytest.skip("no local blackhole: the kernel accepted every connection "
                        "to a full backlog-0 listener")
        daemon = mcgw(allow=local(port), connect_timeout="1s")
        started = time.monotonic()
        resp = open_tunnel(daemon.proxy_port, local(port))
        elapsed = time.monotonic() - started
        assert_refused(daemon, resp, 504)
    assert 0.8 <= elapsed < 8, elapsed


def test_408_header_timeout(mcgw, echo):
    daemon = mcgw(allow=local(echo.port), header_timeout="1s")
    idle = open_tunnel(daemon.proxy_port, local(echo.port))
    assert idle.status == 200, idle
    started = time.monotonic()
    resp = open_tunnel(daemon.proxy_port,
                       request=b"CONNECT localhost:443 HTTP/1.1\r\nHost: local")
    elapsed = time.monotonic() - started
    assert_refused(daemon, resp, 408)
    assert 0.8 <= elapsed < 8, elapsed
    # header_timeout does not apply to an established tunnel, idle as long.
    echo_roundtrip(idle, b"still open")
    idle.close()


# ---------------------------------------------------------------- scale, admin, drain


@pytest.mark.timeout(300)
def test_1000_tunnels_at_once(mcgw, echo):
    n = 1000
    assert mcgwtest.raise_nofile_limit() > 2 * n + 100, "RLIMIT_NOFILE hard limit too low"
    # All from 127.0.0.1 to one target, as fast as the client goes: lift the
    # per-client limit (256 by default) and the new-tunnel rates (20/s,
    # burst 50, per client; 200/s per target).
    daemon = mcgw(allow=local(echo.port), max_tunnels_per_client=2 * n,
                  max_new_tunnels_per_client="0/s", max_new_upstream_per_target="0/s")
    tunnels = []
    try:
        for i in range(n):
            t = open_tunnel(daemon.proxy_port, local(echo.port))
            assert t.status == 200, (i, t)
            tunnels.append(t)
        for i, t in enumerate(tunnels):
            echo_roundtrip(t, bytes([i % 256]))
        st = daemon.status()
        assert st["tunnels"]["active"] >= n, st
    finally:
        for t in tunnels:
            t.close()
    st = daemon.wait_active(0, timeout=60)
    assert st["tunnels"]["total"] >= n, st


def test_status_counts_open_tunnels(mcgw, echo):
    daemon = mcgw(allow=local(echo.port))
    st = daemon.status()
    assert isinstance(st["version"], str) and st["version"] in mcgwtest.run_cli("--version")[1]
    assert isinstance(st["uptime_s"], int) and st["uptime_s"] >= 0, st
    counts = (st["tunnels"]["active"], st["tunnels"]["total"], st["clients"]["active"])
    assert counts == (0, 0, 0), st
    held = []
    for i in range(3):
        t = open_tunnel(daemon.proxy_port, local(echo.port))
        assert t.status == 200, t
        echo_roundtrip(t, b"%d" % i)
        held.append(t)
    st = daemon.status()
    assert st["tunnels"]["active"] == 3 and st["tunnels"]["total"] == 3, st
    assert st["clients"]["active"] == 1, st
    for t in held:
        t.close()
    st = daemon.wait_active(0)
    assert st["tunnels"]["total"] == 3 and st["clients"]["active"] == 0, st


def test_admin_healthz_and_errors(mcgw):
    daemon = mcgw(allow="localhost:443")
    code, _, body = daemon.admin("/healthz")
    assert (code, body.strip()) == (200, b"ok")
    code, _, _ = daemon.admin("/no-such-path")
    assert code == 404
    for method, path in (("POST", "/status"), ("DELETE", "/healthz")):
        code, _, _ = daemon.admin(path, method=method)
        assert code == 405, (method, path)


@pytest.mark.timeout(180)
def test_sigterm_drains_open_tunnel(mcgw, upstream):
    n, half = 16 * MiB, 8 * MiB
    up_data = pattern(n, 8)
    server = upstream(mcgwtest.sink_and_send(n, seed=9))
    daemon = mcgw(allow=local(server.port), drain_timeout="60s")
    resp = open_tunnel(daemon.proxy_port, local(server.port))
    assert resp.status == 200, resp
    paused, resume = threading.Event(), threading.Event()

    def paced():
        yield from mcgwtest.chunks(up_data[:half])
        paused.set()
        assert resume.wait(60)
        yield from mcgwtest.chunks(up_data[half:])

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(transfer, resp.sock, paced(), initial=resp.buffered)
        try:
            assert paused.wait(60), "the first half was never sent"
            daemon.send_signal(signal.SIGTERM)
            daemon.wait_log(lambda r: r.get("msg") == "draining", what="the draining record")
            wait_until(lambda: mcgwtest.connection_refused(daemon.proxy_port),
                       what="the proxy listener to refuse connections")
            assert daemon.proc.poll() is None, "mcgw exited with a tunnel open"
        finally:
            resume.set()
        got = future.result(timeout=120)
    assert got.send_error is None, got.send_error
    assert (got.received_len, got.received_sha) == (n, sha256(pattern(n, 9)))
    theirs = server.result()
    assert (theirs.received_len, theirs.received_sha) == (n, sha256(up_data))
    client = resp.client
    resp.close()
    assert daemon.wait_exit(30) == 0
    rec = daemon.tunnel_closed(client)
    assert rec["result"] == "ok" and (rec["bytes_up"], rec["bytes_down"]) == (n, n), rec


def test_sigterm_drain_timeout_closes_idle_tunnel(mcgw, echo):
    daemon = mcgw(allow=local(echo.port), drain_timeout="1s")
    held = open_tunnel(daemon.proxy_port, local(echo.port))
    assert held.status == 200, held
    echo_roundtrip(held, b"idle from now on")
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert held.read_to_eof() == b""  # closed by the daemon, not by us
    assert daemon.wait_exit(30) == 0
    assert 0.8 <= time.monotonic() - started < 10
    held.close()


def test_idle_timeout(mcgw, echo):
    daemon = mcgw(allow=local(echo.port), idle_timeout="1s")
    held = open_tunnel(daemon.proxy_port, local(echo.port))
    assert held.status == 200, held
    echo_roundtrip(held, b"then silence")
    client = held.client
    started = time.monotonic()
    assert held.read_to_eof() == b""
    assert 0.8 <= time.monotonic() - started < 10
    held.close()
    rec = daemon.tunnel_closed(client)
    assert rec["result"] == "ok" and "idle" in rec["close"], rec


def test_every_listener_serves(mcgw, echo):
    daemon = mcgw(allow=local(echo.port), listen=["127.0.0.1:0", "127.0.0.1:0"])
    ports = daemon.proxy_ports
    assert len(set(ports)) == 2, ports
    for port in ports:
        t = open_tunnel(port, local(echo.port))
        assert t.status == 200, t
        echo_roundtrip(t, b"port %d" % port)
        t.close()


def test_log_is_json_lines(mcgw, echo):
    daemon = mcgw(allow=local(echo.port))
    t = open_tunnel(daemon.proxy_port, local(echo.port))
    echo_roundtrip(t, b"x")
    client = t.client
    t.close()
    daemon.tunnel_closed(client)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    daemon.stop()
    lines = daemon.text.splitlines()
    assert lines and len(lines) == len(daemon.records), daemon.text
    for rec in daemon.records:
        assert {"ts", "level", "msg"} <= rec.keys(), rec
