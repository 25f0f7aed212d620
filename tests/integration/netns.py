"""Network namespaces for uplink tests: an "uplink" is a namespace joined to
this one by a veth pair, with its own /30 and servers run inside it. Names
are unique per run (random suffix), so parallel runs do not clash; close()
deletes everything and is safe to call whatever happened."""

import os
import random
import shutil
import subprocess
import sys
import threading

import pytest


def ip(*args, check=True):
    return subprocess.run(["ip", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, check=check, timeout=30)


def require_netns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for network namespaces")


class Uplink:
    """A namespace NAME with veth HOST_IF (here, GW_ADDR) <-> PEER_IF (there,
    ADDR), a /30 from 10.200.0.0/16."""

    def __init__(self, plugged=True):
        """plugged=False: the namespace only; HOST_IF does not exist until
        plug() (an LTE modem whose interface appears after boot)."""
        tag = "%06x" % random.getrandbits(24)
        self.ns = f"mcgw-up-{tag}-{os.getpid()}"
        self.host_if, self.peer_if = f"mgu{tag}a", f"mgu{tag}b"
        base = random.randrange(0, 1 << 14) * 4  # a /30 in 10.200.0.0/16
        octets = lambda n: f"10.200.{(base + n) >> 8 & 255}.{(base + n) & 255}"
        self.gw_addr, self.addr = octets(1), octets(2)
        self.procs = []
        self.seen = []  # "ADDR:PORT" of each peer the echo servers saw
        self.routes = []  # (addr, metric) of serve_address, routed once plugged
        self.plugged = False
        try:
            ip("netns", "add", self.ns)
            self.exec_ip("link", "set", "lo", "up")
            if plugged:
                self.plug()
        except BaseException:
            self.close()
            raise

    def plug(self):
        """Creates the veth pair, its addresses and the served routes."""
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
        ip("link", "set", self.peer_if, "netns", self.ns)
        ip("addr", "add", f"{self.gw_addr}/30", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        self.exec_ip("addr", "add", f"{self.addr}/30", "dev", self.peer_if)
        self.exec_ip("link", "set", self.peer_if, "up")
        self.plugged = True
        for addr, metric in self.routes:
            self._route(addr, metric)

    def exec_ip(self, *args, check=True):
        return ip("netns", "exec", self.ns, "ip", *args, check=check)

    def link_down(self):
        """The uplink is gone: its far end goes down; packets to it vanish."""
        self.exec_ip("link", "set", self.peer_if, "down")

    def serve_address(self, addr, metric):
        """addr (a /32) answers inside the namespace, reached from here
        through this uplink (a host route with metric): the same address may
        be served by several uplinks, as an MC server behind two PDNs."""
        self.exec_ip("addr", "add", f"{addr}/32", "dev", "lo")
        self.routes.append((addr, metric))
        if self.plugged:
            self._route(addr, metric)

    def _route(self, addr, metric):
        ip("route", "add", f"{addr}/32", "via", self.addr, "dev", self.host_if, "metric",
           str(metric))

    def blackhole6(self):
        """An IPv6 address routed from here through this uplink, where a
        blackhole route swallows every packet to it: no answer and no ICMP
        error, so a connect() there hangs (an IPv6 path that is broken while
        IPv4 works). A 2001:db8::/32 address: RFC 6724 ranks it above IPv4,
        so a resolver that sorts puts it first. Returns the address."""
        prefix = "2001:db8:%x" % random.randrange(1, 1 << 16)
        here, there, hole = f"{prefix}::1", f"{prefix}::2", f"{prefix}:1::1"
        ip("-6", "addr", "add", f"{here}/64", "dev", self.host_if, "nodad")
        self.exec_ip("-6", "addr", "add", f"{there}/64", "dev", self.peer_if, "nodad")
        self.exec_ip("-6", "route", "add", "blackhole", f"{hole}/128")
        ip("-6", "route", "add", f"{hole}/128", "via", there, "dev", self.host_if)
        return hole

    def echo_server(self, addr=None, port=0):
        """An echo server inside the namespace on addr (default ADDR):port;
        returns the port. It prints "peer ADDR PORT" for each echo
        (peers())."""
        code = ("import socket,threading,sys\n"
                f"s=socket.socket();s.bind(('{addr or self.addr}',{port}));s.listen(16)\n"
                "print(s.getsockname()[1],flush=True)\n"
                "def echo(c):\n"
                "  with c:\n"
                "    while True:\n"
                "      d=c.recv(65536)\n"
                "      if not d: return\n"
                "      print('peer',c.getpeername()[0],c.getpeername()[1],flush=True)\n"
                "      c.sendall(d)\n"
                "while True:\n"
                "  c,_=s.accept();threading.Thread(target=echo,args=(c,),daemon=True).start()\n")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", code],
                             stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        port = int(p.stdout.readline())
        threading.Thread(target=self._peers, args=(p,), daemon=True).start()
        return port

    def _peers(self, p):
        for line in p.stdout:
            if line.startswith("peer "):
                _, a, port = line.split()
                self.seen.append(f"{a}:{port}")

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        ip("netns", "del", self.ns, check=False)
        ip("link", "del", self.host_if, check=False)  # gone with the namespace, normally
