"""Extensions of the shared harness (mcgwtest.py) for the security-audit and
fault-injection tests (test_security.py, test_faults.py).

Gateway is mcgwtest.Mcgw with, in addition:
- a private /etc/hosts (mcgwtest.loopback_dns_prefix with hosts): in its
  own mount namespace the daemon sees an /etc/hosts holding only the names
  the test maps (besides localhost) and a resolv.conf naming only 127.0.0.1
  (where nothing answers). Names a test needs resolve there without
  touching the machine's files, and no lookup ever leaves the machine;
- the text (logfmt) log format parsed into the same records;
- RSS and descriptor readers from /proc.
An optional RLIMIT_NOFILE (soft = hard: mcgw raises soft to hard) is
Mcgw's nofile.

Upstream handlers for misbehaving destinations are here too.
"""

import os
import shutil
import subprocess

import mcgwtest
from mcgwtest import BIN, Mcgw, loopback_dns_prefix, wait_until


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


class Gateway(Mcgw):
    parse_logfmt_lines = True

    def __init__(self, workdir, tunnel=None, gateway=None, admin=None, hosts=(), nofile=None):
        super().__init__(workdir, tunnel=tunnel, gateway=gateway, admin=admin, nofile=nofile)
        self.hosts = tuple(hosts)

    def command_prefix(self):
        """Runs a command with this gateway's /etc/hosts and resolv.conf."""
        return loopback_dns_prefix(self.workdir, hosts=self.hosts)

    def log_bytes(self):
        with self._cond:
            return bytes(self.output)

    def find(self, msg):
        with self._cond:
            return [r for r in self.records if r.get("msg") == msg]


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
        out = subprocess.run([*self.command_prefix(), "/usr/bin/python3", "-c", code, name],
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
