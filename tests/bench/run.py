#!/usr/bin/python3
"""Side-by-side benchmark: mcgw, Squid and tinyproxy on loopback, same run.

Run through `make bench` (builds, installs Squid, tinyproxy and gnuplot with
scripts/deps.sh bench, then runs this). Everything listens on 127.0.0.1 and
nothing is sent anywhere else.

Each proxy is configured equivalently: CONNECT only, only to 127.0.0.1 and
only to the upstream ports of tests/bench/loadgen.c; no cache; logging off;
RLIMIT_NOFILE raised to the hard limit; connection limits above the test's.

Measured, in one run, interleaving the proxies so drift on a shared machine
hits all three alike:
  hold   N idle tunnels (each verified by a 1-byte echo): proxy RSS at each
         step (fresh proxy processes), CPU time over BENCH_IDLE_S of idleness
  setup  tunnel set-up rate and latency (connect, CONNECT, 200, 1-byte echo,
         close) at several concurrencies; BENCH_RUNS repeats, median
  bulk   one tunnel, BENCH_BYTES up (to a sink) and down (from a source)
  h2     mcgw only (Squid and tinyproxy do not do HTTP/2 CONNECT): over TLS
         (ALPN h2, a throw-away CA and server certificate made with the
         openssl CLI), H2_STREAMS CONNECT streams on one connection moving
         BENCH_BYTES in all up and down; and RSS per idle stream (H2_STREAMS
         on one connection, and 10 x H2_STREAMS on 10 connections, each
         stream verified by a 1-byte echo), fresh mcgw for each

Environment: BENCH_QUICK=1 for a short run; BENCH_OUT=DIR for the results
(default build/bench); BENCH_PROXIES=mcgw,squid,tinyproxy to choose;
BENCH_TUNNELS, BENCH_RUNS, BENCH_BYTES, BENCH_IDLE_S to override.
Outputs: results.json, results.md (the table), memory.png, setup_rate.png.
"""
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD", os.path.join(SRC, "build"))
QUICK = os.environ.get("BENCH_QUICK") == "1"
OUT = os.path.abspath(os.environ.get("BENCH_OUT", os.path.join(BUILD, "bench")))
MCGW = os.path.join(BUILD, "mcgw")
LOADGEN = os.path.join(BUILD, "mcgw_loadgen")

HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
# Each tunnel costs the proxy two descriptors; leave 200 for the proxies'
# own files, listeners and logs so that all three can hold the same count.
MAX_BY_NOFILE = (HARD_NOFILE - 200) // 2 if HARD_NOFILE != resource.RLIM_INFINITY else 10000


def env_int(name, default):
    return int(os.environ.get(name, default))


TUNNELS = env_int("BENCH_TUNNELS", min(10000, MAX_BY_NOFILE) if not QUICK else 2000)
RUNS = env_int("BENCH_RUNS", 3 if not QUICK else 1)
BULK_BYTES = env_int("BENCH_BYTES", 2 << 30 if not QUICK else 256 << 20)
IDLE_S = float(os.environ.get("BENCH_IDLE_S", 10 if not QUICK else 3))
SETUP_S = 4.0 if not QUICK else 1.5
SWEEP_S = 2.0 if not QUICK else 1.0
WARMUP_S = 0.5
HEADLINE_C = 50
CONCURRENCY = [1, 10, 50, 100, 200] if not QUICK else [1, 50, 200]
PROXIES = os.environ.get("BENCH_PROXIES", "mcgw,squid,tinyproxy").split(",")
H2 = os.environ.get("BENCH_H2", "1") == "1"
H2_STREAMS = env_int("BENCH_H2_STREAMS", 100)
H2_CONNS = 10  # for the many-connection memory figure
H2_WINDOW = 16 << 20  # the load generator's per-stream receive window

CLK_TCK = os.sysconf("SC_CLK_TCK")
children = []  # every process started here, stopped in cleanup()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn(cmd, **kw):
    """Starts cmd in its own process group with RLIMIT_NOFILE at the hard limit."""
    p = subprocess.Popen(cmd, preexec_fn=raise_nofile, start_new_session=True, **kw)
    children.append(p)
    return p


def stop(p, timeout=10):
    """SIGTERM to p's process group, SIGKILL after timeout; reaps it."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    if p in children:
        children.remove(p)


def cleanup():
    for p in list(children):
        stop(p, timeout=5)


class LineReader:
    """Reads lines from a child's stdout with a deadline (no blocking forever)."""

    def __init__(self, proc):
        self.proc = proc
        self.buf = b""

    def line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no output from %s within %.0f s" % (self.proc.args[:2], timeout))
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise EOFError("%s exited (rc=%s)" % (self.proc.args[:2], self.proc.wait()))
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def kv(line):
    """key=value pairs of a loadgen line, numbers converted."""
    out = {}
    for m in re.finditer(r"(\w+)=(\S+)", line):
        v = m.group(2)
        try:
            v = float(v) if "." in v else int(v)
        except ValueError:
            pass
        out[m.group(1)] = v
    return out


def wait_port(port, proc, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def free_port():
    """A port the kernel picked as free (for the proxies that cannot bind 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listen_ports(pid):
    """TCP ports pid listens on, from /proc (for mcgw, which binds port 0)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    for name in ("tcp", "tcp6"):
        with open("/proc/%d/net/%s" % (pid, name)) as f:
            for row in f.readlines()[1:]:
                col = row.split()
                if col[3] == "0A" and col[9] in inodes:
                    ports.append(int(col[1].split(":")[1], 16))
    return ports


# ------------------------------------------------------------ process stats

def tree(pid):
    """pid and all its descendants."""
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def status_kib(pid, field):
    total = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/status" % p) as f:
                for row in f:
                    if row.startswith(field + ":"):
                        total += int(row.split()[1])
        except OSError:
            pass
    return total


def cpu_s(pid):
    total = 0
    for p in tree(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                col = f.read().rsplit(")", 1)[1].split()
            total += int(col[11]) + int(col[12])  # utime, stime
        except OSError:
            pass
    return total / CLK_TCK


def sched_ns(pid):
    """(ns on a CPU, ns runnable but waiting for a CPU) of pid's threads, from
    /proc/PID/task/*/schedstat: waiting time means other work held the CPU."""
    run = wait = 0
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                col = f.read().split()
            run += int(col[0])
            wait += int(col[1])
    except OSError:
        pass
    return run, wait


def n_fds(pid):
    return sum(len(os.listdir("/proc/%d/fd" % p)) for p in tree(pid) if os.path.isdir("/proc/%d/fd" % p))


def steady_fds(pid, timeout=10):
    """pid's descriptor count once it holds still (five equal readings 50 ms
    apart): a baseline taken while an earlier connection is still closing
    would be one too high."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        seen.append(n_fds(pid))
        if len(seen) >= 5 and len(set(seen[-5:])) == 1:
            return seen[-1]
        time.sleep(0.05)
    raise RuntimeError("pid %d: no steady descriptor count within %ss: %s" % (pid, timeout, seen[-5:]))


def threads(pid):
    return status_kib(pid, "Threads")


def meminfo_kib(field):
    with open("/proc/meminfo") as f:
        for row in f:
            if row.startswith(field + ":"):
                return int(row.split()[1])
    return 0


# ------------------------------------------------------------------ proxies

class Proxy:
    name = "?"

    def __init__(self, tmp, up):
        self.dir = os.path.join(tmp, self.name)
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o777)  # Squid and tinyproxy drop root for their own users
        self.up = up
        # The allowlist: the real upstream ports only (not the fake proxy's).
        self.allowed = [up[k] for k in ("echo", "sink", "source")]
        self.proc = None
        self.port = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        for _ in range(3):  # a picked free port can be taken in between: retry
            self.launch()
            if self.port and wait_port(self.port, self.proc):
                return
            stop(self.proc)
        raise RuntimeError("%s did not start; see %s" % (self.name, self.dir))

    def stop(self):
        if self.proc:
            stop(self.proc)
        self.proc = None

    def version(self):
        return "?"


class Mcgw(Proxy):
    name = "mcgw"

    def listeners(self):
        return "listen = 127.0.0.1:0\n"

    def rates(self):
        """The load generator is one client opening thousands of tunnels a
        second to one target: the new-tunnel rates are off (McgwRateLimit
        measures them on)."""
        return "max_new_tunnels_per_client = 0/s\nmax_new_upstream_per_target = 0/s\n"

    def allow(self):
        return "".join("allow = 127.0.0.1:%d\n" % p for p in self.allowed)

    def sections(self):
        """Sections after [tunnel]."""
        return ""

    def launch(self):
        conf = os.path.join(self.dir, "mcgw.ini")
        with open(conf, "w") as f:
            f.write("[gateway]\nlog_level = warn\n[admin]\nlisten = off\n[tunnel]\n" +
                    self.listeners() + self.allow() +
                    "allow_private = yes\nrequire_tls = no\n"
                    "max_tunnels = 20000\nmax_tunnels_per_client = 20000\n" + self.rates() +
                    self.sections())
        self.log = open(os.path.join(self.dir, "mcgw.log"), "w")
        self.proc = spawn([MCGW, "run", "-c", conf], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        self.port = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            ports = listen_ports(self.proc.pid)
            if ports:
                self.port = ports[0]
                break
            time.sleep(0.05)

    def version(self):
        v = subprocess.run([MCGW, "--version"], capture_output=True, text=True).stdout.strip()
        rev = subprocess.run(["git", "-C", SRC, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        return "%s (git %s)" % (v, rev)


class McgwCopy(Mcgw):
    """mcgw with splice = off: the copy relay, for the bulk rows' comparison
    of both relay paths in the same run."""
    name = "mcgw-copy"

    def listeners(self):
        return "listen = 127.0.0.1:0\nsplice = off\n"


class McgwRateLimit(Mcgw):
    """mcgw with both new-tunnel rates on, set so high that nothing is
    refused: every set-up pays for the bucket checks, for the set-up CPU
    comparison with the rates off."""
    name = "mcgw-ratelimit"

    def rates(self):
        return ("max_new_tunnels_per_client = 1000000/s\nnew_tunnels_burst = 1000000\n"
                "max_new_upstream_per_target = 1000000/s\n")


class Squid(Proxy):
    name = "squid"

    def launch(self):
        self.port = free_port()
        conf = os.path.join(self.dir, "squid.conf")
        with open(conf, "w") as f:
            f.write("""http_port 127.0.0.1:%(port)d
acl bench_ports port %(ports)s
acl bench_dst dst 127.0.0.1
acl CONNECT method CONNECT
http_access allow CONNECT bench_dst bench_ports
http_access deny all
cache deny all
cache_mem 0 MB
access_log none
cache_store_log none
cache_log %(dir)s/cache.log
pid_filename none
max_filedescriptors %(nofile)d
visible_hostname bench
dns_nameservers 127.0.0.1
pinger_enable off
digest_generation off
shutdown_lifetime 0 seconds
coredump_dir %(dir)s
""" % {"port": self.port, "ports": " ".join(str(p) for p in self.allowed),
       "dir": self.dir, "nofile": HARD_NOFILE})
        self.proc = spawn(["squid", "-N", "-f", conf], stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(self.dir, "stderr"), "w"))

    def version(self):
        out = subprocess.run(["squid", "-v"], capture_output=True, text=True).stdout
        return out.splitlines()[0].replace("Squid Cache: Version ", "Squid ")


class Tinyproxy(Proxy):
    name = "tinyproxy"

    def launch(self):
        self.port = free_port()
        conf = os.path.join(self.dir, "tinyproxy.conf")
        filt = os.path.join(self.dir, "filter")
        with open(filt, "w") as f:
            f.write("^127\\.0\\.0\\.1$\n")
        with open(conf, "w") as f:
            f.write("""User nobody
Group nogroup
Port %(port)d
Listen 127.0.0.1
Timeout 3600
LogFile "%(dir)s/tinyproxy.log"
LogLevel Critical
MaxClients %(max)d
Allow 127.0.0.1
%(ports)s
Filter "%(filter)s"
FilterDefaultDeny Yes
DisableViaHeader Yes
""" % {"port": self.port, "dir": self.dir, "filter": filt, "max": HARD_NOFILE,
       "ports": "\n".join("ConnectPort %d" % p for p in self.allowed)})
        self.proc = spawn(["tinyproxy", "-d", "-c", conf], stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(self.dir, "stderr"), "w"))

    def version(self):
        out = subprocess.run(["tinyproxy", "-v"], capture_output=True, text=True).stdout
        return out.strip()


class McgwTls(Mcgw):
    """mcgw with a TLS listener only (ALPN h2 or http/1.1), the engine's
    HTTP/2 defaults (h2_max_concurrent_streams, h2_stream_window) unchanged."""
    name = "mcgw-tls"

    def __init__(self, tmp, up, pki):
        super().__init__(tmp, up)
        self.pki = pki

    def listeners(self):
        return "listen_tls = 127.0.0.1:0\ntls_cert = %s\ntls_key = %s\n" % (
            self.pki["cert"], self.pki["key"])


def openssl(args, cwd):
    subprocess.run(["openssl"] + args, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, timeout=60)


def make_pki(directory):
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it
    (P-256), made with the openssl CLI; the keys are 0600."""
    os.makedirs(directory, exist_ok=True)
    openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=mcgw bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)
    openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"], directory)
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext"],
            directory)
    for k in ("ca.key", "server.key"):
        os.chmod(os.path.join(directory, k), 0o600)
    return {"ca": os.path.join(directory, "ca.crt"), "cert": os.path.join(directory, "server.crt"),
            "key": os.path.join(directory, "server.key")}


CLASSES = {"mcgw": Mcgw, "squid": Squid, "tinyproxy": Tinyproxy}


class Fake:
    """The upstream's fake proxy (200 then echo): the load generator's ceiling."""
    name = "ceiling"

    def __init__(self, port):
        self.port = port


# ------------------------------------------------------------- measurements

def loadgen(args, timeout):
    r = subprocess.run([LOADGEN] + args, capture_output=True, text=True, timeout=timeout,
                       preexec_fn=raise_nofile)
    res = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    if not res:
        raise RuntimeError("loadgen %s: no result (rc=%d): %s" % (args[0], r.returncode, r.stderr))
    return kv(res[-1])


class McgwDns(Mcgw):
    """mcgw reaching the echo server by name: a local dnsmasq answers
    bench.test with 127.0.0.1 and a 1 h TTL, so after the first lookup every
    set-up is a resolver cache hit. Compared with the IP literal, the cost of
    a cached lookup on the set-up path."""
    name = "mcgw-dns"
    HOST = "bench.test"

    def __init__(self, tmp, up):
        super().__init__(tmp, up)
        self.dns_port = free_port()
        self.dns = spawn([shutil.which("dnsmasq") or "/usr/sbin/dnsmasq", "--keep-in-foreground",
                          "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                          "--bind-interfaces", "--listen-address=127.0.0.1",
                          "--port=%d" % self.dns_port, "--user=root", "--pid-file=",
                          "--local=/test/", "--local-ttl=3600",
                          "--host-record=%s,127.0.0.1" % self.HOST],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def allow(self):
        return "allow = %s:%d\n" % (self.HOST, self.up["echo"])

    def sections(self):
        return "[dns]\nservers = 127.0.0.1:%d\n" % self.dns_port

    def stop(self):
        super().stop()
        if self.dns:
            stop(self.dns)
        self.dns = None


def cached_name_runs(tmp, up, literal):
    """Set-up rate at HEADLINE_C to a cached name against the IP literal,
    runs interleaved; (name rate, literal rate, ratio), medians."""
    if not (shutil.which("dnsmasq") or os.path.exists("/usr/sbin/dnsmasq")):
        log("bench: dnsmasq not installed: no cached-name run")
        return {}
    p = McgwDns(os.path.join(tmp, "dns"), up)
    try:
        p.start()
        target = "%s:%d" % (McgwDns.HOST, up["echo"])
        setup_run(p, up, 1, 0.5, target)  # the first lookup fills the cache
        names, literals = [], []
        for k in range(max(RUNS, 3)):
            order = [(p, target, names), (literal, None, literals)]
            for proxy, tgt, out in order if k % 2 else order[::-1]:
                out.append(setup_run(proxy, up, HEADLINE_C, SETUP_S, tgt)["rate"])
    finally:
        p.stop()
    name_rate, literal_rate = med(names), med(literals)
    ratio = name_rate / literal_rate if literal_rate else None
    log("bench: set-up to a cached name %.0f/s, to the IP literal %.0f/s: %.2fx" %
        (name_rate, literal_rate, ratio or 0))
    return {"setup_rate_cached_name": name_rate, "setup_rate_literal_paired": literal_rate,
            "cached_name_ratio": ratio, "cached_name_runs": names, "literal_paired_runs": literals}


def setup_run(proxy, up, c, secs, target=None):
    """Also the CPU (cores busy over the run) of the proxy and of the
    upstream process, beside the load generator's own: on this 2-core
    machine their sum says whether the machine itself was the limit.
    target: the CONNECT target (default the echo server's IP literal)."""
    pids = {"upstream_cpu": up["pid"]}
    if getattr(proxy, "proc", None):
        pids["proxy_cpu"] = proxy.pid
    c0 = {k: cpu_s(p) for k, p in pids.items()}
    t0 = time.monotonic()
    r = loadgen(["setup", "--proxy", "127.0.0.1:%d" % proxy.port,
                 "--target", target or "127.0.0.1:%d" % up["echo"], "-c", str(c), "-d", str(secs),
                 "--warmup", str(WARMUP_S)], timeout=secs + 60)
    wall = time.monotonic() - t0
    for k, p in pids.items():
        r[k] = (cpu_s(p) - c0[k]) / wall
    return r


def bulk_run(proxy, up, direction):
    """Also the proxy's CPU seconds per GB moved (its whole process tree)."""
    port = up["sink"] if direction == "up" else up["source"]
    pid = proxy.pid if getattr(proxy, "proc", None) else None
    c0 = cpu_s(pid) if pid else 0
    r = loadgen(["bulk", "--proxy", "127.0.0.1:%d" % proxy.port,
                 "--target", "127.0.0.1:%d" % port, "--bytes", str(BULK_BYTES),
                 "--dir", direction], timeout=180)
    if pid:
        r["proxy_cpu_s_per_gb"] = (cpu_s(pid) - c0) / (BULK_BYTES / 1e9)
    return r


def check_policy(proxy, up):
    """Each proxy must refuse a CONNECT outside the allowlist: 127.0.0.1 on a
    port that is not an upstream port (the fake proxy's would do: it is not in
    any allowlist)."""
    r = loadgen(["setup", "--proxy", "127.0.0.1:%d" % proxy.port,
                 "--target", "127.0.0.1:%d" % up["fake"], "-n", "1", "-c", "1"], timeout=30)
    if r.get("ok") != 0 or r.get("fail_status") != 1:
        raise RuntimeError("%s did not refuse a CONNECT outside its allowlist: %s" % (proxy.name, r))


def settle(proxy, fds_before, timeout=60):
    """Waits until the proxy has closed what the last test opened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if n_fds(proxy.pid) <= fds_before + 8:
            return
        time.sleep(0.2)
    log("warning: %s still has %d descriptors open (had %d)" % (proxy.name, n_fds(proxy.pid), fds_before))


def step_levels(lg, rd, pid, levels, timeout):
    """Walks a hold-mode load generator through its levels: at each LEVEL
    line appends (tunnels ok, RSS of pid in KiB) to levels and sends SIGUSR1
    for the next; returns the HELD line's fields (after appending it too)."""
    while True:
        line = rd.line(timeout=timeout)
        info = kv(line)
        levels.append((info["ok"], status_kib(pid, "VmRSS")))
        if line.startswith("HELD"):
            return info
        os.kill(lg.pid, signal.SIGUSR1)


def hold_run(proxy, up):
    """Fresh proxy: RSS at 0 (after 20 warm-up tunnels) and at each step up to
    TUNNELS idle tunnels, then CPU time over IDLE_S seconds of idleness."""
    loadgen(["setup", "--proxy", "127.0.0.1:%d" % proxy.port, "--target",
             "127.0.0.1:%d" % up["echo"], "-n", "20", "-c", "5"], timeout=30)
    fds0 = n_fds(proxy.pid)
    time.sleep(0.5)
    levels = [(0, status_kib(proxy.pid, "VmRSS"))]
    slab0 = meminfo_kib("Slab")
    steps = sorted({s for s in (TUNNELS // 10, TUNNELS // 4, TUNNELS // 2, TUNNELS * 3 // 4) if s})
    lg = spawn([LOADGEN, "hold", "--proxy", "127.0.0.1:%d" % proxy.port, "--target",
                "127.0.0.1:%d" % up["echo"], "-n", str(TUNNELS), "-c", "100",
                "--steps", ",".join(map(str, steps))], stdout=subprocess.PIPE)
    rd = LineReader(lg)
    t_open = time.monotonic()
    out = {}
    try:
        info = step_levels(lg, rd, proxy.pid, levels, timeout=300)
        out["open_s"] = time.monotonic() - t_open
        out["established"] = info["ok"]
        out["failed"] = info["failed"]
        out["fds"] = n_fds(proxy.pid)
        out["threads"] = threads(proxy.pid)
        out["slab_kib"] = meminfo_kib("Slab") - slab0
        out["rss_anon_kib"] = status_kib(proxy.pid, "RssAnon")
        c0 = cpu_s(proxy.pid)
        time.sleep(IDLE_S)  # the measurement window itself, not a synchronisation
        out["idle_cpu_ms"] = (cpu_s(proxy.pid) - c0) * 1000
        out["idle_cpu_window_s"] = IDLE_S
        levels.append((info["ok"], status_kib(proxy.pid, "VmRSS")))
        os.kill(lg.pid, signal.SIGTERM)
        res = kv(rd.line(timeout=60))
        out["dropped"] = res.get("dropped", 0)
    finally:
        stop(lg)
    out["levels"] = levels
    rss0, rss_n = levels[0][1], levels[-1][1]
    n = max(out["established"], 1)
    out["rss0_kib"] = rss0
    out["rss_kib"] = rss_n
    out["per_tunnel_kib"] = (rss_n - rss0) / n
    xs = [l[0] for l in levels]
    ys = [l[1] for l in levels]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    out["slope_kib"] = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0
    settle(proxy, fds0)
    return out


def h2_bulk_run(proxy, up, pki, direction):
    """H2_STREAMS streams on one TLS connection, BULK_BYTES in all; also
    mcgw's CPU (cores busy) over the loadgen's whole run."""
    port = up["sink"] if direction == "up" else up["source"]
    s0 = sched_ns(proxy.pid)
    c0, t0 = cpu_s(proxy.pid), time.monotonic()
    r = loadgen(["h2", "bulk", "--proxy", "127.0.0.1:%d" % proxy.port, "--target",
                 "127.0.0.1:%d" % port, "--ca", pki["ca"], "--streams", str(H2_STREAMS),
                 "--bytes", str(BULK_BYTES), "--dir", direction, "--window", str(H2_WINDOW)],
                timeout=180)
    wall = time.monotonic() - t0
    s1 = sched_ns(proxy.pid)
    r["mcgw_cpu"] = (cpu_s(proxy.pid) - c0) / wall
    r["mcgw_on_cpu"] = (s1[0] - s0[0]) / 1e9 / wall
    r["mcgw_waiting_for_cpu"] = (s1[1] - s0[1]) / 1e9 / wall
    return r


def h2_hold_run(up, pki, tmp, conns, streams, idle_s=0):
    """Fresh mcgw: RSS with no connection (after a warm-up connection with 20
    streams, closed), with `conns` TLS connections open and SETTINGS
    exchanged but no stream, and at steps up to `streams` idle streams, each
    verified by a 1-byte echo; then CPU over idle_s seconds."""
    p = McgwTls(tmp, up, pki)
    p.start()
    out = {}
    try:
        fds0 = n_fds(p.pid)
        loadgen(["h2", "hold", "--proxy", "127.0.0.1:%d" % p.port, "--target",
                 "127.0.0.1:%d" % up["echo"], "--ca", pki["ca"], "--streams", "20",
                 "--pause", "0.01", "--hold-secs", "0.01"], timeout=30)
        settle(p, fds0)  # the warm-up's connection and its 20 upstream sockets are gone
        time.sleep(0.5)
        out["rss_none_kib"] = status_kib(p.pid, "VmRSS")
        steps = sorted({s for s in (streams // 4, streams // 2, streams * 3 // 4) if s})
        lg = spawn([LOADGEN, "h2", "hold", "--proxy", "127.0.0.1:%d" % p.port, "--target",
                    "127.0.0.1:%d" % up["echo"], "--ca", pki["ca"], "--streams", str(streams),
                    "--conns", str(conns), "--steps", ",".join(map(str, steps))],
                   stdout=subprocess.PIPE)
        rd = LineReader(lg)
        levels = []
        try:
            info = step_levels(lg, rd, p.pid, levels, timeout=120)
            out["conns"] = info["conns"]
            out["established"] = info["ok"]
            out["failed"] = info["failed"]
            if idle_s:
                c0 = cpu_s(p.pid)
                time.sleep(idle_s)  # the measurement window, not a synchronisation
                out["idle_cpu_ms"] = (cpu_s(p.pid) - c0) * 1000
            os.kill(lg.pid, signal.SIGTERM)
            res = kv(rd.line(timeout=60))
            out["dropped"] = res.get("dropped", 0)
            out["tls"] = "%s %s" % (res.get("tls"), res.get("cipher"))
        finally:
            stop(lg)
    finally:
        p.stop()
    out["levels"] = levels
    out["rss_conns_kib"] = levels[0][1]
    out["rss_held_kib"] = levels[-1][1]
    n = max(out["established"], 1)
    out["per_conn_kib"] = (levels[0][1] - out["rss_none_kib"]) / max(conns, 1)
    out["per_stream_kib"] = (levels[-1][1] - levels[0][1]) / n
    xs = [l[0] for l in levels]
    ys = [l[1] for l in levels]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    out["slope_kib"] = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0
    return out


def h2_measure(up, tmp):
    """The HTTP/2 figures (mcgw only)."""
    pki = make_pki(os.path.join(tmp, "pki"))
    res = {}
    log("bench: h2: %d idle streams on 1 TLS connection" % H2_STREAMS)
    one = h2_hold_run(up, pki, os.path.join(tmp, "h2-hold-1"), 1, H2_STREAMS)
    log("bench: h2: %d idle streams on %d TLS connections" % (H2_STREAMS * H2_CONNS, H2_CONNS))
    many = h2_hold_run(up, pki, os.path.join(tmp, "h2-hold-%d" % H2_CONNS), H2_CONNS,
                       H2_STREAMS * H2_CONNS, idle_s=IDLE_S)
    res["hold_1"], res["hold_many"] = one, many
    res["h2_rss_conn0_kib"] = one["rss_conns_kib"]
    res["h2_per_stream_1_kib"] = one["per_stream_kib"]
    res["h2_per_stream_many_kib"] = many["per_stream_kib"]
    res["h2_per_conn_kib"] = many["per_conn_kib"]
    res["h2_hold_failures"] = sum(h["failed"] + h["dropped"] for h in (one, many))
    res["h2_streams_held"] = many["established"]
    res["h2_idle_cpu_ms"] = many.get("idle_cpu_ms")
    res["h2_tls"] = many["tls"]
    p = McgwTls(os.path.join(tmp, "h2-bulk"), up, pki)
    p.start()
    try:
        for d in ("down", "up"):
            runs = [h2_bulk_run(p, up, pki, d) for _ in range(RUNS)]
            res["h2_bulk_%s_runs" % d] = runs
            res["h2_bulk_%s_gbit" % d] = med([r["gbit_s"] for r in runs if r["ok"]])
            res["h2_bulk_%s_mcgw_cpu" % d] = med([r["mcgw_cpu"] for r in runs if r["ok"]])
            res["h2_bulk_%s_loadgen_cpu" % d] = med([r["loadgen_cpu"] for r in runs if r["ok"]])
            res["h2_bulk_%s_mcgw_waiting" % d] = med([r["mcgw_waiting_for_cpu"] for r in runs
                                                      if r["ok"]])
            log("bench: h2 bulk %s, %d streams on one TLS connection: %.2f Gbit/s "
                "(mcgw %.2f cores, and runnable but waiting for a CPU %.2f of the time; "
                "loadgen %.2f)" %
                (d, H2_STREAMS, res["h2_bulk_%s_gbit" % d] or 0,
                 res["h2_bulk_%s_mcgw_cpu" % d] or 0, res["h2_bulk_%s_mcgw_waiting" % d] or 0,
                 res["h2_bulk_%s_loadgen_cpu" % d] or 0))
    finally:
        p.stop()
    log("bench: h2: %.2f KiB per idle stream (1 connection), %.2f (%d connections), "
        "%.1f KiB per connection" % (res["h2_per_stream_1_kib"], res["h2_per_stream_many_kib"],
                                      H2_CONNS, res["h2_per_conn_kib"]))
    return res


# ------------------------------------------------------------------ reports

def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=0):
    if v is None:
        return "-"
    return ("{:,.%df}" % digits).format(v)


def ratio(a, b):
    return "%.2fx" % (a / b) if a and b else "-"


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for row in f:
            if row.startswith("model name"):
                cpu = row.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": os.uname().release,
            "mem_gib": round(meminfo_kib("MemTotal") / 1048576, 1), "nofile_hard": HARD_NOFILE}


def table(res, names):
    """The markdown table: absolute figures and mcgw's ratios."""
    rows = []

    def row(label, key, digits=0, better="higher"):
        vals = {n: res[n].get(key) for n in names}
        cells = [fmt(vals[n], digits) for n in names]
        m = vals.get("mcgw")
        for other in ("squid", "tinyproxy"):
            if "mcgw" in names and other in names:
                cells.append(ratio(m, vals[other]))
        rows.append("| %s | %s |" % (label, " | ".join(cells)))

    hdr = list(names) + ["mcgw/%s" % o for o in ("squid", "tinyproxy") if "mcgw" in names and o in names]
    rows.append("| figure | %s |" % " | ".join(hdr))
    rows.append("|---|" + "---|" * len(hdr))
    row("tunnels held (of %d)" % TUNNELS, "established")
    row("failed / dropped while held", "hold_failures")
    row("RSS at 0 tunnels, KiB", "rss0_kib")
    row("RSS with tunnels held, KiB", "rss_kib")
    row("RSS per idle tunnel, KiB (delta / N)", "per_tunnel_kib", 2, "lower")
    row("RSS per idle tunnel, KiB (slope)", "slope_kib", 2, "lower")
    row("kernel slab growth per tunnel, KiB (whole machine)", "slab_per_tunnel_kib", 2, "lower")
    row("threads with tunnels held", "threads")
    row("CPU ms over %gs idle with tunnels held" % IDLE_S, "idle_cpu_ms", 0, "lower")
    row("time to open all tunnels, s", "open_s", 2, "lower")
    row("set-up rate, %d in flight, tunnels/s (median)" % HEADLINE_C, "setup_rate", 0)
    row("set-up latency p50, ms (%d in flight)" % HEADLINE_C, "setup_p50_ms", 2, "lower")
    row("set-up latency p99, ms (%d in flight)" % HEADLINE_C, "setup_p99_ms", 2, "lower")
    row("set-up, %d in flight: proxy CPU, cores (median)" % HEADLINE_C, "setup_proxy_cpu", 2, "lower")
    row("set-up, %d in flight: load generator + upstream CPU, cores" % HEADLINE_C, "setup_driver_cpu", 2)
    row("set-up, %d in flight: proxy CPU per tunnel, µs" % HEADLINE_C, "setup_proxy_us", 1, "lower")
    row("set-up, %d in flight: load generator + upstream CPU per tunnel, µs" % HEADLINE_C,
        "setup_driver_us", 1)
    row("set-up rate, 1 in flight, tunnels/s", "setup_rate_c1", 0)
    row("set-up latency p50, ms (1 in flight)", "setup_p50_ms_c1", 3, "lower")
    row("bulk up, one tunnel, Gbit/s (median)", "bulk_up_gbit", 2)
    row("bulk down, one tunnel, Gbit/s (median)", "bulk_down_gbit", 2)
    row("bulk up: proxy CPU s per GB (median)", "bulk_up_cpu_s_per_gb", 3, "lower")
    row("bulk down: proxy CPU s per GB (median)", "bulk_down_cpu_s_per_gb", 3, "lower")
    if "mcgw" in names and "setup_rate_ratelimit" in res["mcgw"]:
        ratelimit_rows(rows, res["mcgw"], names)
    if "mcgw" in names and "bulk_up_copy_gbit" in res["mcgw"]:
        copy_rows(rows, res["mcgw"], names)
    if "mcgw" in names and "h2_bulk_up_gbit" in res["mcgw"]:
        h2_rows(rows, res["mcgw"], names)
    return "\n".join(rows)


def mcgw_rows(rows, m, names, specs):
    """Rows of an mcgw variant measured in the same run: (label, key,
    digits) each; a figure in the mcgw column only."""
    for label, key, digits in specs:
        cells = [fmt(m.get(key), digits) if n == "mcgw" else "-" for n in names]
        rows.append("| %s | %s |" % (label, " | ".join(cells + ["-" for o in ("squid", "tinyproxy")
                                                                 if o in names])))


def copy_rows(rows, m, names):
    """mcgw's copy relay (splice = off) in the same run: the bulk rows above
    are the default, splice = auto."""
    mcgw_rows(rows, m, names, [
        ("bulk up, mcgw splice = off (copy relay), Gbit/s", "bulk_up_copy_gbit", 2),
        ("bulk down, mcgw splice = off (copy relay), Gbit/s", "bulk_down_copy_gbit", 2),
        ("bulk up, mcgw splice = off: CPU s per GB", "bulk_up_copy_cpu_s_per_gb", 3),
        ("bulk down, mcgw splice = off: CPU s per GB", "bulk_down_copy_cpu_s_per_gb", 3)])


def ratelimit_rows(rows, m, names):
    """mcgw with the new-tunnel rates on but set high (McgwRateLimit) in the
    same set-up runs: the set-up rows above have them off."""
    mcgw_rows(rows, m, names, [
        ("set-up rate, %d in flight, mcgw new-tunnel rates on (set high), tunnels/s" % HEADLINE_C,
         "setup_rate_ratelimit", 0),
        ("set-up, %d in flight: mcgw proxy CPU per tunnel, rates on (set high), µs" % HEADLINE_C,
         "setup_proxy_us_ratelimit", 1)])


def h2_rows(rows, m, names):
    """HTTP/2 CONNECT over TLS: mcgw only; the others cannot be asked."""
    na = "no HTTP/2 CONNECT"

    def row(label, v, digits=0):
        cells = [fmt(v, digits) if n == "mcgw" else na for n in names]
        cells += ["-" for o in ("squid", "tinyproxy") if o in names]
        rows.append("| %s | %s |" % (label, " | ".join(cells)))

    s, c = H2_STREAMS, H2_CONNS
    row("h2 over TLS: streams held (of %d on %d connections)" % (s * c, c), m["h2_streams_held"])
    row("h2: failed / dropped streams (both hold runs)", m["h2_hold_failures"])
    row("h2: RSS with 1 TLS connection, 0 streams, KiB", m["h2_rss_conn0_kib"])
    row("h2: RSS per TLS connection without streams, KiB (%d connections)" % c,
        m["h2_per_conn_kib"], 1)
    row("h2: RSS per idle stream, KiB (%d on 1 connection)" % s, m["h2_per_stream_1_kib"], 2)
    row("h2: RSS per idle stream, KiB (%d on %d connections)" % (s * c, c),
        m["h2_per_stream_many_kib"], 2)
    row("h2: CPU ms over %gs idle with %d streams held" % (IDLE_S, s * c), m["h2_idle_cpu_ms"])
    row("h2 bulk down, %d streams on 1 TLS connection, Gbit/s (median)" % s,
        m["h2_bulk_down_gbit"], 2)
    row("h2 bulk up, %d streams on 1 TLS connection, Gbit/s (median)" % s,
        m["h2_bulk_up_gbit"], 2)
    row("h2 bulk down: mcgw CPU, cores", m["h2_bulk_down_mcgw_cpu"], 2)
    row("h2 bulk up: mcgw CPU, cores", m["h2_bulk_up_mcgw_cpu"], 2)
    row("h2 bulk down: mcgw runnable but waiting for a CPU, share of the time",
        m["h2_bulk_down_mcgw_waiting"], 2)
    row("h2 bulk up: mcgw runnable but waiting for a CPU, share of the time",
        m["h2_bulk_up_mcgw_waiting"], 2)


def gnuplot(res, names, ceiling):
    if not shutil.which("gnuplot"):
        log("gnuplot not found: no plots")
        return
    for n in names:
        with open(os.path.join(OUT, "mem_%s.dat" % n), "w") as f:
            for x, y in res[n]["levels"][:-1]:
                f.write("%d %.2f\n" % (x, y / 1024))
        with open(os.path.join(OUT, "rate_%s.dat" % n), "w") as f:
            for c in CONCURRENCY:
                f.write("%d %.1f\n" % (c, res[n]["sweep"][str(c)]))
    with open(os.path.join(OUT, "rate_ceiling.dat"), "w") as f:
        for c in CONCURRENCY:
            f.write("%d %.1f\n" % (c, ceiling[str(c)]))
    mem = "; ".join('"mem_%s.dat" with linespoints lw 2 title "%s"' % (n, n) for n in names)
    rate = ", ".join('"rate_%s.dat" with linespoints lw 2 title "%s"' % (n, n) for n in names)
    script = """set terminal pngcairo size 800,500 font "sans,11"
set grid
set key left top
set output "memory.png"
set title "Proxy RSS with idle tunnels held (loopback, %(cpu)s, %(nproc)d cores)"
set xlabel "idle tunnels held"
set ylabel "RSS, MiB"
plot %(mem)s
set output "setup_rate.png"
set title "Tunnel set-up rate (connect, CONNECT, 200, 1-byte echo, close)"
set xlabel "tunnels in flight"
set ylabel "tunnels per second"
set yrange [0:*]
set key below
set logscale x
plot %(rate)s, "rate_ceiling.dat" with linespoints dt 2 lw 1 title "load generator ceiling (no proxy)"
""" % {"mem": mem.replace("; ", ", "), "rate": rate, "cpu": machine()["cpu"],
       "nproc": os.cpu_count()}
    with open(os.path.join(OUT, "plots.gp"), "w") as f:
        f.write(script)
    subprocess.run(["gnuplot", "plots.gp"], cwd=OUT, check=True)


# --------------------------------------------------------------------- main

def start_upstream():
    up = spawn([LOADGEN, "upstream"], stdout=subprocess.PIPE)
    info = kv(LineReader(up).line(timeout=10))
    ports = {k: info[k] for k in ("echo", "sink", "source", "fake")}
    ports["pid"] = up.pid
    return up, ports


def main():
    for path in (MCGW, LOADGEN):
        if not os.access(path, os.X_OK):
            sys.exit("bench: %s not built (make build)" % path)
    for n in PROXIES:
        if n not in CLASSES:
            sys.exit("bench: unknown proxy %s" % n)
        if n != "mcgw" and not shutil.which(n):
            sys.exit("bench: %s not installed (scripts/deps.sh bench)" % n)
    os.makedirs(OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="mcgw-bench-")
    os.chmod(tmp, 0o755)
    t0 = time.monotonic()
    load_start = os.getloadavg()
    res = {n: {} for n in PROXIES}
    upstream, up = start_upstream()
    log("bench: upstream ports %s; %d tunnels (nofile hard limit %d); %d runs; quick=%s"
        % (up, TUNNELS, HARD_NOFILE, RUNS, QUICK))
    proxies = {}
    versions = {}

    # 1. Hold: each proxy fresh, one at a time.
    for n in PROXIES:
        p = CLASSES[n](os.path.join(tmp, "hold"), up)
        p.start()
        versions[n] = p.version()
        check_policy(p, up)
        log("bench: %s: holding %d tunnels" % (n, TUNNELS))
        h = hold_run(p, up)
        p.stop()
        h["hold_failures"] = h["failed"] + h["dropped"]
        h["slab_per_tunnel_kib"] = h["slab_kib"] / max(h["established"], 1)
        res[n].update(h)
        log("bench: %s: %d held, %.2f KiB/tunnel, %.0f ms CPU idle" %
            (n, h["established"], h["per_tunnel_kib"], h["idle_cpu_ms"]))

    # 2. Set-up rate and bulk: all proxies running, runs interleaved.
    for n in PROXIES:
        proxies[n] = CLASSES[n](os.path.join(tmp, "rate"), up)
        proxies[n].start()
    bulk_names = list(PROXIES)
    if "mcgw" in PROXIES:  # both relay paths: splice (auto, the default) and copy
        proxies["mcgw-copy"] = McgwCopy(os.path.join(tmp, "rate"), up)
        proxies["mcgw-copy"].start()
        bulk_names.append("mcgw-copy")
        res["mcgw-copy"] = {}
        # the set-up cost of the new-tunnel rate checks: on (set high) against off
        proxies["mcgw-ratelimit"] = McgwRateLimit(os.path.join(tmp, "rate"), up)
        proxies["mcgw-ratelimit"].start()
    limited = []
    ceiling = {}
    ceiling_cpu = {}
    for c in CONCURRENCY:
        runs = RUNS if c == HEADLINE_C else 1
        secs = SETUP_S if c == HEADLINE_C else SWEEP_S
        cr = setup_run(Fake(up["fake"]), up, c, secs)
        ceiling[str(c)] = cr["rate"]
        if c == HEADLINE_C:
            ceiling_cpu = {k: cr.get(k) for k in ("upstream_cpu", "loadgen_cpu")}
            ceiling_cpu["driver_us"] = ((cr["loadgen_cpu"] + cr["upstream_cpu"]) / cr["rate"] * 1e6
                                        if cr["rate"] else None)
        per = {n: [] for n in PROXIES}
        for k in range(runs):
            # mcgw-ratelimit before the others in odd runs, after them in even
            # ones: a run may leave state behind (TIME_WAIT sockets, warm
            # caches) that changes the next one's cost; the order must not
            # favour either side.
            rl = c == HEADLINE_C and "mcgw-ratelimit" in proxies
            if rl and k % 2:
                limited.append(setup_run(proxies["mcgw-ratelimit"], up, c, secs))
            for n in PROXIES:
                r = setup_run(proxies[n], up, c, secs)
                if r["failed"]:
                    log("bench: %s: %d set-up failures at c=%d: %s" % (n, r["failed"], c, r))
                per[n].append(r)
            if rl and not k % 2:
                limited.append(setup_run(proxies["mcgw-ratelimit"], up, c, secs))
        for n in PROXIES:
            rate = med([r["rate"] for r in per[n]])
            res[n].setdefault("sweep", {})[str(c)] = rate
            res[n].setdefault("setup_runs", {})[str(c)] = per[n]
            key = "" if c == HEADLINE_C else "_c%d" % c
            if c == HEADLINE_C:
                for k in ("proxy_cpu", "upstream_cpu", "loadgen_cpu"):
                    res[n]["setup_" + k] = med([r.get(k) for r in per[n]])
                # CPU per tunnel set up: cores busy / tunnels per second
                res[n]["setup_proxy_us"] = med([r["proxy_cpu"] / r["rate"] * 1e6
                                                for r in per[n] if r["rate"]])
                res[n]["setup_driver_us"] = med([(r["loadgen_cpu"] + r["upstream_cpu"]) /
                                                 r["rate"] * 1e6 for r in per[n] if r["rate"]])
            if c in (HEADLINE_C, 1):
                res[n]["setup_rate" + key] = rate
                res[n]["setup_p50_ms" + key] = med([r["p50_us"] for r in per[n]]) / 1000
                res[n]["setup_p99_ms" + key] = med([r["p99_us"] for r in per[n]]) / 1000
        log("bench: set-up rate at %d in flight: %s (ceiling %.0f)" %
            (c, ", ".join("%s %.0f/s" % (n, res[n]["sweep"][str(c)]) for n in PROXIES),
             ceiling[str(c)]))
    if "mcgw" in PROXIES:
        res["mcgw"].update(cached_name_runs(tmp, up, proxies["mcgw"]))
    if limited:
        res["mcgw"]["setup_rate_ratelimit"] = med([r["rate"] for r in limited])
        res["mcgw"]["setup_proxy_us_ratelimit"] = med([r["proxy_cpu"] / r["rate"] * 1e6
                                                       for r in limited if r["rate"]])
        res["mcgw"]["setup_ratelimit_runs"] = limited
    bulk_ceiling = {}
    for d in ("up", "down"):
        bulk_ceiling[d] = bulk_run(Fake(up["fake"]), up, d)["gbit_s"]
        per = {n: [] for n in bulk_names}
        for _ in range(RUNS):
            for n in bulk_names:
                per[n].append(bulk_run(proxies[n], up, d))
        for n in bulk_names:
            ok = [r for r in per[n] if r["ok"]]
            res[n]["bulk_%s_gbit" % d] = med([r["gbit_s"] for r in ok])
            res[n]["bulk_%s_cpu_s_per_gb" % d] = med([r["proxy_cpu_s_per_gb"] for r in ok])
            res[n]["bulk_%s_runs" % d] = per[n]
        log("bench: bulk %s: %s (no proxy %.1f Gbit/s)" %
            (d, ", ".join("%s %.2f Gbit/s, %.3f CPU s/GB" %
                          (n, res[n]["bulk_%s_gbit" % d] or 0,
                           res[n]["bulk_%s_cpu_s_per_gb" % d] or 0) for n in bulk_names),
             bulk_ceiling[d]))
    for n in proxies:
        proxies[n].stop()
    if "mcgw" in PROXIES:
        copy = res.pop("mcgw-copy")
        for d in ("up", "down"):
            res["mcgw"]["bulk_%s_copy_gbit" % d] = copy["bulk_%s_gbit" % d]
            res["mcgw"]["bulk_%s_copy_cpu_s_per_gb" % d] = copy["bulk_%s_cpu_s_per_gb" % d]
            res["mcgw"]["bulk_%s_copy_runs" % d] = copy["bulk_%s_runs" % d]

    # 3. HTTP/2 CONNECT over TLS: mcgw only.
    if H2 and "mcgw" in PROXIES:
        res["mcgw"].update(h2_measure(up, tmp))
    stop(upstream)

    for n in PROXIES:
        if res[n].get("setup_loadgen_cpu") is not None:
            res[n]["setup_driver_cpu"] = res[n]["setup_loadgen_cpu"] + res[n]["setup_upstream_cpu"]
    names = list(PROXIES)
    md = table(res, names)
    summary = {"machine": machine(), "versions": versions, "quick": QUICK, "tunnels": TUNNELS,
               "runs": RUNS, "bulk_bytes": BULK_BYTES, "idle_s": IDLE_S,
               "concurrency": CONCURRENCY, "ceiling_setup_rate": ceiling,
               "h2_streams": H2_STREAMS, "h2_conns": H2_CONNS, "h2_window": H2_WINDOW,
               "ceiling_bulk_gbit": bulk_ceiling, "ceiling_setup_cpu": ceiling_cpu,
               "results": res,
               "duration_s": round(time.monotonic() - t0, 1),
               "loadavg_start": load_start, "loadavg_end": os.getloadavg()}
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(md + "\n")
    gnuplot(res, names, ceiling)
    m = summary["machine"]
    print("\nmachine: %d x %s, kernel %s, nofile hard limit %d; load average %.2f at the start, "
          "%.2f at the end (other work on the machine)" %
          (m["nproc"], m["cpu"], m["kernel"], HARD_NOFILE, load_start[0], summary["loadavg_end"][0]))
    for n in names:
        print("  %s: %s" % (n, versions[n]))
    print("load generator ceiling (fake proxy): %.0f set-ups/s at %d in flight (load generator "
          "%.2f + upstream %.2f cores, %.1f µs per tunnel); bulk up %.1f, down %.1f Gbit/s"
          % (ceiling[str(HEADLINE_C)] if str(HEADLINE_C) in ceiling else 0, HEADLINE_C,
             ceiling_cpu.get("loadgen_cpu") or 0, ceiling_cpu.get("upstream_cpu") or 0,
             ceiling_cpu.get("driver_us") or 0, bulk_ceiling["up"], bulk_ceiling["down"]))
    if "mcgw" in names and "h2_tls" in res["mcgw"]:
        print("HTTP/2 rows: over TLS (%s), one handshake per connection; mcgw encrypts and "
              "decrypts every byte, and so does the load generator" % res["mcgw"]["h2_tls"])
    print()
    print(md)
    print("\nresults in %s (%.0f s)" % (OUT, summary["duration_s"]))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def on_signal(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        cleanup()
