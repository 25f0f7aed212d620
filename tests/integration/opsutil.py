"""Helpers for the operations tests (test_ops_*.py): the daemon under test
with its JSON log read live, held tunnels through it to a loopback upstream,
and small HTTP helpers for the admin API.

Synchronisation is always "wait for a condition, with a deadline"; ports are
always picked by the kernel (port 0) and read back.
"""

import contextlib
import json
import os
import select
import socket
import subprocess
import threading
from pathlib import Path

import pytest

import mcgwtest
from mcgwtest import (BIN, SRC, free_port, render_config, require_tool,  # noqa: F401  (for the tests)
                      wait_until)

ARTIFACTS = Path(os.environ.get("MCGW_ARTIFACTS", SRC / "build" / "test-artifacts"))


def base_config(admin_listen="127.0.0.1:0", allow=(), extra_tunnel=(), extra_admin=(),
                extra_gateway=()):
    """A config with one proxy and one admin listener on port 0, relaying to
    loopback targets (require_tls off: the tests hold plain TCP tunnels)."""
    tunnel = [("listen", "127.0.0.1:0"), ("allow_private", "yes"), ("require_tls", "no"),
              ("drain_timeout", "5s")]
    tunnel += [("allow", a) for a in allow] + list(extra_tunnel)
    return {
        "gateway": [("log_format", "json"), ("log_level", "info")] + list(extra_gateway),
        "admin": [("listen", admin_listen)] + list(extra_admin),
        "tunnel": tunnel,
    }


class Mcgw(mcgwtest.Mcgw):
    """mcgwtest.Mcgw on a whole config (base_config(), or text) with extra
    environment variables; stop() also fails on a sanitizer report; the
    admin API with a bearer token."""

    def __init__(self, workdir, sections, env=None):
        super().__init__(workdir, sections=sections, env=dict(os.environ, **(env or {})))

    def stop(self):
        super().stop(grace=30)
        self.assert_no_sanitizer_report()

    # ---- admin API ----

    def get(self, path, token=None, timeout=10):
        """(status, headers, body bytes) of GET path on the admin listener."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, hdrs, body = self.admin_request(path, headers=headers, timeout=timeout)
        return status, dict(hdrs), body

    def get_json(self, path, token=None):
        status, _, body = self.get(path, token)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def status(self, token=None):
        return self.get_json("/status", token)


class Upstream:
    """A loopback TCP server that accepts connections and keeps them open
    (reading and discarding), or runs handler(conn) per connection."""

    def __init__(self, handler=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.handler = handler or self._hold
        self.conns = []
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        with contextlib.suppress(OSError):
            self.handler(conn)
        with contextlib.suppress(OSError):
            conn.close()

    @staticmethod
    def _hold(conn):
        while conn.recv(65536):
            pass

    def close(self):
        self._stop = True
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


def _connect(sock, target, end):
    """Sends a CONNECT for target; returns what came back up to end (or EOF)."""
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while end not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


def open_tunnel(proxy_port, target, timeout=10):
    """A socket through mcgw to target after its 200, or AssertionError."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    head = _connect(s, target, b"\r\n\r\n")
    status = head.split(b" ", 2)[1] if b" " in head else b"?"
    if status != b"200":
        s.close()
        raise AssertionError(f"CONNECT {target}: {head!r}")
    return s


def connect_status(proxy_port, target, timeout=10):
    """The status code mcgw answers a CONNECT with (the connection is closed)."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout) as s:
        return int(_connect(s, target, b"\r\n").split(b" ", 2)[1])


def close_all(socks):
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()
    socks.clear()


def run_cli(*args, timeout=30):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def recv_ready(sock, timeout):
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)


@pytest.fixture
def gateway_factory(tmp_path):
    """Starts Mcgw instances and stops them (checking for sanitizer reports)."""
    started = []

    def make(sections, env=None, start=True):
        m = Mcgw(tmp_path, sections, env)
        started.append(m)
        return m.start() if start else m

    yield make
    for m in started:
        m.stop()


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.close()
