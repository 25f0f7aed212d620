#!/usr/bin/python3
"""`make bench`, UDP part: CONNECT-UDP through mcgw beside two references,
on loopback, in one run (docs/benchmarks.md, "UDP tunnels").

- the floor: mcx-media --direct, the same stream straight to the reflector;
- a plain user-space UDP relay: socat UDP-LISTEN:P,fork UDP:reflector;
- mcgw: mcx-media through the plain listener, HTTP/2 (h2c) and HTTP/1.1, and
  through the TLS listener, HTTP/2 (ALPN h2).

Two figures per path:
- latency: one stream of 172-byte datagrams (12-byte RTP header + 160) at
  50/s for BENCH_UDP_SECONDS (default 10, 3 with BENCH_QUICK=1): round trip
  p50/p99, jitter, loss;
- rate: one stream at BENCH_UDP_PPS (default 20000) for the same time: loss,
  and the relay's CPU per relayed datagram (both directions counted), also
  as a ratio to socat's in the same run.

Most datagrams per second (one tunnel per path, and 100 tunnels on one
HTTP/2 connection against their floor, --direct --tunnels 100): the offered
rate steps up, doubling from BENCH_UDP_RATE_START (5000/s) to
BENCH_UDP_RATE_MAX (80000/s), BENCH_UDP_RATE_SECONDS per step (5, 2 with
BENCH_QUICK=1). A step passes when the round trip loses under 1%
(LOSS_MAX_PCT) of the datagrams sent and the generator really offered at
least 90% of the rate (mcx-media's send_s); a failed step is tried once
more (the machine is shared). The ramp stops at the first step failed twice,
then tries the rate half-way between it and the last pass. A path's figure
is its highest passing rate, with the loss and the relay's CPU per relayed
datagram and in % of one core at that step.

And 100 tunnels x 50/s on one HTTP/2 connection (plain and TLS listener):
latency and loss over their own floor, the same 100 streams sent straight to
the reflector by the same one mcx-media process (--direct --tunnels 100); and
RSS per idle UDP tunnel: mcgw's RSS with 1,000 idle tunnels on 10
connections (10 x `mcx-media --tunnels 100 --hold`), less its RSS before,
per tunnel. Outputs udp.json and udp.md in BENCH_OUT (default build/bench)."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (process helpers: spawn, stop, cpu_s, free_port)

MEDIA = os.path.join(bench.BUILD, "mcx-media")
SECONDS = float(os.environ.get("BENCH_UDP_SECONDS", "3" if bench.QUICK else "10"))
PPS = int(os.environ.get("BENCH_UDP_PPS", "20000"))
REPEATS = int(os.environ.get("BENCH_UDP_REPEATS", "3"))
RATE_START = int(os.environ.get("BENCH_UDP_RATE_START", "5000"))
RATE_MAX = int(os.environ.get("BENCH_UDP_RATE_MAX", "80000"))
RATE_S = float(os.environ.get("BENCH_UDP_RATE_SECONDS", "2" if bench.QUICK else "5"))
LOSS_MAX_PCT = 1.0  # a rate is relayed when the round trip loses less than this
OFFERED_MIN = 0.9  # ... and the generator really sent at least this share of it


def media(args, seconds, pps):
    r = subprocess.run([MEDIA, "--json", "--seconds", str(seconds), "--pps", str(pps), *args],
                       capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError("mcx-media %s: %s" % (" ".join(args), r.stderr.strip()))
    return json.loads(r.stdout)


def measure(name, args, relay_pid):
    lat = media(args, SECONDS, 50)
    before = bench.cpu_s(relay_pid) if relay_pid else 0
    rate = media(args, SECONDS, PPS)
    cpu = (bench.cpu_s(relay_pid) - before) if relay_pid else 0
    relayed = rate["sent"] + rate["received"]
    row = {"path": name, "p50_ms": lat["rtt_p50_ms"], "p99_ms": lat["rtt_p99_ms"],
           "jitter_ms": lat["jitter_ms"], "lost_50pps": lat["lost"], "rate_pps": PPS,
           "rate_sent": rate["sent"], "rate_received": rate["received"],
           "rate_loss_pct": 100.0 * (rate["sent"] - rate["received"]) / max(rate["sent"], 1),
           "relay_cpu_s": cpu,
           "relay_us_per_datagram": cpu / relayed * 1e6 if relay_pid and relayed else None}
    bench.log("bench udp: %s: p50 %.3f ms, p99 %.3f ms, loss at %d/s %.2f%%, %s µs/datagram" %
              (name, row["p50_ms"], row["p99_ms"], PPS, row["rate_loss_pct"],
               "%.2f" % row["relay_us_per_datagram"] if row["relay_us_per_datagram"] else "-"))
    return row


def rate_step(args, rate, tunnels, relay_pid):
    """One step of the ramp: rate datagrams/s in all, over tunnels tunnels."""
    before = bench.cpu_s(relay_pid) if relay_pid else 0
    r = media(["--tunnels", str(tunnels), *args] if tunnels > 1 else args, RATE_S, rate // tunnels)
    cpu = (bench.cpu_s(relay_pid) - before) if relay_pid else 0
    relayed = r["sent"] + r["received"]
    offered = r["sent"] / r["send_s"] if r["send_s"] > 0 else 0
    loss = 100.0 * (r["sent"] - r["received"]) / max(r["sent"], 1)
    return {"rate": rate, "offered_pps": offered, "sent": r["sent"], "received": r["received"],
            "loss_pct": loss, "relay_cpu_s": cpu,
            "relay_us_per_datagram": cpu / relayed * 1e6 if relay_pid and relayed else None,
            "relay_core_pct": 100.0 * cpu / r["send_s"] if relay_pid and r["send_s"] else None,
            "passed": loss < LOSS_MAX_PCT and offered >= OFFERED_MIN * rate}


def ramp(name, args, relay_pid, tunnels=1):
    """The most datagrams/s path name relays with loss under LOSS_MAX_PCT
    (module docstring): every step tried, and the highest passing one."""
    steps = []

    def attempt(rate):
        for _ in range(2):  # a failure is tried once more: the machine is shared
            st = rate_step(args, rate, tunnels, relay_pid)
            steps.append(st)
            bench.log("bench udp: %s at %d/s: offered %.0f/s, loss %.2f%%, %s µs/datagram%s" % (
                name, rate, st["offered_pps"], st["loss_pct"],
                "%.2f" % st["relay_us_per_datagram"] if st["relay_us_per_datagram"] else "-",
                "" if st["passed"] else " (failed)"))
            if st["passed"]:
                return True
        return False

    rate, last_pass = RATE_START, 0
    while rate <= RATE_MAX and attempt(rate):
        last_pass, rate = rate, rate * 2
    if last_pass and rate <= RATE_MAX:  # failed at rate: half-way to the last pass
        attempt((last_pass + rate) // 2)
    passed = [st for st in steps if st["passed"]]
    best = max(passed, key=lambda st: st["rate"]) if passed else None
    return {"path": name, "tunnels": tunnels, "best": best, "top": bool(best) and
            best["rate"] >= RATE_MAX, "steps": steps}


def ramp_table(rows, ref, ref_name, floor):
    """Ratios to ref for the rows with a relay; CPU ratios only when ref is
    one. A rate marked "= floor" is as high as the floor's: the generator
    and the reflector, not the relay, set it."""
    cpu_ratio = bool(ref["best"] and ref["best"]["relay_us_per_datagram"])
    hdr = ["path", "most datagrams/s, loss < %g%%" % LOSS_MAX_PCT, "loss there",
           "relay CPU µs per datagram", "relay CPU, % of a core", "rate vs %s" % ref_name]
    if cpu_ratio:
        hdr.append("CPU/datagram vs %s" % ref_name)
    out = ["| %s |" % " | ".join(hdr), "|---" * len(hdr) + "|"]
    rb, fb = ref["best"], floor["best"]
    for r in rows:
        b = r["best"]
        if not b:
            out.append("| %s | < %d |%s" % (r["path"], RATE_START, " - |" * (len(hdr) - 2)))
            continue
        us, core = b["relay_us_per_datagram"], b["relay_core_pct"]
        relay = us is not None and r is not ref
        cells = [r["path"], "%s%d%s" % (">= " if r["top"] else "", b["rate"],
                                         " (= floor)" if relay and fb and b["rate"] >= fb["rate"]
                                         else ""),
                 "%.2f%%" % b["loss_pct"], "%.2f" % us if us is not None else "-",
                 "%.0f%%" % core if core is not None else "-",
                 bench.ratio(b["rate"], rb["rate"]) if rb and relay else "-"]
        if cpu_ratio:
            cells.append(bench.ratio(us, rb["relay_us_per_datagram"]) if relay else "-")
        out.append("| %s |" % " | ".join(cells))
    return "\n".join(out)


def idle_rss(gw, proxy, target, conns=10, per_conn=100):
    """mcgw's RSS per idle UDP tunnel: conns x per_conn tunnels held open."""
    before = bench.status_kib(gw.pid, "VmRSS")
    holders = [bench.spawn([MEDIA, "--h2", "--tunnels", str(per_conn), "--hold", "30", "--json",
                            "--proxy", proxy, "--target", target], stdout=subprocess.PIPE,
                           text=True) for _ in range(conns)]
    for h in holders:
        line = h.stdout.readline()
        if not line.startswith("holding"):
            raise RuntimeError("mcx-media --hold: %r" % line)
    time.sleep(1)
    during = bench.status_kib(gw.pid, "VmRSS")
    for h in holders:
        bench.stop(h)
    n = conns * per_conn
    res = {"tunnels": n, "connections": conns, "rss_before_kib": before, "rss_held_kib": during,
           "kib_per_tunnel": (during - before) / n}
    bench.log("bench udp: %d idle UDP tunnels on %d connections: RSS %d -> %d KiB, %.2f KiB "
              "per tunnel" % (n, conns, before, during, res["kib_per_tunnel"]))
    return res


def many(paths):
    """100 tunnels x 50/s from one mcx-media process, for each (name, args)
    of paths, the first being their floor (--direct: the same 100 streams on
    one socket). The paths take turns, REPEATS rounds, so that each sees the
    machine's load alike; a path's row has the medians of its rounds' p50,
    p99 and jitter, and the sum of its losses."""
    runs = {name: [] for name, _ in paths}
    for i in range(REPEATS):
        for name, args in paths:
            r = media(["--tunnels", "100", *args], SECONDS, 50)
            runs[name].append(r)
            bench.log("bench udp: %s, round %d: sent %d, lost %d, p50 %.3f ms, p99 %.3f ms" % (
                name, i + 1, r["sent"], r["lost"], r["rtt_p50_ms"], r["rtt_p99_ms"]))
    rows = []
    for name, _ in paths:
        rs = runs[name]
        rows.append({"path": name, "p50_ms": bench.med([r["rtt_p50_ms"] for r in rs]),
                     "p99_ms": bench.med([r["rtt_p99_ms"] for r in rs]),
                     "jitter_ms": bench.med([r["jitter_ms"] for r in rs]),
                     "sent": sum(r["sent"] for r in rs), "lost": sum(r["lost"] for r in rs),
                     "runs": rs})
    return rows


def table(rows, floor, socat):
    out = ["| path | RTT p50 ms (over floor) | RTT p99 ms (over floor) | jitter ms | loss at 50/s | "
           "loss at %d/s | relay CPU µs per datagram | CPU vs socat |" % PPS,
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        us = r["relay_us_per_datagram"]
        out.append("| %s | %.3f (%+.3f) | %.3f (%+.3f) | %.3f | %d | %.2f%% | %s | %s |" % (
            r["path"], r["p50_ms"], r["p50_ms"] - floor["p50_ms"], r["p99_ms"],
            r["p99_ms"] - floor["p99_ms"], r["jitter_ms"], r["lost_50pps"], r["rate_loss_pct"],
            "%.2f" % us if us is not None else "-",
            bench.ratio(us, socat["relay_us_per_datagram"]) if us is not None else "-"))
    return "\n".join(out)


def many_table(rows, floor):
    out = ["| path | RTT p50 ms (over floor) | RTT p99 ms (over floor) | jitter ms | lost |",
           "|---|---|---|---|---|"]
    for r in rows:
        out.append("| %s | %.3f (%+.3f) | %.3f (%+.3f) | %.3f | %d of %d |" % (
            r["path"], r["p50_ms"], r["p50_ms"] - floor["p50_ms"], r["p99_ms"],
            r["p99_ms"] - floor["p99_ms"], r["jitter_ms"], r["lost"], r["sent"]))
    return "\n".join(out)


def start_mcgw(tmp, target):
    """mcgw with a plain and a TLS listener (a throw-away CA's certificate for
    127.0.0.1); returns (process, plain proxy URL, TLS proxy URL, CA file)."""
    pki = bench.make_pki(os.path.join(tmp, "pki"))
    plain, tls = bench.free_port(), bench.free_port()
    ini = os.path.join(tmp, "mcgw.ini")
    with open(ini, "w") as f:
        f.write("[gateway]\nlog_level = warn\n[tunnel]\n"
                "listen = 127.0.0.1:%d\nlisten_tls = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n"
                "allow_udp = %s\nallow_private = yes\n"
                "max_new_tunnels_per_client = 0/s\nmax_tunnels_per_client = 2000\n"
                "max_new_upstream_per_target = 0/s\n" % (plain, tls, pki["cert"], pki["key"],
                                                         target))
    gw = bench.spawn([bench.MCGW, "run", "-c", ini])
    if not (bench.wait_port(plain, gw) and bench.wait_port(tls, gw)):
        raise RuntimeError("mcgw did not listen")
    return gw, "http://127.0.0.1:%d" % plain, "https://127.0.0.1:%d" % tls, pki["ca"]


def main():
    os.makedirs(bench.OUT, exist_ok=True)
    load_start = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="mcgw-bench-udp-")
    refl = bench.spawn([MEDIA, "reflect", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                       text=True)
    target = refl.stdout.readline().strip().rsplit(" ", 1)[-1]
    rport = target.rsplit(":", 1)[1]
    rows, ramps = [], []

    def path(name, args, pid):
        rows.append(measure(name, args, pid))
        ramps.append(ramp(name, args, pid))

    path("floor (direct)", ["--direct", "--target", target], None)
    sport = bench.free_port()
    socat = bench.spawn(["socat", "UDP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr" % sport,
                         "UDP:127.0.0.1:%s" % rport])
    path("socat", ["--direct", "--target", "127.0.0.1:%d" % sport], socat.pid)
    bench.stop(socat)
    gw, proxy, proxy_tls, ca = start_mcgw(tmp, target)
    tls = ["--proxy", proxy_tls, "--proxy-cacert", ca]
    path("mcgw h2 (plain)", ["--h2", "--proxy", proxy, "--target", target], gw.pid)
    path("mcgw h2 (TLS)", ["--h2", *tls, "--target", target], gw.pid)
    path("mcgw h1 (plain)", ["--proxy", proxy, "--target", target], gw.pid)
    hundred = many([("floor (direct), 100 streams", ["--direct", "--target", target]),
                    ("mcgw h2 (plain), 100 tunnels", ["--h2", "--proxy", proxy, "--target", target]),
                    ("mcgw h2 (TLS), 100 tunnels", ["--h2", *tls, "--target", target])])
    floor100 = hundred[0]
    ramps100 = [ramp("floor (direct), 100 streams", ["--direct", "--target", target], None, 100),
                ramp("mcgw h2 (plain), 100 tunnels", ["--h2", "--proxy", proxy, "--target", target],
                     gw.pid, 100)]
    idle = idle_rss(gw, proxy, target)
    bench.stop(gw)
    bench.stop(refl)
    load_end = os.getloadavg()
    md = table(rows, rows[0], rows[1])
    md_many = many_table(hundred, floor100)
    md_rate = ramp_table(ramps, ramps[1], "socat", ramps[0])
    md_rate100 = ramp_table(ramps100, ramps100[0], "floor", ramps100[0])
    with open(os.path.join(bench.OUT, "udp.json"), "w") as f:
        json.dump({"machine": bench.machine(), "load_start": load_start, "load_end": load_end,
                   "seconds": SECONDS, "pps": PPS, "repeats": REPEATS, "rows": rows,
                   "hundred_tunnels": hundred, "idle": idle,
                   "most_rate": {"start": RATE_START, "max": RATE_MAX, "step_s": RATE_S,
                                 "loss_max_pct": LOSS_MAX_PCT, "one_tunnel": ramps,
                                 "hundred_tunnels": ramps100}}, f, indent=1)
    with open(os.path.join(bench.OUT, "udp.md"), "w") as f:
        f.write("\n\n".join([md, md_many, md_rate, md_rate100]) + "\n")
    print("\nUDP tunnels (one stream each; %g s per figure):\n" % SECONDS)
    print(md)
    print("\n100 tunnels x 50/s of 172 bytes on one HTTP/2 connection, one mcx-media process "
          "(medians of %d rounds of %g s, the paths taking turns):\n" % (REPEATS, SECONDS))
    print(md_many)
    print("\nRSS per idle UDP tunnel: %.2f KiB (%d tunnels on %d HTTP/2 connections; mcgw %d -> %d "
          "KiB)" % (idle["kib_per_tunnel"], idle["tunnels"], idle["connections"],
                    idle["rss_before_kib"], idle["rss_held_kib"]))
    print("\nMost datagrams/s (172 bytes, each way) with round-trip loss < %g%%, one tunnel "
          "(steps of %g s, doubling from %d/s to %d/s, then half-way):\n" % (
              LOSS_MAX_PCT, RATE_S, RATE_START, RATE_MAX))
    print(md_rate)
    print("\nThe same, 100 tunnels on one HTTP/2 connection (the rate is the sum over them):\n")
    print(md_rate100)
    print("\nLoad average: %.2f at the start, %.2f at the end" % (load_start[0], load_end[0]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        bench.cleanup()
