#!/usr/bin/python3
"""`make bench`, UDP part: CONNECT-UDP through mcgw beside two references,
on loopback, in one run (docs/benchmarks.md, "UDP tunnels").

- the floor: mcx-media --direct, the same stream straight to the reflector;
- a plain user-space UDP relay: socat UDP-LISTEN:P,fork UDP:reflector;
- mcgw: mcx-media through the plain listener, HTTP/2 (h2c) and HTTP/1.1.

Two figures per path:
- latency: one stream of 172-byte datagrams (12-byte RTP header + 160) at
  50/s for BENCH_UDP_SECONDS (default 10, 3 with BENCH_QUICK=1): round trip
  p50/p99, jitter, loss;
- rate: one stream at BENCH_UDP_PPS (default 20000) for the same time: loss,
  and the relay's CPU per relayed datagram (both directions counted).

And for mcgw over HTTP/2: 100 tunnels on one connection at 50/s each
(latency, loss), and RSS per idle UDP tunnel: mcgw's RSS with 1,000 idle
tunnels on 10 connections (10 x `mcx-media --tunnels 100 --hold`), less its
RSS before, per tunnel. Not measured here (yet): the TLS listener.
Outputs udp.json and udp.md in BENCH_OUT (default build/bench)."""
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


def table(rows, floor):
    out = ["| path | RTT p50 ms (over floor) | RTT p99 ms (over floor) | jitter ms | loss at 50/s | "
           "loss at %d/s | relay CPU µs per datagram |" % PPS, "|---|---|---|---|---|---|---|"]
    for r in rows:
        us = r["relay_us_per_datagram"]
        out.append("| %s | %.3f (+%.3f) | %.3f (+%.3f) | %.3f | %d | %s | %s |" % (
            r["path"], r["p50_ms"], r["p50_ms"] - floor["p50_ms"], r["p99_ms"],
            r["p99_ms"] - floor["p99_ms"], r["jitter_ms"], r["lost_50pps"],
            "-" if r["rate_loss_pct"] != r["rate_loss_pct"] else "%.2f%%" % r["rate_loss_pct"],
            "%.2f" % us if us is not None else "-"))
    return "\n".join(out)


def main():
    os.makedirs(bench.OUT, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="mcgw-bench-udp-")
    refl = bench.spawn([MEDIA, "reflect", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                       text=True)
    target = refl.stdout.readline().strip().rsplit(" ", 1)[-1]
    rport = target.rsplit(":", 1)[1]
    rows = [measure("floor (direct)", ["--direct", "--target", target], None)]
    sport = bench.free_port()
    socat = bench.spawn(["socat", "UDP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr" % sport,
                         "UDP:127.0.0.1:%s" % rport])
    rows.append(measure("socat", ["--direct", "--target", "127.0.0.1:%d" % sport], socat.pid))
    bench.stop(socat)
    ini = os.path.join(tmp, "mcgw.ini")
    with open(ini, "w") as f:
        f.write("[gateway]\nlog_level = warn\n[admin]\nlisten = 127.0.0.1:0\n[tunnel]\n"
                "listen = 127.0.0.1:0\nallow_udp = %s\nallow_private = yes\n"
                "max_new_tunnels_per_client = 0/s\nmax_tunnels_per_client = 2000\n"
                "max_new_upstream_per_target = 0/s\n" % target)
    gw = bench.spawn([bench.MCGW, "run", "-c", ini])
    port = None
    for _ in range(100):
        ports = bench.listen_ports(gw.pid)
        if ports:
            port = min(ports)
            break
        time.sleep(0.1)
    if port is None:
        raise RuntimeError("mcgw did not listen")
    # the proxy listener is the one that answers CONNECT-UDP; try each
    for p in sorted(bench.listen_ports(gw.pid)):
        try:
            media(["--h2", "--proxy", "http://127.0.0.1:%d" % p, "--target", target], 0.1, 10)
            port = p
            break
        except RuntimeError:
            continue
    proxy = "http://127.0.0.1:%d" % port
    rows.append(measure("mcgw h2 (plain)", ["--h2", "--proxy", proxy, "--target", target], gw.pid))
    rows.append(measure("mcgw h1 (plain)", ["--proxy", proxy, "--target", target], gw.pid))
    many = media(["--h2", "--tunnels", "100", "--proxy", proxy, "--target", target], SECONDS, 50)
    rows.append({"path": "mcgw h2, 100 tunnels x 50/s", "p50_ms": many["rtt_p50_ms"],
                 "p99_ms": many["rtt_p99_ms"], "jitter_ms": many["jitter_ms"],
                 "lost_50pps": many["lost"], "rate_pps": PPS, "rate_sent": 0, "rate_received": 0,
                 "rate_loss_pct": float("nan"), "relay_cpu_s": None,
                 "relay_us_per_datagram": None, "sent_50pps": many["sent"]})
    bench.log("bench udp: 100 tunnels x 50/s on one h2 connection: sent %d, lost %d, p50 %.3f, "
              "p99 %.3f ms" % (many["sent"], many["lost"], many["rtt_p50_ms"], many["rtt_p99_ms"]))
    idle = idle_rss(gw, proxy, target)
    bench.stop(gw)
    bench.stop(refl)
    md = table(rows, rows[0])
    with open(os.path.join(bench.OUT, "udp.json"), "w") as f:
        json.dump({"machine": bench.machine(), "seconds": SECONDS, "pps": PPS, "rows": rows,
                   "idle": idle}, f, indent=1)
    with open(os.path.join(bench.OUT, "udp.md"), "w") as f:
        f.write(md + "\n")
    print("\nUDP tunnels (one stream each; %g s per figure):\n" % SECONDS)
    print(md)
    print("\nRSS per idle UDP tunnel: %.2f KiB (%d tunnels on %d HTTP/2 connections; mcgw %d -> %d "
          "KiB)" % (idle["kib_per_tunnel"], idle["tunnels"], idle["connections"],
                    idle["rss_before_kib"], idle["rss_held_kib"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        bench.cleanup()
