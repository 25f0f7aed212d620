"""SIGHUP reloads: a broken config is rejected whole and counted, a good one
applies new allow rules, and a 60-second transfer across both reloads
completes byte-exact. Listener add/remove and TLS certificate reload are not
tested here: they arrive with the TLS listener work (tn_engine_update)."""

import hashlib
import random
import signal
import socket
import threading
import time

import pytest

from opsutil import (Upstream, base_config, connect_status, gateway_factory,  # noqa: F401
                     open_tunnel, render_config, upstream, wait_until)

TRANSFER_S = 60
CHUNK = 32 * 1024
PERIOD_S = 0.02  # ~1.6 MB/s: a steady stream for the whole minute


def echo(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


class PacedTransfer:
    """Sends deterministic data through a tunnel for TRANSFER_S seconds, then
    half-closes; reads the echo until EOF. Hashes both directions."""

    def __init__(self, sock):
        self.sock = sock
        self.sent = hashlib.sha256()
        self.received = hashlib.sha256()
        self.n_sent = self.n_received = 0
        self.error = None
        self.done = threading.Event()
        self.rng = random.Random(5)
        self.started = time.monotonic()
        threading.Thread(target=self._send, daemon=True).start()
        self.reader = threading.Thread(target=self._recv, daemon=True)
        self.reader.start()

    def _send(self):
        try:
            next_at = self.started
            while time.monotonic() - self.started < TRANSFER_S:
                data = self.rng.randbytes(CHUNK)
                self.sock.sendall(data)
                self.sent.update(data)
                self.n_sent += len(data)
                next_at += PERIOD_S
                time.sleep(max(0.0, next_at - time.monotonic()))  # pacing, not synchronisation
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.error = e

    def _recv(self):
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.received.update(data)
                self.n_received += len(data)
        except OSError as e:
            self.error = e
        self.done.set()

    def elapsed(self):
        return time.monotonic() - self.started


@pytest.mark.timeout(180)
def test_reload_broken_then_good_keeps_transfer(gateway_factory, tmp_path):
    echo_a, echo_b = Upstream(echo), Upstream(echo)
    try:
        target_a, target_b = f"127.0.0.1:{echo_a.port}", f"127.0.0.1:{echo_b.port}"
        gw = gateway_factory(base_config(allow=[target_a]))
        assert connect_status(gw.proxy_port, target_b) == 403

        transfer = PacedTransfer(open_tunnel(gw.proxy_port, target_a, timeout=120))
        wait_until(lambda: transfer.elapsed() > 10, 20, "10 s of transfer")

        # A broken file: rejected whole, the running config stays in force.
        good_text = gw.config_path.read_text()
        gw.write_config(good_text.replace(f"allow = {target_a}",
                                          f"allow = {target_a}\nallow = {target_b}\nallow = *:443\n"
                                          "max_tunnels = lots"))
        gw.send_signal(signal.SIGHUP)
        failed = gw.wait_log(lambda r: r.get("msg") == "reload_failed", what="reload_failed")
        assert failed["errors"] == 2
        errors = [r["error"] for r in gw.log_records() if r.get("msg") == "config_error"]
        assert any("max_tunnels" in e for e in errors) and any("*" in e for e in errors), errors
        st = gw.status()
        assert st["reloads"] == {"ok": 0, "failed": 1, "last_ok": False,
                                 "last_success_time": st["reloads"]["last_success_time"]}
        assert connect_status(gw.proxy_port, target_b) == 403  # target_b is in the rejected file only
        probe = open_tunnel(gw.proxy_port, target_a)
        probe.sendall(b"ping")
        assert probe.recv(4) == b"ping"
        probe.close()
        metrics = gw.get("/metrics")[2].decode()
        assert 'mcgw_config_reloads_total{result="failed"} 1\n' in metrics
        assert "mcgw_config_last_reload_successful 0\n" in metrics

        wait_until(lambda: transfer.elapsed() > 20, 30, "20 s of transfer")
        # A good file with a new allow rule: applies to new tunnels.
        gw.write_config(good_text.replace(f"allow = {target_a}",
                                          f"allow = {target_a}\nallow = {target_b}"))
        gw.send_signal(signal.SIGHUP)
        gw.wait_log(lambda r: r.get("msg") == "reloaded", what="reloaded")
        b = open_tunnel(gw.proxy_port, target_b)
        b.sendall(b"hello b")
        assert b.recv(7) == b"hello b"
        b.close()
        metrics = gw.get("/metrics")[2].decode()
        assert 'mcgw_config_reloads_total{result="ok"} 1\n' in metrics
        assert "mcgw_config_last_reload_successful 1\n" in metrics
        assert gw.status()["tunnels"]["active"] >= 1  # the transfer's tunnel was never dropped

        assert transfer.done.wait(TRANSFER_S + 60), "transfer did not finish"
        assert transfer.error is None, transfer.error
        assert transfer.elapsed() >= TRANSFER_S
        assert transfer.n_received == transfer.n_sent > 50 * 1024 * 1024
        assert transfer.received.hexdigest() == transfer.sent.hexdigest()
        closed = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed" and r.get("target") == target_a
                             and r.get("bytes_up") == transfer.n_sent, what="the transfer's access log")
        assert closed["result"] == "ok" and closed["close"] == "eof"
        assert closed["bytes_down"] == transfer.n_sent
    finally:
        echo_a.close()
        echo_b.close()


@pytest.mark.timeout(60)
def test_reload_removing_an_allow_rule_refuses_new_tunnels_keeps_open_ones(gateway_factory):
    """A good reload that drops an allow rule: new tunnels to that target
    are refused with 403 from then on (h1 and h2), while the tunnel already
    open to it keeps relaying both ways until its own EOF (docs/operations.md:
    a reload applies to tunnels opened from then on; open tunnels are never
    dropped)."""
    from h2client import H2Client

    echo_a, echo_b = Upstream(echo), Upstream(echo)
    try:
        target_a, target_b = f"127.0.0.1:{echo_a.port}", f"127.0.0.1:{echo_b.port}"
        gw = gateway_factory(base_config(allow=[target_a, target_b]))
        open_b = open_tunnel(gw.proxy_port, target_b)
        open_b.sendall(b"before")
        assert open_b.recv(6) == b"before"

        text = gw.config_path.read_text()
        assert f"allow = {target_b}\n" in text
        gw.write_config(text.replace(f"allow = {target_b}\n", ""))
        gw.send_signal(signal.SIGHUP)
        gw.wait_log(lambda r: r.get("msg") == "reloaded", what="reloaded")

        assert connect_status(gw.proxy_port, target_b) == 403
        client = H2Client(gw.proxy_port)
        refused = client.wait_response(client.connect(target_b))
        allowed = client.wait_response(client.connect(target_a))
        assert (refused.status, allowed.status) == (403, 200)
        client.close()
        rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed" and r.get("status") == 403
                          and r.get("target") == target_b, what="the 403's access-log line")
        assert rec["result"] == "denied", rec

        # The tunnel opened before the reload is untouched.
        open_b.sendall(b"after the reload")
        got = b""
        while len(got) < 16:
            got += open_b.recv(16 - len(got))
        assert got == b"after the reload"
        client_addr = "127.0.0.1:%d" % open_b.getsockname()[1]
        open_b.shutdown(socket.SHUT_WR)
        assert open_b.recv(1) == b""
        open_b.close()
        closed = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed"
                             and r.get("client") == client_addr, what="the open tunnel's line")
        assert closed["result"] == "ok" and closed["close"] == "eof"
        assert closed["bytes_up"] == len(b"before") + len(b"after the reload")
    finally:
        echo_a.close()
        echo_b.close()
