"""Every tunnel traceable: the gateway's own upstream address and port
(local=), which is all an MC server sees, is in the access log, in the
tunnel_opened line written when the tunnel is established, and in
/tunnels, and it is the peer address the destination saw. tunnel_opened
carries every field of the access log line known at establishment, for TCP
and UDP tunnels alike."""

import socket
import threading

import pytest

from mcgwtest import echo_roundtrip, open_tunnel, wait_until

pytestmark = pytest.mark.timeout(60)

# The access log's fields known when a tunnel is established; the rest
# (result, close, bytes, datagrams, duration) only at its end.
OPENED_FIELDS = ("id", "proto", "type", "client", "subject", "target", "connected", "local",
                 "egress", "status")


def assert_opened_matches_closed(opened, closed):
    assert opened["level"] == "info", opened
    for k in OPENED_FIELDS:
        assert opened.get(k) == closed.get(k), (k, opened, closed)
    assert isinstance(opened.get("connect_ms"), int), opened
    for k in ("result", "close", "bytes_up", "duration_ms"):
        assert k not in opened, (k, opened)


class PeerEcho:
    """An echo server on 127.0.0.1 that records each client's address."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.peers = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            self.peers.append("%s:%d" % peer[:2])
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self):
        self.sock.close()


def test_local_is_the_peer_the_server_saw(mcgw):
    server = PeerEcho()
    try:
        gw = mcgw(allow=f"127.0.0.1:{server.port}")
        t = open_tunnel(gw.proxy_port, f"127.0.0.1:{server.port}")
        assert t.status == 200, t
        echo_roundtrip(t, b"who am I")
        client = t.client
        opened = gw.wait_log(lambda r: r.get("msg") == "tunnel_opened" and r.get("client") == client)
        assert opened["type"] == "tcp" and opened["status"] == 200, opened
        seen = wait_until(lambda: server.peers, 10, "the server's accept")[0]
        assert opened["local"] == seen, (opened, seen)
        listed = gw.admin("/tunnels")
        assert listed[0] == 200
        assert f'"local": "{seen}"' in listed[2].decode() or f'"local":"{seen}"' in listed[2].decode()
        t.close()
        rec = gw.tunnel_closed(client)
        assert rec["local"] == seen and rec["id"] == opened["id"], (rec, seen)
        assert rec["connected"] == f"127.0.0.1:{server.port}", rec
        assert_opened_matches_closed(opened, rec)
    finally:
        server.close()


def test_udp_tunnel_opened(mcgw):
    """A CONNECT-UDP tunnel (HTTP/1.1 Upgrade) gets its tunnel_opened line
    too, type=udp, with local= the address the UDP target saw."""
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target.bind(("127.0.0.1", 0))
    target.settimeout(10)
    port = target.getsockname()[1]
    gw = mcgw(allow_udp=f"127.0.0.1:{port}")
    sock = socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10)
    try:
        sock.sendall(f"GET /.well-known/masque/udp/127.0.0.1/{port}/ HTTP/1.1\r\n"
                     "Host: gateway.test\r\nConnection: Upgrade\r\nUpgrade: connect-udp\r\n"
                     "Capsule-Protocol: ?1\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        client = "%s:%d" % sock.getsockname()[:2]
        sock.sendall(bytes([0, 5, 0]) + b"ping")  # DATAGRAM capsule, context 0 (RFC 9297)
        data, peer = target.recvfrom(100)
        assert data == b"ping"
        opened = gw.wait_log(lambda r: r.get("msg") == "tunnel_opened" and r.get("client") == client)
        assert opened["type"] == "udp" and opened["status"] == 101, opened
        assert opened["local"] == "%s:%d" % peer[:2], (opened, peer)
        assert opened["connected"] == f"127.0.0.1:{port}", opened
    finally:
        sock.close()
        target.close()
    closed = gw.tunnel_closed(client)
    assert_opened_matches_closed(opened, closed)
