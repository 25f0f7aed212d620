"""Helpers for the operations tests (test_ops_*.py): the daemon under test
with its JSON log read live, held tunnels through it to a loopback upstream,
and small HTTP helpers for the admin API.

Synchronisation is always "wait for a condition, with a deadline"; ports are
always picked by the kernel (port 0) and read back.
"""

import contextlib
import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SRC = Path(os.environ.get("MCGW_SRC", HERE.parents[1]))
BIN = Path(os.environ.get("MCGW_BIN", SRC / "build" / "mcgw"))
ARTIFACTS = Path(os.environ.get("MCGW_ARTIFACTS", SRC / "build" / "test-artifacts"))

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def wait_until(predicate, timeout=10.0, what="condition", interval=0.02):
    """Polls predicate() until it returns something truthy and returns that;
    fails the test when timeout seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port():
    """A port the kernel just handed out on 127.0.0.1 (for programs such as
    Prometheus that cannot report the port they bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_tool(name):
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed (scripts/deps.sh test installs it)")
    return path


def render_config(sections):
    out = []
    for name, keys in sections.items():
        out.append(f"[{name}]")
        for key, value in keys:
            out.append(f"{key} = {value}")
        out.append("")
    return "\n".join(out)


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


class Mcgw:
    """The daemon under test, its stderr (JSON lines) collected by a thread."""

    def __init__(self, workdir, sections, env=None):
        self.workdir = Path(workdir)
        self.config = self.workdir / "mcgw.ini"
        self.write_config(sections)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.lines = []
        self.records = []
        self._lock = threading.Lock()

    def write_config(self, sections):
        self.config.write_text(sections if isinstance(sections, str) else render_config(sections))

    def start(self, timeout=15):
        self.proc = subprocess.Popen([str(BIN), "run", "-c", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=self.env, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_log(lambda r: r.get("msg") == "ready", timeout, "mcgw ready")
        return self

    def _read(self):
        for line in self.proc.stderr:
            with self._lock:
                self.lines.append(line)
                with contextlib.suppress(ValueError):
                    self.records.append(json.loads(line))

    def log_records(self):
        with self._lock:
            return list(self.records)

    def text(self):
        with self._lock:
            return "".join(self.lines)

    def wait_log(self, predicate, timeout=10, what="a log record"):
        def find():
            for r in self.log_records():
                if predicate(r):
                    return r
            if self.proc.poll() is not None:
                raise AssertionError(f"mcgw exited ({self.proc.returncode}) while waiting for "
                                     f"{what}:\n{self.text()}")
            return None
        return wait_until(find, timeout, what)

    def _listening(self, kind):
        return [r["addr"] for r in self.log_records()
                if r.get("msg") == "listening" and r.get("kind") == kind]

    @property
    def proxy_port(self):
        return int(self._listening("proxy")[0].rsplit(":", 1)[1])

    @property
    def admin_port(self):
        return int(self._listening("admin")[0].rsplit(":", 1)[1])

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin_port}"

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        text = self.text()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"sanitizer report from mcgw:\n{text}"

    # ---- admin API ----

    def get(self, path, token=None, timeout=10):
        """(status, headers, body bytes) of GET path on the admin listener."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

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


def open_tunnel(proxy_port, target, timeout=10):
    """A socket through mcgw to target after its 200, or AssertionError."""
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    status = head.split(b" ", 2)[1] if b" " in head else b"?"
    if status != b"200":
        s.close()
        raise AssertionError(f"CONNECT {target}: {head!r}")
    return s


def connect_status(proxy_port, target, timeout=10):
    """The status code mcgw answers a CONNECT with (the connection is closed)."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout) as s:
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        return int(head.split(b" ", 2)[1])


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
