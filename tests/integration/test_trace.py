"""Every tunnel traceable: the gateway's own upstream address and port
(local=), which is all an MC server sees, is in the access log, in the
tunnel_opened line written when the tunnel is established, and in
/tunnels, and it is the peer address the destination saw."""

import socket
import threading

import pytest

from mcgwtest import echo_roundtrip, open_tunnel, wait_until

pytestmark = pytest.mark.timeout(60)


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
        assert opened["level"] == "info", opened
        seen = wait_until(lambda: server.peers, 10, "the server's accept")[0]
        assert opened["local"] == seen, (opened, seen)
        listed = gw.admin("/tunnels")
        assert listed[0] == 200
        assert f'"local": "{seen}"' in listed[2].decode() or f'"local":"{seen}"' in listed[2].decode()
        t.close()
        rec = gw.tunnel_closed(client)
        assert rec["local"] == seen and rec["id"] == opened["id"], (rec, seen)
        assert rec["connected"] == f"127.0.0.1:{server.port}", rec
    finally:
        server.close()
