#!/usr/bin/python3
"""Where mcgw's time goes per tunnel set-up (connect, CONNECT, 200, 1-byte
echo, close), on loopback:

  cpu       user and system CPU time of mcgw per tunnel (/proc/PID/stat),
            over PROFILE_N tunnels at 50 in flight
  syscalls  system calls per tunnel, by name (strace -c -f on mcgw)
  callgrind instructions per tunnel in user space (valgrind --tool=callgrind):
            a run with PROFILE_N more tunnels minus a run without them, so
            start-up and shutdown cancel out; plus the top functions

Each for the access log off (log_level = warn) and on (info, to a file).
Usage: /usr/bin/python3 tests/bench/profile.py  (after make build; needs
strace and valgrind: scripts/deps.sh bench). Writes build/bench/profile.json.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

N = int(os.environ.get("PROFILE_N", 20000))
CG_N = int(os.environ.get("PROFILE_CALLGRIND_N", 2000))
WARM = 200


def mcgw_conf(path, up, level):
    allow = "".join("allow = 127.0.0.1:%d\n" % up[k] for k in ("echo", "sink", "source"))
    with open(path, "w") as f:
        f.write("[gateway]\nlog_level = %s\n[admin]\nlisten = off\n[tunnel]\n"
                "listen = 127.0.0.1:0\n%sallow_private = yes\nrequire_tls = no\n"
                "max_tunnels = 20000\nmax_tunnels_per_client = 20000\n" % (level, allow))


def start(cmd, logpath):
    p = bench.spawn(cmd, stdout=open(logpath, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid = mcgw_pid(p)
        ports = bench.listen_ports(pid) if pid else []
        if ports:
            return p, pid, ports[0]
        time.sleep(0.1)
    raise RuntimeError("mcgw did not start: %s" % logpath)


def mcgw_pid(p):
    """The mcgw process itself (strace or valgrind may be its parent)."""
    for pid in bench.tree(p.pid):
        try:
            with open("/proc/%d/comm" % pid) as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm == "mcgw" or comm.startswith("memcheck") or comm.startswith("callgrind"):
            return pid
    return None


def setup(port, up, n, c=50):
    return bench.loadgen(["setup", "--proxy", "127.0.0.1:%d" % port, "--target",
                          "127.0.0.1:%d" % up["echo"], "-n", str(n), "-c", str(c)], timeout=600)


def cpu_split(pid):
    with open("/proc/%d/stat" % pid) as f:
        col = f.read().rsplit(")", 1)[1].split()
    return int(col[11]) / bench.CLK_TCK, int(col[12]) / bench.CLK_TCK


def profile_cpu(tmp, up, level):
    conf = os.path.join(tmp, "cpu-%s.ini" % level)
    mcgw_conf(conf, up, level)
    p, pid, port = start([bench.MCGW, "run", "-c", conf], os.path.join(tmp, "cpu-%s.log" % level))
    setup(port, up, WARM)
    u0, s0 = cpu_split(pid)
    t0 = time.monotonic()
    r = setup(port, up, N)
    wall = time.monotonic() - t0
    u1, s1 = cpu_split(pid)
    bench.stop(p)
    return {"tunnels": N, "rate": r["rate"], "user_us": (u1 - u0) / N * 1e6,
            "sys_us": (s1 - s0) / N * 1e6, "busy": ((u1 - u0) + (s1 - s0)) / wall}


def profile_syscalls(tmp, up, level):
    conf = os.path.join(tmp, "st-%s.ini" % level)
    mcgw_conf(conf, up, level)
    out = os.path.join(tmp, "strace-%s.txt" % level)
    p, pid, port = start(["strace", "-f", "-c", "-o", out, bench.MCGW, "run", "-c", conf],
                         os.path.join(tmp, "st-%s.log" % level))
    n = 2000
    setup(port, up, n)
    bench.stop(p)
    calls = {}
    with open(out) as f:
        for row in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", row)
            if m and m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1))
    # Start-up and shutdown add a few dozen calls: negligible against n tunnels.
    per = {k: round(v / n, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
    return {"tunnels": n, "per_tunnel": per, "total_per_tunnel": round(sum(calls.values()) / n, 1)}


def callgrind_total(tmp, up, level, n):
    conf = os.path.join(tmp, "cg-%s-%d.ini" % (level, n))
    mcgw_conf(conf, up, level)
    out = os.path.join(tmp, "callgrind-%s-%d.out" % (level, n))
    p, pid, port = start(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                          bench.MCGW, "run", "-c", conf], out + ".log")
    setup(port, up, WARM, c=10)
    if n:
        setup(port, up, n, c=10)
    bench.stop(p, timeout=60)
    with open(out) as f:
        total = int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1))
    return total, out


def profile_callgrind(tmp, up, level):
    base, _ = callgrind_total(tmp, up, level, 0)
    full, out = callgrind_total(tmp, up, level, CG_N)
    ann = subprocess.run(["callgrind_annotate", "--inclusive=no", out], capture_output=True,
                         text=True).stdout
    top = []
    for row in ann.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$", row)
        if m and "PROGRAM TOTALS" not in row:
            top.append({"ir_per_tunnel": round(int(m.group(1).replace(",", "")) / (CG_N + WARM)),
                        "pct": float(m.group(2)), "fn": m.group(3)[:120]})
        if len(top) >= 25:
            break
    return {"tunnels": CG_N, "ir_per_tunnel": round((full - base) / CG_N), "top_self": top}


def main():
    tmp = tempfile.mkdtemp(prefix="mcgw-prof-")
    upstream, up = bench.start_upstream()
    res = {}
    try:
        for level in ("warn", "info"):
            res[level] = {"cpu": profile_cpu(tmp, up, level),
                          "syscalls": profile_syscalls(tmp, up, level),
                          "callgrind": profile_callgrind(tmp, up, level)}
            print(json.dumps({level: res[level]}, indent=1), flush=True)
    finally:
        bench.stop(upstream)
        bench.cleanup()
    os.makedirs(bench.OUT, exist_ok=True)
    with open(os.path.join(bench.OUT, "profile.json"), "w") as f:
        json.dump(res, f, indent=1)
    print("files in %s; profile.json in %s" % (tmp, bench.OUT))


if __name__ == "__main__":
    main()
