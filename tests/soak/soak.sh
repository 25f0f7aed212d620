#!/usr/bin/env bash
# Soak test (not in CI): tunnel churn through a real mcgw for SOAK_SECONDS
# (default 3600), RSS sampled every SOAK_SAMPLE seconds (default 60), and a
# verdict on whether memory stayed flat.
#
#   tests/soak/soak.sh                       # one hour
#   SOAK_SECONDS=300 SOAK_SAMPLE=10 tests/soak/soak.sh
#
# Churn: SOAK_WORKERS (default 32) threads, each in a loop opening a tunnel to
# a local echo upstream, sending 1-64 KiB, reading it back and closing; one
# in ten resets instead of closing, one in twenty asks for a denied target,
# one in twenty sends a malformed request. Everything stays on 127.0.0.1.
#
# SOAK_DNS_OUTAGE=1: the same through a DNS outage. mcgw's [dns] servers is a
# UDP socket that reads every query and never answers, and SOAK_DNS_WORKERS
# (default 16) more threads keep asking for tunnels to names under
# outage.test (new names and a few repeated ones: devices retrying), each
# ending 504 dns_timeout after [dns] timeout x tries. The churn to the IP
# literal goes on beside them; RSS must stay flat all the same.
#
# Flat means: after the first quarter (warm-up), no sample exceeds the
# warm-up maximum by more than SOAK_SLACK_KIB (default 2048, the same slack
# and reasoning as tests/integration/test_faults.py), and the gateway's
# descriptor count at the end equals the count at the start. Exit 0 when flat,
# 1 otherwise. Needs a built build/mcgw (make build) or MCGW_BIN.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
export MCGW_BIN=${MCGW_BIN:-$src/build/mcgw}
[ -x "$MCGW_BIN" ] || { echo "soak: no $MCGW_BIN (make build first)" >&2; exit 2; }
exec /usr/bin/python3 - "$@" <<'PY'
import os, random, re, socket, struct, subprocess, sys, tempfile, threading, time

secs = int(os.environ.get("SOAK_SECONDS", "3600"))
outage = os.environ.get("SOAK_DNS_OUTAGE") == "1"
dns_workers = int(os.environ.get("SOAK_DNS_WORKERS", "16")) if outage else 0
sample = int(os.environ.get("SOAK_SAMPLE", "60"))
workers = int(os.environ.get("SOAK_WORKERS", "32"))
slack = int(os.environ.get("SOAK_SLACK_KIB", "2048"))
binary = os.environ["MCGW_BIN"]

# Echo upstream.
up = socket.socket()
up.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
up.bind(("127.0.0.1", 0))
up.listen(1024)
up_port = up.getsockname()[1]

def echo(c):
    try:
        while True:
            b = c.recv(65536)
            if not b:
                break
            c.sendall(b)
    except OSError:
        pass
    finally:
        c.close()

def serve():
    while True:
        try:
            c, _ = up.accept()
        except OSError:
            return
        threading.Thread(target=echo, args=(c,), daemon=True).start()

threading.Thread(target=serve, daemon=True).start()

# A DNS server that never answers (SOAK_DNS_OUTAGE).
silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
silent.bind(("127.0.0.1", 0))
dns_queries = 0

def swallow():
    global dns_queries
    while True:
        try:
            silent.recvfrom(4096)
        except OSError:
            return
        dns_queries += 1

if outage:
    threading.Thread(target=swallow, daemon=True).start()

tmp = tempfile.mkdtemp(prefix="mcgw-soak-")
conf = os.path.join(tmp, "mcgw.ini")
with open(conf, "w") as f:
    f.write("[gateway]\nlog_level = info\n[admin]\nlisten = 127.0.0.1:0\n"
            "[tunnel]\nlisten = 127.0.0.1:0\nallow = 127.0.0.1:*\nallow_private = yes\n"
            "require_tls = no\nheader_timeout = 5s\nconnect_timeout = 5s\n"
            # one client churning to one target as fast as it can: the
            # new-tunnel rates would turn the churn into 429s
            "max_new_tunnels_per_client = 0/s\nmax_new_upstream_per_target = 0/s\n")
    if outage:
        f.write("allow = *.outage.test:443\n[dns]\nservers = 127.0.0.1:%d\n"
                % silent.getsockname()[1])
log_path = os.path.join(tmp, "mcgw.log")
log = open(log_path, "wb")
proc = subprocess.Popen([binary, "run", "-c", conf], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT)
closed_lines = 0

def keep_log():
    """Everything but the access lines of successful tunnels goes to the log
    file (an hour of churn would otherwise write gigabytes)."""
    global closed_lines
    for line in proc.stdout:
        if b"msg=tunnel_closed" in line and b"result=ok" in line:
            closed_lines += 1
            continue
        log.write(line)
        log.flush()

threading.Thread(target=keep_log, daemon=True).start()
deadline = time.monotonic() + 10
port = None
while port is None:
    m = re.search(rb"kind=proxy addr=127\.0\.0\.1:(\d+)", open(log_path, "rb").read())
    if m:
        port = int(m.group(1))
    elif time.monotonic() > deadline or proc.poll() is not None:
        sys.exit("soak: mcgw did not start; see " + log_path)
    else:
        time.sleep(0.05)

def rss():
    with open(f"/proc/{proc.pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])

def fds():
    return len(os.listdir(f"/proc/{proc.pid}/fd"))

stop = False
counts = {"ok": 0, "reset": 0, "denied": 0, "malformed": 0, "errors": 0, "dns_timeout": 0}
lock = threading.Lock()

def one(rng):
    kind = rng.random()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if kind < 0.05:
            s.sendall(b"CONNECT denied.example:443 HTTP/1.1\r\n\r\n")
            s.recv(4096)
            return "denied"
        if kind < 0.10:
            s.sendall(b"CONNECT 127.1:%d HTTP/1.1\r\n\r\n" % up_port)
            s.recv(4096)
            return "malformed"
        s.sendall(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % up_port)
        head = b""
        while b"\r\n\r\n" not in head:
            b = s.recv(4096)
            if not b:
                raise OSError("closed before 200")
            head += b
        if not head.startswith(b"HTTP/1.1 200"):
            raise OSError(head[:40])
        data = rng.randbytes(rng.randint(1024, 65536))
        s.sendall(data)
        got = 0
        while got < len(data):
            b = s.recv(65536)
            if not b:
                raise OSError("short echo")
            got += len(b)
        if kind < 0.20:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return "reset"
        return "ok"
    finally:
        s.close()

def worker(seed):
    rng = random.Random(seed)
    while not stop:
        try:
            k = one(rng)
        except OSError:
            k = "errors"
        with lock:
            counts[k] += 1

def dns_worker(seed):
    """A device retrying a name the silent server never answers: 504."""
    rng = random.Random(seed)
    while not stop:
        name = "n%d.outage.test" % (rng.getrandbits(32) if rng.random() < 0.8 else rng.randint(0, 9))
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            try:
                s.sendall(b"CONNECT %s:443 HTTP/1.1\r\n\r\n" % name.encode())
                k = "dns_timeout" if s.recv(4096).startswith(b"HTTP/1.1 504") else "errors"
            finally:
                s.close()
        except OSError:
            k = "errors"
        with lock:
            counts[k] += 1

start_fds = fds()
threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
threads += [threading.Thread(target=dns_worker, args=(1000 + i,), daemon=True)
            for i in range(dns_workers)]
for t in threads:
    t.start()
samples = []
t0 = time.monotonic()
print(f"soak: {secs}s, {workers} workers, sample every {sample}s; mcgw pid {proc.pid}")
while time.monotonic() - t0 < secs:
    time.sleep(min(sample, secs - (time.monotonic() - t0)))
    with lock:
        c = dict(counts)
    samples.append(rss())
    print(f"soak: t={int(time.monotonic() - t0):>5}s rss={samples[-1]} KiB "
          f"fds={fds()} " + " ".join(f"{k}={v}" for k, v in c.items()), flush=True)
stop = True
for t in threads:
    t.join(timeout=15)
# The last queries to the silent server end at c-ares's own retry timeouts
# (2 s + 4 s by default), its socket to the server with them: wait for it.
settle = time.monotonic() + (10 if outage else 1)
while time.monotonic() < settle and fds() > start_fds:
    time.sleep(0.2)
end_fds = fds()
proc.terminate()
rc = proc.wait(timeout=60)
warm = max(1, len(samples) // 4)
base = max(samples[:warm])
worst = max(samples[warm:] or samples)
flat = worst <= base + slack and end_fds <= start_fds and rc == 0 and counts["ok"] > 0
if outage:
    print(f"soak: DNS outage: {dns_queries} queries swallowed, {counts['dns_timeout']} tunnels 504")
    flat = flat and counts["dns_timeout"] > 0
print(f"soak: {closed_lines} ok access lines (not kept); warm-up max {base} KiB, later max {worst} KiB (slack {slack}), "
      f"fds {start_fds} -> {end_fds}, mcgw exit {rc}, errors {counts['errors']}")
print("soak: FLAT" if flat else "soak: NOT FLAT", "- log in", log_path)
sys.exit(0 if flat else 1)
PY
