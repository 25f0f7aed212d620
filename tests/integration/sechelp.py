"""Helpers for the security-audit and fault-injection tests (test_security.py,
test_faults.py): a gateway process with its own resolver view, upstream
peers that misbehave on purpose, a raw CONNECT client, RSS and log readers.

Every wait polls with a deadline; every port is bound as 0 and read back.

Name resolution: each gateway runs in a private mount namespace
(unshare -m) where /etc/hosts and /etc/resolv.conf are bind-mounted from
files the test writes. The machine's files are never edited, names a test
needs resolve only there, and any name that is not in the test's hosts file
is sent to a nameserver on 127.0.0.1 where nothing answers: no DNS query can
ever leave this machine. Needs root (the suite runs as root, like CI).
"""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

MCGW_BIN = os.environ.get("MCGW_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "mcgw")

LOGFMT_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value; returns that value.
    Raises AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def parse_logfmt(line):
    """One log line, logfmt or JSON, as a dict of strings."""
    if line.startswith("{"):
        try:
            return {k: str(v) for k, v in json.loads(line).items()}
        except ValueError:
            return {}
    out = {}
    for key, value in LOGFMT_FIELD.findall(line):
        if value.startswith('"'):
            value = bytes(value[1:-1], "utf-8").decode("unicode_escape")
        out[key] = value
    return out


def is_sanitized(binary=MCGW_BIN):
    """True for an ASan build: its RSS says nothing about leaks (quarantine)."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def namespaces_usable():
    """Whether unshare -m with bind mounts works here (root, util-linux)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "--", "mount", "--bind", "/dev/null", "/dev/null"],
                       capture_output=True, timeout=10)
    return r.returncode == 0


class Gateway:
    """One mcgw process on 127.0.0.1 port 0 (proxy and admin), logging at
    debug level to a file.

    tunnel: lines for [tunnel] besides listen, e.g. ["allow = x:443"].
    hosts: lines of the gateway's private /etc/hosts ("127.0.0.1 name").
    nofile: RLIMIT_NOFILE (soft = hard) for the process, or None.
    """

    def __init__(self, tmp_path, tunnel=(), hosts=(), nofile=None, admin=True,
                 log_format="text", extra_sections=""):
        self.dir = tmp_path
        self.conf = tmp_path / "mcgw.ini"
        self.log_path = tmp_path / "mcgw.log"
        lines = ["[gateway]", "log_level = debug", f"log_format = {log_format}"]
        if admin:
            lines += ["[admin]", "listen = 127.0.0.1:0"]
        lines += ["[tunnel]", "listen = 127.0.0.1:0"] + list(tunnel)
        self.conf.write_text("\n".join(lines) + "\n" + extra_sections)
        (tmp_path / "hosts").write_text(
            "127.0.0.1 localhost\n::1 localhost\n" + "".join(h + "\n" for h in hosts))
        # Unlisted names go to a nameserver on loopback with nothing behind it.
        (tmp_path / "resolv.conf").write_text(
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self.nofile = nofile
        self.proc = None
        self.proxy_port = None
        self.admin_port = None
        self._log = None

    def start(self):
        self._log = open(self.log_path, "wb")
        script = ('mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf '
                  '&& shift 2 && exec "$@"')
        argv = ["unshare", "-m", "--", "sh", "-c", script, "sh",
                str(self.dir / "hosts"), str(self.dir / "resolv.conf"),
                MCGW_BIN, "run", "-c", str(self.conf)]
        if self.nofile:
            argv = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--"] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)

        def ports():
            if self.proc.poll() is not None:
                raise AssertionError(f"mcgw exited {self.proc.returncode}:\n{self.log()}")
            found = {}
            for rec in self.records("listening"):
                found[rec["kind"]] = int(rec["addr"].rsplit(":", 1)[1])
            return found if "proxy" in found else None

        found = wait_for(ports, what="mcgw to listen")
        self.proxy_port = found["proxy"]
        self.admin_port = found.get("admin")
        return self

    def stop(self, timeout=15):
        """SIGTERM, and the exit status must be 0 (a clean drain)."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("mcgw did not stop on SIGTERM")
        finally:
            self._log.close()
        return rc

    def log(self):
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def log_bytes(self):
        return self.log_path.read_bytes()

    def records(self, msg=None):
        out = []
        for line in self.log().splitlines():
            rec = parse_logfmt(line)
            if msg is None or rec.get("msg") == msg:
                out.append(rec)
        return out

    def access(self, client_port=None):
        """tunnel_closed records, optionally of one client source port."""
        recs = self.records("tunnel_closed")
        if client_port is not None:
            recs = [r for r in recs if r.get("client", "").endswith(f":{client_port}")]
        return recs

    def wait_access(self, client_port, timeout=10):
        return wait_for(lambda: self.access(client_port), timeout,
                        what=f"access log line of client port {client_port}")[0]

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def status(self):
        """GET /status from the admin listener, parsed."""
        with socket.create_connection(("127.0.0.1", self.admin_port), timeout=5) as s:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            data = recv_all(s, timeout=5)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        return json.loads(body)

    def wait_connections(self, n=0, timeout=15):
        """Until exactly n downstream connections are open on the gateway."""
        return wait_for(lambda: self.status()["tunnels"]["connections_active"] == n,
                        timeout, interval=0.05, what=f"{n} open connection(s) on the gateway")


def recv_all(sock, timeout=5.0, limit=1 << 24):
    """Reads until EOF (or reset); returns the bytes."""
    sock.settimeout(timeout)
    chunks = []
    total = 0
    deadline = time.monotonic() + timeout
    while total < limit:
        try:
            b = sock.recv(65536)
        except ConnectionResetError:
            break
        except socket.timeout:
            raise AssertionError(f"no EOF within {timeout}s; got {b''.join(chunks)[:200]!r}")
        if not b:
            break
        chunks.append(b)
        total += len(b)
        if time.monotonic() > deadline:
            raise AssertionError("recv_all deadline")
    return b"".join(chunks)


def read_head(sock, timeout=10.0):
    """Reads a response head (up to CRLFCRLF). Returns (status, head, rest);
    status 0 when the connection closed without one."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            b = sock.recv(4096)
        except ConnectionResetError:
            b = b""
        if not b:
            break
        buf += b
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return 0, buf, b""
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
    return (int(m.group(1)) if m else -1), head, rest


def connect_request(port, target, extra=b"", headers=b"", timeout=10.0):
    """Opens a connection to the proxy and sends CONNECT target. target is
    bytes or str, sent verbatim. Returns (sock, status, rest_of_bytes)."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n" + headers
              + b"\r\n" + extra)
    status, _, rest = read_head(s, timeout)
    return s, status, rest


def reset_close(sock):
    """Closes with a RST (SO_LINGER 0) instead of a FIN."""
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Upstream:
    """A TCP server on 127.0.0.1 (or ::1) port 0 run by a thread.

    mode: "echo" echoes; "sink" reads and counts; "silent" accepts and never
    reads or writes; "download" sends `size` bytes then resets;
    "reset_on_read" resets after it has read `size` bytes.
    Records accepted connections and bytes received."""

    def __init__(self, mode="echo", host="127.0.0.1", size=0, port=0):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.mode = mode
        self.size = size
        self.accepted = 0
        self.received = bytearray()
        self.conns = []
        self.errors = []
        self.ended = 0  # connections whose peer closed or reset (or we reset)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            if self.mode == "silent":
                return  # keep it open, never read: the test closes it
            if self.mode == "download":
                chunk = b"d" * 65536
                sent = 0
                while sent < self.size:
                    sent += c.send(chunk[: self.size - sent])
                reset_close(c)
                return
            got = 0
            while True:
                b = c.recv(65536)
                if not b:
                    break
                got += len(b)
                if len(self.received) < 1 << 20:
                    self.received += b[:1 << 20]
                if self.mode == "echo":
                    c.sendall(b)
                elif self.mode == "reset_on_read" and got >= self.size:
                    reset_close(c)
                    return
            if self.mode == "echo":
                c.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.errors.append(e)
        finally:
            if self.mode != "silent":
                self.ended += 1

    def close(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self._thread.join(timeout=2)


class Blackhole:
    """A listening socket on 127.0.0.1 with backlog 0 whose accept queue is
    kept full by one connection nobody accepts: further SYNs are dropped, so
    a connect to it neither succeeds nor fails - it times out."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", self.port))
        _, w, _ = select.select([], [filler], [], 5)
        assert w and filler.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        self.fillers.append(filler)
        # Proof: one more connect must now hang.
        probe = socket.socket()
        probe.setblocking(False)
        probe.connect_ex(("127.0.0.1", self.port))
        _, w, _ = select.select([], [probe], [], 0.5)
        self.works = not w
        probe.close()

    def close(self):
        for f in self.fillers:
            f.close()
        self.sock.close()


def echo_roundtrip(sock, payload=b"ping", timeout=5.0):
    """Sends payload through an established tunnel to an echo upstream and
    checks it comes back."""
    sock.settimeout(timeout)
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        b = sock.recv(65536)
        if not b:
            break
        got += b
    assert got == payload, f"echo returned {got[:60]!r}"
