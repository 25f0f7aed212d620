"""DNS servers for the resolver tests, on loopback with kernel-chosen ports.

- SilentResolver: a UDP socket that reads every query and never answers
  (an uplink whose DNS is gone); counts what it received.
- Dnsmasq: Debian's dnsmasq as the real server, answering only the names
  it is given (host-record), NXDOMAIN for the rest of the zone, and logging
  every query it receives, so a test counts what reached the server.
"""

import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mcgwtest import wait_until


def qname(packet):
    """The question name of a DNS query packet, lowercased."""
    labels, i = [], 12
    while i < len(packet) and packet[i]:
        n = packet[i]
        labels.append(packet[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    return ".".join(labels).lower()


class SilentResolver:
    """Receives DNS queries on 127.0.0.1:port and never replies."""

    def __init__(self, port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.names = []  # one entry per query packet received
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    @property
    def server(self):
        return f"127.0.0.1:{self.port}"

    def _read(self):
        while True:
            try:
                data, _ = self.sock.recvfrom(4096)
            except OSError:
                return
            with self._lock:
                self.names.append(qname(data))

    def count(self, name):
        with self._lock:
            return sum(1 for n in self.names if n == name)

    def close(self):
        self.sock.close()


def require_dnsmasq():
    path = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq"
                                       if Path("/usr/sbin/dnsmasq").exists() else None)
    if not path:
        pytest.skip("dnsmasq not installed (scripts/deps.sh test installs dnsmasq-base)")
    return path


QUERY_LINE = re.compile(r"query\[(\w+)\] (\S+) from")


class Dnsmasq:
    """dnsmasq on 127.0.0.1:port for zone `zone`: names in records
    ({name: ipv4}) answer with ttl seconds, any other name in the zone is
    NXDOMAIN. Queries are read from its log (log-queries, to a pipe)."""

    def __init__(self, workdir, records, zone="test", ttl=60, port=0):
        binary = require_dnsmasq()
        self.queries = []  # (type, name)
        self._lock = threading.Lock()
        for _ in range(5):  # a port free for UDP may be taken for TCP: another one then
            self.port = port or self._udp_port()
            argv = [binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                    "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
                    f"--port={self.port}", "--log-queries", "--log-facility=-", "--user=root",
                    "--pid-file=", f"--local=/{zone}/", f"--local-ttl={ttl}", "--cache-size=0"]
            argv += [f"--host-record={name},{addr}" for name, addr in records.items()]
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, cwd=workdir)
            self.output = []
            self._started = threading.Event()
            reader = threading.Thread(target=self._read, daemon=True)
            reader.start()
            wait_until(lambda: self._started.is_set() or self.proc.poll() is not None, 10,
                       "dnsmasq started or exited")
            if self._started.is_set():
                return
            self.proc.wait()
            reader.join(10)  # all it said, before looking at it
            if port or "in use" not in "".join(self.output):
                break
        raise AssertionError("dnsmasq did not start: " + "".join(self.output))

    @staticmethod
    def _udp_port():
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        return port

    @property
    def server(self):
        return f"127.0.0.1:{self.port}"

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            self.output.append(line)
            if "started, version" in line:
                self._started.set()
            m = QUERY_LINE.search(line)
            if m:
                with self._lock:
                    self.queries.append((m.group(1), m.group(2).lower()))

    def count(self, name, qtype="A"):
        with self._lock:
            return sum(1 for t, n in self.queries if n == name and t == qtype)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
