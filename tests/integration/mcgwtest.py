"""Helpers for mcgw's integration tests.

Everything runs on loopback: a throw-away PKI made with the openssl CLI,
upstream servers (TLS HTTP, echo, sink-and-send, half-closing) on port 0, the
daemon under test with its JSON log parsed live, and a raw CONNECT client.

Synchronisation is always "wait for a condition, with a deadline": a log
record, a queued result, a status counter. Nothing sleeps to let things happen.
"""

import contextlib
import functools
import hashlib
import http.client
import json
import os
import queue
import random
import re
import select
import selectors
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = Path(os.environ.get("MCGW_SRC", HERE.parents[1]))
BIN = Path(os.environ.get("MCGW_BIN", SRC / "build" / "mcgw"))

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
)

CHUNK = 256 * 1024
MiB = 1024 * 1024

# result field of the access log for each error status the daemon can send
RESULT_FOR_STATUS = {
    400: "bad_request",
    403: "denied",
    405: "bad_request",
    408: "timeout",
    431: "bad_request",
    502: "connect_failed",
    503: "limit",
    504: "timeout",
}


# ---------------------------------------------------------------- utilities


def wait_until(predicate, timeout=10.0, what="condition", interval=0.02):
    """Polls predicate() until it returns something truthy; returns that.
    Fails the test when timeout seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@functools.lru_cache(maxsize=8)
def pattern(n, seed):
    """n bytes of deterministic pseudo-random data."""
    return random.Random(seed).randbytes(n)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def chunks(data, size=CHUNK):
    view = memoryview(data)
    for off in range(0, len(view), size):
        yield view[off:off + size]


def version_from_changelog():
    """The one place the version lives: the first line of debian/changelog."""
    head = (SRC / "debian" / "changelog").read_text().splitlines()[0]
    m = re.match(r"mcgw \(([^)]+)\) ", head)
    assert m, f"debian/changelog does not start with 'mcgw (VERSION) ...': {head!r}"
    return m.group(1)


# The Debian package that provides each tool the tests run; scripts/deps.sh
# installs them all (`make test` runs it first).
TOOL_PACKAGES = {
    "openssl": "openssl", "curl": "curl", "prometheus": "prometheus",
    "promtool": "prometheus", "chromium": "chromium", "tshark": "tshark",
    "certutil": "libnss3-tools", "node": "nodejs", "npm": "npm",
    "systemd-analyze": "systemd", "clang-14": "clang-14",
}


def require_tool(name):
    """The tool's path. A missing tool fails the test (never a skip: it
    would hide a broken machine as a pass), naming the Debian package."""
    import pytest

    path = shutil.which(name)
    if path is None:
        pkg = TOOL_PACKAGES.get(name, "?")
        pytest.fail(f"{name} is not installed: Debian package {pkg} "
                    f"(scripts/deps.sh test installs it)")
    return path


def raise_nofile_limit():
    """Raises this process's RLIMIT_NOFILE soft limit to the hard limit (the
    daemon, started afterwards, inherits it). Returns the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


_reserved_ports = {}


def free_port():
    """A loopback port that nothing listens on and that no other test can be
    handed, for this process's life: ctest runs two test files at once, and
    a port that was bound, read back and closed could go to the other one.

    The port stays bound here, with SO_REUSEADDR and never listening, so:
    - a connect to it is refused (nothing listens);
    - the kernel never gives it to another bind to port 0, in any process
      (port-0 allocation skips every port with a bound socket);
    - a server that sets SO_REUSEADDR (mcgw through libuv, Prometheus,
      Python's socketserver) can still bind and listen on it, since a
      non-listening SO_REUSEADDR socket does not conflict; call
      release_port(port) first for one that does not.
    For a listener of our own, bind port 0 and keep the socket instead."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    _reserved_ports[port] = s
    return port


def release_port(port):
    """Gives up a free_port() reservation (for a server without SO_REUSEADDR)."""
    s = _reserved_ports.pop(port, None)
    if s:
        s.close()


def connection_refused(port):
    """True when a TCP connect to 127.0.0.1:port is refused."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionRefusedError:
        return True
    s.close()
    return False


def run_cli(*args, timeout=30):
    """Runs `mcgw ARGS...`; returns (exit code, stdout + stderr as text)."""
    p = subprocess.run([str(BIN), *map(str, args)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


# ---------------------------------------------------------------- PKI


@dataclass
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path  # an unrelated CA: verifying the server with it fails

    def server_context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        return ctx

    def client_context(self):
        return ssl.create_default_context(cafile=str(self.ca_cert))


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)


def _make_ca(directory, name, cn):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    return directory / f"{name}.crt"


def make_pki(directory):
    """A test CA, a server certificate for localhost and 127.0.0.1 signed by
    it, and a second, unrelated CA."""
    directory = Path(directory)
    ca = _make_ca(directory, "ca", "mcgw integration test CA")
    other = _make_ca(directory, "other-ca", "mcgw unrelated CA")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
             cwd=directory)
    (directory / "server.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2",
             "-extfile", "server.ext", cwd=directory)
    return Pki(ca, directory / "server.crt", directory / "server.key", other)


# ---------------------------------------------------------------- byte streams


@dataclass
class Transfer:
    """What one side of a connection saw."""
    received_len: int
    received_sha: str
    received_head: bytes  # the first bytes received (up to 64 KiB)
    sent_len: int
    send_error: str = None


def drain(sock, initial=b""):
    """Reads until EOF. Returns (length, sha256, first 64 KiB)."""
    h = hashlib.sha256(initial)
    n = len(initial)
    head = bytearray(initial[:65536])
    while True:
        data = sock.recv(CHUNK)
        if not data:
            return n, h.hexdigest(), bytes(head)
        h.update(data)
        n += len(data)
        if len(head) < 65536:
            head += data[:65536 - len(head)]


def transfer(sock, data, *, initial=b"", after_eof=False):
    """Sends `data` (bytes, or an iterable of byte chunks) then shuts down the
    write side, while reading until EOF; concurrently unless after_eof, in
    which case everything is read first and sent afterwards. `initial` is
    what was already received (counted and hashed first)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = chunks(data)
    sent = [0]
    error = [None]

    def send():
        try:
            for c in data:
                sock.sendall(c)
                sent[0] += len(c)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            error[0] = repr(e)

    if after_eof:
        got = drain(sock, initial)
        send()
    else:
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            got = drain(sock, initial)
        finally:
            sender.join(timeout=120)
        assert not sender.is_alive(), "sender thread stuck"
    return Transfer(*got, sent_len=sent[0], send_error=error[0])


# ---------------------------------------------------------------- upstreams


class Upstream:
    """A TCP (or TLS) server on 127.0.0.1, port 0. Every accepted connection
    runs handler(conn) in its own thread; each return value (or the exception
    raised) is queued for the test to collect with result()."""

    def __init__(self, handler, ssl_context=None, host="127.0.0.1", backlog=1024):
        self.handler = handler
        self.ssl_context = ssl_context
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, 0), family=family, backlog=backlog)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.results = queue.Queue()
        self._stop = threading.Event()
        self._conns = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        while not self._stop.is_set():
            if not sel.select(timeout=0.1):
                continue
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with self._lock:
                self.accepted += 1
                self._conns.add(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        sel.close()

    def _handle(self, conn):
        raw, result = conn, None
        try:
            conn.settimeout(120)
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            result = self.handler(conn)
        except Exception as e:  # reported to the test through result()
            result = e
        finally:
            with self._lock:
                self._conns.discard(raw)
            conn.close()
            self.results.put(result)

    def outcome(self, timeout=30):
        """The next connection's handler result, or the exception it raised."""
        try:
            return self.results.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"upstream :{self.port}: no connection finished "
                                 f"within {timeout}s (accepted {self.accepted})") from None

    def result(self, timeout=30):
        """The next connection's handler result; raises what the handler raised."""
        r = self.outcome(timeout)
        if isinstance(r, Exception):
            raise r
        return r

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()
        with self._lock:
            for c in list(self._conns):
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)


UPSTREAM_BODY = b"hello from the mcgw test upstream\n"


def http_handler(conn):
    """Reads one request head and answers 200 with UPSTREAM_BODY. Returns the
    request head."""
    req = b""
    while b"\r\n\r\n" not in req:
        data = conn.recv(65536)
        if not data:
            break
        req += data
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(UPSTREAM_BODY)
                 + UPSTREAM_BODY)
    return req


def echo_handler(conn):
    """Echoes everything until EOF, then shuts down. Returns what it received
    (the first 1 MiB)."""
    got = bytearray()
    while True:
        data = conn.recv(CHUNK)
        if not data:
            break
        if len(got) < MiB:
            got += data
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    return bytes(got)


def sink_and_send(n, seed, after_eof=False):
    """Handler: reads to EOF hashing while sending n bytes of pattern(n, seed)
    then shutting down its write side (after EOF only if after_eof)."""
    def handler(conn):
        return transfer(conn, pattern(n, seed), after_eof=after_eof)
    return handler


def half_close_first(greeting):
    """Handler: sends greeting, shuts down its write side at once, then reads
    to EOF. Returns a Transfer."""
    def handler(conn):
        conn.sendall(greeting)
        conn.shutdown(socket.SHUT_WR)
        return Transfer(*drain(conn), sent_len=len(greeting))
    return handler


def reset(sock):
    """Closes sock with a RST (SO_LINGER 0) instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def send_then_reset(greeting):
    """Handler: sends greeting, waits for one byte back, then resets."""
    def handler(conn):
        conn.sendall(greeting)
        got = conn.recv(1)
        reset(conn)
        return got
    return handler


@contextlib.contextmanager
def blackhole(max_fillers=16):
    """A loopback port whose SYNs are dropped: a listener with backlog 0
    that never accepts, its accept queue filled. Yields the port, or None
    when the kernel completes connections anyway (no blackhole possible)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        blocked = False
        for _ in range(max_fillers):
            s = socket.socket()
            s.setblocking(False)
            fillers.append(s)
            err = s.connect_ex(("127.0.0.1", port))
            if err == 0:
                continue
            # In progress: connected within 0.5 s means the queue took it.
            _, writable, _ = select.select([], [s], [], 0.5)
            if not writable:
                blocked = True
                break
        yield port if blocked else None
    finally:
        for s in fillers:
            s.close()
        listener.close()


# ---------------------------------------------------------------- the daemon


def render_config(sections):
    """{section: {key: value or list of values (repeated keys) or None}}; a
    section may also be a list of (key, value) pairs."""
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        for key, value in keys.items() if isinstance(keys, dict) else keys:
            if value is None:
                continue
            for v in value if isinstance(value, (list, tuple)) else [value]:
                lines.append(f"{key} = {v}")
        lines.append("")
    return "\n".join(lines)


DEFAULT_TUNNEL = {
    "listen": "127.0.0.1:0",
    "allow_private": "yes",
    "require_tls": "no",
    "header_timeout": "10s",
    "connect_timeout": "10s",
    "idle_timeout": "30m",
    "drain_timeout": "2s",
}


def _addr_port(addr):
    return int(addr.rsplit(":", 1)[1])


def loopback_dns_prefix(workdir, hosts=None, nameserver="127.0.0.1", dns_timeout_s=1):
    """A command prefix that runs the daemon in its own mount namespace with
    a resolv.conf naming only 127.0.0.1, so that no name a test asks for
    is ever looked up beyond this machine (nothing answers on 127.0.0.1:53,
    so lookups of names not in /etc/hosts fail at once). /etc/hosts stays
    shared unless hosts (lines "ADDRESS NAME") is given: then the namespace
    gets a private /etc/hosts holding localhost and those lines only.
    Empty when namespaces are unavailable (not root): a test that needs
    hosts must skip then (sechelp.namespaces_usable()). nameserver and
    dns_timeout_s: another (test) resolver, and how long to wait for it."""
    if not DNS_ISOLATED:
        return []
    workdir = Path(workdir)
    files = []
    if hosts is not None:
        (workdir / "hosts").write_text(
            "127.0.0.1 localhost\n::1 localhost\n" + "".join(h + "\n" for h in hosts))
        files.append((workdir / "hosts", "/etc/hosts"))
    (workdir / "resolv.conf").write_text(
        f"nameserver {nameserver}\noptions attempts:1 timeout:{dns_timeout_s}\n")
    files.append((workdir / "resolv.conf", "/etc/resolv.conf"))
    mounts = [f'mount --bind "${i}" {target}' for i, (_, target) in enumerate(files, 1)]
    script = " && ".join([*mounts, f'shift {len(files)}', 'exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
            *(str(f) for f, _ in files)]


DNS_ISOLATED = os.geteuid() == 0 and shutil.which("unshare") is not None


LOGFMT_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line):
    """One logfmt line as a dict; digit-only values as ints, like JSON."""
    out = {}
    for key, value in LOGFMT_FIELD.findall(line):
        if value.startswith('"'):
            value = value[1:-1].encode("utf-8").decode("unicode_escape")
        elif value.isdigit():
            value = int(value)
        out[key] = value
    return out


class Mcgw:
    """The daemon under test: `mcgw run -c FILE` with log_format=json. Its
    output is read in a thread; JSON lines are kept as records.

    Hooks for the suites built on it (idmtest, sechelp, opsutil):
    - extra: sections after [gateway], [admin] and [tunnel]
      ({name: {key: value}}); sections: the whole config instead (what
      render_config takes, or text); tunnel_defaults (class attribute): the
      [tunnel] keys the tunnel argument is merged into;
    - env: the daemon's environment (default: the test's own);
    - nofile: RLIMIT_NOFILE for the daemon, soft = hard (prlimit);
    - command_prefix(): what the daemon runs under (loopback_dns_prefix);
    - parse_logfmt_lines (class attribute): text-format lines become
      records too.
    start() may follow stop(): the records start afresh, output accumulates."""

    tunnel_defaults = DEFAULT_TUNNEL
    admin_timeout = 10
    parse_logfmt_lines = False

    def __init__(self, workdir, tunnel=None, gateway=None, admin=None, extra=None, *,
                 sections=None, env=None, nofile=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mcgw.ini"
        if sections is None:
            sections = {
                "gateway": {"log_level": "debug", "log_format": "json", **(gateway or {})},
                "admin": {"listen": "127.0.0.1:0", **(admin or {})},
                "tunnel": {**self.tunnel_defaults, **(tunnel or {})},
                **(extra or {}),
            }
        self.write_config(sections)
        self.env = env
        self.nofile = nofile
        self.proc = None
        self.output = bytearray()  # everything written to stdout and stderr
        self.records = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = None

    def write_config(self, sections):
        """Writes the config file: text, or sections as render_config takes."""
        self.config_path.write_text(sections if isinstance(sections, str)
                                    else render_config(sections))

    # -- life cycle

    def command_prefix(self):
        return loopback_dns_prefix(self.workdir)

    def start(self, timeout=15):
        argv = [*self.command_prefix(), str(BIN), "run", "-c", str(self.config_path)]
        if self.nofile:
            argv = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--", *argv]
        with self._cond:
            self.records = []
            self._eof = False
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=self.env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_log(lambda r: r.get("msg") == "ready", timeout, "the ready record")
        return self

    def parse_line(self, line):
        """A line of output (bytes) -> its record (a dict) or None."""
        if self.parse_logfmt_lines and line.startswith(b"ts="):
            return parse_logfmt(line.decode("utf-8", "replace").rstrip("\n"))
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        return rec if isinstance(rec, dict) else None

    def _read(self):
        for line in self.proc.stdout:
            rec = self.parse_line(line)
            with self._cond:
                self.output += line
                if rec is not None:
                    self.records.append(rec)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"mcgw still running {timeout}s later:\n{self.text[-4000:]}") \
                from None

    def stop(self, grace=15):
        """SIGTERM, then SIGKILL if it has not exited grace seconds later."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        # Something else (a grandchild) holding the pipe keeps the reader
        # blocked; closing the pipe under it would block too, so leave it.
        self._reader.join(timeout=10)
        if not self._reader.is_alive():
            self.proc.stdout.close()

    def rss_kib(self):
        """The daemon's resident set size, in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def assert_no_sanitizer_report(self):
        text = self.text
        for marker in SANITIZER_MARKERS:
            assert marker not in text, f"sanitizer report in mcgw's stderr:\n{text[-8000:]}"

    # -- log

    @property
    def text(self):
        with self._cond:
            return self.output.decode("utf-8", "replace")

    def log_records(self):
        """A copy of the records so far."""
        with self._cond:
            return list(self.records)

    def wait_log(self, predicate, timeout=10, what="a log record", since=0):
        """Returns the first record matching predicate (from record number
        since on), waiting for it."""
        def find():
            for r in self.records[since:]:
                if predicate(r):
                    return r
            return None

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                r = find()
                if r is not None:
                    return r
                if self._eof:
                    raise AssertionError(f"mcgw exited (rc={self.proc.poll()}) before {what}:\n"
                                         f"{self.output.decode('utf-8', 'replace')[-4000:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {what} within {timeout}s; mcgw said:\n"
                                         f"{self.output.decode('utf-8', 'replace')[-4000:]}")
                self._cond.wait(left)

    def tunnel_closed(self, client, timeout=10):
        """The access-log record of the tunnel from client ("127.0.0.1:port")."""
        return self.wait_log(
            lambda r: r.get("msg") == "tunnel_closed" and r.get("client") == client,
            timeout, f"tunnel_closed for client {client}")

    def _listening(self, kind):
        return [_addr_port(r["addr"]) for r in self.records
                if r.get("msg") == "listening" and r.get("kind") == kind]

    @property
    def proxy_ports(self):
        return self._listening("proxy")

    def listen_port(self, kind):
        """The port of the first listener of kind (proxy, proxy_tls, admin)."""
        ports = self._listening(kind)
        assert ports, f"no {kind} listener logged"
        return ports[0]

    @property
    def proxy_port(self):
        return self.listen_port("proxy")

    @property
    def admin_port(self):
        return self.listen_port("admin")

    # -- admin

    @property
    def admin_url(self):
        return f"http://127.0.0.1:{self.admin_port}"

    def admin_request(self, path, method="GET", headers=None, timeout=None):
        """(status, [(header name as sent, value)], body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port,
                                          timeout=timeout or self.admin_timeout)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def admin(self, path, method="GET"):
        """(status, headers dict with lowercase names, body bytes)."""
        status, headers, body = self.admin_request(path, method)
        return status, {k.lower(): v for k, v in headers}, body

    def metric(self, name):
        """The value of one sample line of /metrics: name is the line's
        series as printed (`family{label="v",...}`)."""
        code, _, body = self.admin("/metrics")
        assert code == 200, body
        for line in body.decode().splitlines():
            if line.rsplit(" ", 1)[0] == name:
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in /metrics")

    def status(self):
        code, headers, body = self.admin("/status")
        assert code == 200, (code, body)
        return json.loads(body)

    def wait_status(self, predicate, timeout, what, interval=0.05):
        """Polls /status until predicate(status) holds; returns that status."""
        last = {}

        def check():
            last["s"] = self.status()
            return predicate(last["s"])

        try:
            wait_until(check, timeout, what, interval)
        except AssertionError:
            raise AssertionError(f"no {what} within {timeout}s; last /status {last.get('s')}; "
                                 f"mcgw said:\n{self.text[-4000:]}") from None
        return last["s"]

    def wait_active(self, n, timeout=10):
        """Waits until /status reports exactly n active tunnels; returns it."""
        return self.wait_status(lambda s: s["tunnels"]["active"] == n, timeout,
                                f"tunnels.active == {n}")


# ---------------------------------------------------------------- CONNECT client


class ProxyClosed(AssertionError):
    """The proxy closed the connection before a complete response head."""


@dataclass
class ProxyResponse:
    status: int
    reason: str
    headers: list  # [(lowercase name, value)]
    sock: socket.socket
    buffered: bytes  # bytes received after the head (tunnel data or error body)

    def header(self, name):
        for k, v in self.headers:
            if k == name.lower():
                return v
        return None

    @property
    def client(self):
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def read_to_eof(self):
        """buffered + everything until the proxy closes; a reset after some
        bytes counts as the end too."""
        data, self.buffered = self.buffered, b""
        return read_until_closed(self.sock, data)

    def close(self):
        self.sock.close()


def read_until_closed(sock, initial=b""):
    """initial + everything until EOF or a reset."""
    data = bytearray(initial)
    while True:
        try:
            chunk = sock.recv(CHUNK)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def raw_exchange(port, data, timeout=30):
    """Sends data to the proxy and reads until it closes. Returns
    (client address "127.0.0.1:port", bytes received)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        host, cport = sock.getsockname()[:2]
        return f"{host}:{cport}", read_until_closed(sock)


def read_response_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            raise ProxyClosed(f"proxy closed the connection before a response head; got {buf!r}")
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.1 (\d{3}) ?(.*)$", lines[0])
    assert m, f"bad status line {lines[0]!r}"
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return int(m.group(1)), m.group(2), headers, rest


def connect_request(target, headers=()):
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", *headers, "", ""]
    return "\r\n".join(lines).encode()


def open_tunnel(port, target=None, *, request=None, payload=b"", headers=(),
                source=None, timeout=30, send_in_background=False):
    """Connects to the proxy on 127.0.0.1:port, sends the request (a CONNECT
    for target unless a raw `request` is given) followed by payload in one
    write, and reads the response head. Returns a ProxyResponse.

    send_in_background: write from a thread, ignoring write errors, so that a
    proxy answering before it has read everything cannot block the client."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    data = (request if request is not None else connect_request(target, headers)) + payload
    try:
        if send_in_background:
            def send():
                with contextlib.suppress(OSError):
                    sock.sendall(data)
            threading.Thread(target=send, daemon=True).start()
        else:
            sock.sendall(data)
        status, reason, hdrs, rest = read_response_head(sock)
    except BaseException:
        sock.close()
        raise
    return ProxyResponse(status, reason, hdrs, sock, rest)


def assert_error_response(resp, status):
    """An error answer: the status, Connection: close, a short text body, and
    the connection closed afterwards. Returns the body."""
    assert resp.status == status, f"expected {status}, got {resp.status} {resp.reason}"
    assert (resp.header("connection") or "").lower() == "close", resp.headers
    body = resp.read_to_eof()
    resp.close()  # the proxy lingers until the client closes
    length = resp.header("content-length")
    if length is not None:
        assert len(body) == int(length), (length, body)
    assert body, "error responses carry a short text body"
    return body


def recv_exactly(resp, n):
    """The next n bytes from an open tunnel (buffered ones first)."""
    got, resp.buffered = resp.buffered, b""
    while len(got) < n:
        chunk = resp.sock.recv(CHUNK)
        assert chunk, f"tunnel closed after {len(got)} of {n} bytes"
        got += chunk
    got, resp.buffered = got[:n], got[n:]
    return got


def echo_roundtrip(resp, data):
    """Sends data through an open tunnel to an echo upstream and reads it back."""
    resp.sock.sendall(data)
    got = recv_exactly(resp, len(data))
    assert got == data
    return got


# ---------------------------------------------------------------- TLS through a tunnel


class MemoryTLSClient:
    """A TLS client driven over a plain socket through MemoryBIOs, so the
    ClientHello can be produced before the tunnel exists."""

    def __init__(self, context, server_hostname):
        # Python sets OP_IGNORE_UNEXPECTED_EOF, which makes a bare FIN look
        # like a close_notify; read_to_end() must tell them apart.
        context.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.held = bytearray()  # plaintext decrypted by close_notify(), not yet read
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.sock = None

    def client_hello(self):
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = self.outgoing.read()
        assert hello[:1] == b"\x16", "a ClientHello is a TLS handshake record"
        return hello

    def attach(self, sock, initial=b""):
        self.sock = sock
        if initial:
            self.incoming.write(initial)

    def _flush(self):
        out = self.outgoing.read()
        if out:
            self.sock.sendall(out)

    def _fill(self):
        data = self.sock.recv(65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    def _run(self, op):
        while True:
            try:
                result = op()
                self._flush()
                return result
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()

    def handshake(self):
        self._run(self.tls.do_handshake)

    def write(self, data):
        self._run(lambda: self.tls.write(data))

    def read(self, n=65536):
        """Some decrypted bytes (waiting for them); b"" at a close_notify."""
        if self.held:
            data = bytes(self.held[:n])
            del self.held[:n]
            return data
        return self._run(lambda: self.tls.read(n))

    def read_to_eof(self):
        return self.read_to_end()[0]

    def read_to_end(self):
        """Reads until the peer ends the stream: (data, "close_notify") when
        it sent a TLS close_notify, (data, "fin") for a bare TCP FIN (a
        truncation TLS itself cannot tell from an attack)."""
        data = bytearray(self.held)
        self.held.clear()
        while True:
            try:
                chunk = self._run(lambda: self.tls.read(65536))
            except ssl.SSLZeroReturnError:
                return bytes(data), "close_notify"
            except ssl.SSLEOFError:
                return bytes(data), "fin"
            except ssl.SSLError as e:  # OpenSSL 3 without OP_IGNORE_UNEXPECTED_EOF
                if e.reason != "UNEXPECTED_EOF_WHILE_READING":
                    raise
                return bytes(data), "fin"
            if not chunk:  # the ssl module's answer to a close_notify
                return bytes(data), "close_notify"
            data += chunk

    def close_notify(self):
        """Sends our close_notify (the TLS half-close); we can still read.
        Records already received are decrypted first (kept for read()):
        unwrap() would otherwise meet them while it waits for the peer's
        close_notify, and OpenSSL fails on application data there."""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                break
            self.held += chunk
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass  # the peer's close_notify is not awaited
        self._flush()
