"""Extensions of the shared harness (mcgwtest.py) for the security-audit and
fault-injection tests (test_security.py, test_faults.py).

Gateway is mcgwtest.Mcgw with, in addition:
- a private /etc/hosts: the daemon runs in its own mount namespace where
  /etc/hosts holds only the names the test maps (besides localhost) and
  /etc/resolv.conf names only 127.0.0.1 (where nothing answers). Names a
  test needs resolve there without touching the machine's files, and no
  lookup ever leaves the machine;
- an optional RLIMIT_NOFILE (soft = hard: mcgw raises soft to hard);
- the text (logfmt) log format, parsed into the same records;
- RSS and descriptor readers from /proc.

Upstream handlers for misbehaving destinations are here too.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import threading

import mcgwtest
from mcgwtest import BIN, Mcgw, wait_until

LOGFMT_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def namespaces_usable():
    """Whether unshare -m with bind mounts works here (root, util-linux)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "--", "mount", "--bind", "/dev/null", "/dev/null"],
                       capture_output=True, timeout=10)
    return r.returncode == 0


def is_sanitized(binary=BIN):
    """True for an ASan build: its RSS says nothing about leaks (quarantine
    keeps freed memory; LSan checks leaks there instead)."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


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


class Gateway(Mcgw):
    def __init__(self, workdir, tunnel=None, gateway=None, admin=None, hosts=(), nofile=None):
        super().__init__(workdir, tunnel=tunnel, gateway=gateway, admin=admin)
        (self.workdir / "hosts").write_text(
            "127.0.0.1 localhost\n::1 localhost\n" + "".join(h + "\n" for h in hosts))
        (self.workdir / "resolv.conf").write_text(
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        self.nofile = nofile

    def namespace_prefix(self):
        """Runs a command with this gateway's /etc/hosts and resolv.conf."""
        script = ('mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf '
                  '&& shift 2 && exec "$@"')
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
                str(self.workdir / "hosts"), str(self.workdir / "resolv.conf")]

    def start(self, timeout=15):
        argv = [*self.namespace_prefix(), str(BIN), "run", "-c", str(self.config_path)]
        if self.nofile:
            argv = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--", *argv]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_log(lambda r: r.get("msg") == "ready", timeout, "the ready record")
        return self

    def _read(self):
        """As Mcgw._read, and logfmt lines become records too."""
        for line in self.proc.stdout:
            text = line.decode("utf-8", "replace").rstrip("\n")
            rec = None
            if text.startswith("{"):
                try:
                    rec = json.loads(text)
                except ValueError:
                    rec = None
            elif text.startswith("ts="):
                rec = parse_logfmt(text)
            with self._cond:
                self.output += line
                if isinstance(rec, dict):
                    self.records.append(rec)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def log_bytes(self):
        with self._cond:
            return bytes(self.output)

    def find(self, msg):
        with self._cond:
            return [r for r in self.records if r.get("msg") == msg]

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def open_fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def connections(self):
        return self.status()["tunnels"]["connections_active"]

    def wait_connections(self, n, timeout=15):
        """Until exactly n downstream connections are open on the gateway."""
        return wait_until(lambda: self.connections() == n, timeout,
                          f"{n} open connection(s) on the gateway", interval=0.05)

    def resolve(self, name):
        """The addresses getaddrinfo gives mcgw for name, in order: the same
        /etc/hosts, the same hints (AF_UNSPEC, SOCK_STREAM, no flags)."""
        code = ("import socket,sys\n"
                "for ai in socket.getaddrinfo(sys.argv[1], 1, 0, socket.SOCK_STREAM):\n"
                "    print(ai[4][0])\n")
        out = subprocess.run([*self.namespace_prefix(), "/usr/bin/python3", "-c", code, name],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return out.split()


def gateway_factory(tmp_path):
    """For a fixture: returns (start, daemons). start(**kw) makes and starts a
    Gateway; the fixture stops every daemon and checks for sanitizer reports."""
    daemons = []

    def start(tunnel=None, gateway=None, admin=None, hosts=(), nofile=None):
        g = Gateway(tmp_path / f"gw{len(daemons)}", tunnel=tunnel, gateway=gateway,
                    admin=admin, hosts=hosts, nofile=nofile)
        daemons.append(g)
        return g.start()

    return start, daemons


def stop_all(daemons):
    for d in daemons:
        d.stop()
    for d in daemons:
        d.assert_no_sanitizer_report()


# ---- upstream handlers (for mcgwtest.Upstream) ----

def sink_handler(conn):
    """Reads to EOF; returns the byte count. A reset is raised (and so
    reported by Upstream.outcome())."""
    n = 0
    while True:
        data = conn.recv(mcgwtest.CHUNK)
        if not data:
            return n
        n += len(data)


def send_then_reset(size):
    """Sends size bytes, then closes with a RST."""
    def handler(conn):
        chunk = b"d" * 65536
        sent = 0
        while sent < size:
            sent += conn.send(chunk[: size - sent])
        mcgwtest.reset(conn)
        return sent
    return handler


def reset_after_reading(size):
    """Reads size bytes, then closes with a RST."""
    def handler(conn):
        got = 0
        while got < size:
            data = conn.recv(mcgwtest.CHUNK)
            if not data:
                break
            got += len(data)
        mcgwtest.reset(conn)
        return got
    return handler


def silent(released):
    """Accepts and never reads nor writes, until released (an Event) is set."""
    def handler(conn):
        released.wait(120)
        return None
    return handler
