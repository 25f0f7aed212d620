"""GET /metrics, /status and /tunnels against held tunnels; the exposition
checked by promtool and scraped by a real Prometheus server."""

import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from opsutil import (close_all, connect_status, free_port, gateway_factory, open_tunnel,  # noqa: F401
                     require_tool, upstream, wait_until, base_config)

FAMILIES = {
    "mcgw_tunnels_active": "gauge",
    "mcgw_tunnels_total": "counter",
    "mcgw_tunnel_bytes_total": "counter",
    "mcgw_tunnel_duration_seconds": "histogram",
    "mcgw_tunnel_connect_seconds": "histogram",
    "mcgw_downstream_connections_active": "gauge",
    "mcgw_idm_authorized": "gauge",
    "mcgw_idm_access_token_expiry_timestamp_seconds": "gauge",
    "mcgw_idm_refresh_total": "counter",
    "mcgw_idm_logout_total": "counter",
    "mcgw_config_reloads_total": "counter",
    "mcgw_build_info": "gauge",
}


def parse_samples(text):
    """{(name, frozenset(labels)): value} of an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert m, f"malformed sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def sample(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


@pytest.mark.timeout(60)
def test_metrics_exposition(gateway_factory, upstream, tmp_path):
    gw = gateway_factory(base_config(allow=[f"127.0.0.1:{upstream.port}"]))
    held = [open_tunnel(gw.proxy_port, f"127.0.0.1:{upstream.port}") for _ in range(3)]
    done = open_tunnel(gw.proxy_port, f"127.0.0.1:{upstream.port}")
    done.sendall(b"x" * 1000)
    done.close()
    assert connect_status(gw.proxy_port, f"127.0.0.2:{upstream.port}") == 403
    wait_until(lambda: gw.status()["tunnels"]["by_result"]["denied"] == 1
               and gw.status()["tunnels"]["by_result"]["ok"] == 1, what="closed tunnels counted")

    status, headers, body = gw.get("/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()

    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), \
        check.stdout + check.stderr

    for name, kind in FAMILIES.items():
        assert f"# TYPE {name} {kind}\n" in text, name
        assert f"# HELP {name} " in text, name
    helps = re.findall(r"^# HELP (\S+)", text, re.M)
    types = re.findall(r"^# TYPE (\S+)", text, re.M)
    assert helps == types and len(helps) == len(set(helps))

    s = parse_samples(text)
    assert sample(s, "mcgw_tunnels_active", proto="h1", type="tcp") == 3
    assert sample(s, "mcgw_tunnels_active", proto="h2", type="tcp") == 0
    assert sample(s, "mcgw_tunnels_total", proto="h1", type="tcp", result="ok") == 1
    assert sample(s, "mcgw_tunnels_total", proto="h1", type="tcp", result="denied") == 1
    for result in ("ok", "denied", "refused_not_tls", "connect_failed", "timeout", "limit", "error"):
        assert ("mcgw_tunnels_total", frozenset({("proto", "h2"), ("type", "tcp"), ("result", result)})) in s
    assert sample(s, "mcgw_tunnel_bytes_total", direction="upstream") == 1000
    assert sample(s, "mcgw_tunnel_duration_seconds_count") == 1
    assert sample(s, "mcgw_tunnel_duration_seconds_bucket", le="+Inf") == 1
    assert sample(s, "mcgw_tunnel_duration_seconds_bucket", le="86400") == 1
    # Observed as tunnels close: the one closed tunnel that reached its upstream.
    assert sample(s, "mcgw_tunnel_connect_seconds_count") == 1
    assert sample(s, "mcgw_tunnel_connect_seconds_bucket", le="10") == 1
    assert sample(s, "mcgw_downstream_connections_active",
                  listener=f"127.0.0.1:{gw.proxy_port}") == 3
    assert sample(s, "mcgw_idm_authorized") == 0
    assert sample(s, "mcgw_idm_state", state="unconfigured") == 1
    assert sample(s, "mcgw_idm_access_token_expiry_timestamp_seconds") == 0
    for result in ("ok", "failed", "invalid_grant"):
        assert sample(s, "mcgw_idm_refresh_total", result=result) == 0
    assert sample(s, "mcgw_config_reloads_total", result="ok") == 0
    assert sample(s, "mcgw_config_reloads_total", result="failed") == 0
    version = gw.status()["version"]
    assert sample(s, "mcgw_build_info", version=version) == 1
    assert sample(s, "mcgw_tunnels_limit") == 10000
    assert sample(s, "mcgw_client_tunnels_max") == 3
    # Histogram buckets are cumulative.
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in s.items()
                     if k[0] == "mcgw_tunnel_connect_seconds_bucket")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    close_all(held)


@pytest.mark.timeout(60)
def test_status_and_tunnels(gateway_factory, upstream):
    gw = gateway_factory(base_config(allow=[f"127.0.0.1:{upstream.port}"]))
    target = f"127.0.0.1:{upstream.port}"
    held = [open_tunnel(gw.proxy_port, target) for _ in range(4)]
    held[0].sendall(b"secret-payload-bytes")
    assert connect_status(gw.proxy_port, "127.0.0.3:9") == 403
    wait_until(lambda: gw.status()["bytes"]["upstream"] == 20, what="bytes counted")

    st = gw.status()
    t = st["tunnels"]
    assert t["active"] == 4
    assert t["by_proto"]["h1"]["active"] == 4 and t["by_proto"]["h2"]["active"] == 0
    assert t["by_proto"]["h1"]["by_result"]["denied"] == 1
    assert t["by_result"]["denied"] == 1
    assert st["listeners"] == [{"addr": f"127.0.0.1:{gw.proxy_port}", "tls": False,
                                "open": True, "connections_active": 4}]
    assert st["destinations"] == [{"target": target, "tunnels": 4}]
    assert st["clients"]["top"] == [{"address": "127.0.0.1", "tunnels": 4}]
    assert st["idm"]["state"] == "unconfigured" and st["idm"]["authorized"] is False

    status, headers, body = gw.get("/tunnels")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert b"secret-payload" not in body
    tunnels = json.loads(body)
    assert len(tunnels) == 4
    client_ports = sorted(s.getsockname()[1] for s in held)
    assert sorted(int(x["client"].rsplit(":", 1)[1]) for x in tunnels) == client_ports
    for x in tunnels:
        assert set(x) == {"id", "proto", "type", "client", "subject", "target", "connected", "local",
                          "egress", "state", "age_ms", "bytes_up", "bytes_down"}
        assert x["proto"] == "h1" and x["type"] == "tcp" and x["target"] == target and x["connected"] == target
        assert x["local"].startswith("127.0.0.1:") and x["egress"] is None
        assert x["state"] == "established" and x["subject"] is None
    mine = [x for x in tunnels if x["client"].endswith(f":{held[0].getsockname()[1]}")]
    assert mine[0]["bytes_up"] == 20
    assert len(gw.get_json("/tunnels?limit=2")) == 2
    close_all(held)
    wait_until(lambda: gw.get_json("/tunnels") == [], what="tunnel list empty")


def prom_query(port, query):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            doc = json.load(r)
    except OSError:
        return None
    if doc.get("status") != "success" or not doc["data"]["result"]:
        return None
    return float(doc["data"]["result"][0]["value"][1])


@pytest.mark.timeout(180)
def test_prometheus_scrapes_tunnel_count(gateway_factory, upstream, tmp_path):
    prometheus = require_tool("prometheus")
    gw = gateway_factory(base_config(allow=[f"127.0.0.1:{upstream.port}"]))
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: mcgw
    static_configs:
      - targets: ["127.0.0.1:{gw.admin_port}"]
""")
    log = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    held = []
    try:
        wait_until(lambda: prom_query(port, 'up{job="mcgw"}') == 1, 60, "Prometheus scraping mcgw")
        held = [open_tunnel(gw.proxy_port, f"127.0.0.1:{upstream.port}") for _ in range(37)]
        wait_until(lambda: prom_query(port, 'sum(mcgw_tunnels_active{job="mcgw"})') == 37, 60,
                   "mcgw_tunnels_active == 37 in Prometheus")
        assert prom_query(port, 'mcgw_tunnels_active{proto="h1",type="tcp"}') == 37
        close_all(held)
        wait_until(lambda: prom_query(port, 'sum(mcgw_tunnels_active{job="mcgw"})') == 0, 60,
                   "mcgw_tunnels_active back to 0 in Prometheus")
        assert prom_query(port, 'mcgw_tunnels_total{proto="h1",type="tcp",result="ok"}') == 37
    finally:
        close_all(held)
        prom.terminate()
        try:
            prom.wait(30)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait()
        log.close()


@pytest.mark.timeout(60)
def test_refusal_spike_logged_once(gateway_factory):
    # 120 refusals from one device in seconds: without the new-tunnel rate
    # (20/s, burst 50) they are 403s, the refusal this test is about.
    gw = gateway_factory(base_config(extra_tunnel=[("max_new_tunnels_per_client", "0/s")]))
    for _ in range(60):
        assert connect_status(gw.proxy_port, "forbidden.example:443") == 403
    spike = gw.wait_log(lambda r: r.get("msg") == "refusal_spike", 25, "refusal_spike")
    assert spike["level"] == "warn"
    assert spike["top_result"] == "denied" and spike["refusals"] >= 50
    assert spike["last_target"] == "forbidden.example:443"
    # Per-tunnel lines carry the reason; the spike line is not repeated.
    denied = [r for r in gw.log_records() if r.get("msg") == "tunnel_closed"
              and r.get("result") == "denied"]
    assert len(denied) == 60 and denied[0]["close"] == "target not allowed"
    for _ in range(60):
        assert connect_status(gw.proxy_port, "forbidden.example:443") == 403
    gw.wait_log(lambda r: r.get("msg") == "tunnel_closed" and r.get("result") == "denied"
                and sum(1 for x in gw.log_records() if x.get("result") == "denied") >= 120,
                what="the second burst closed")
    assert sum(1 for r in gw.log_records() if r.get("msg") == "refusal_spike") == 1


@pytest.mark.timeout(60)
def test_h2_tunnels_labelled_by_proto(gateway_factory, upstream):
    from h2client import H2Client
    target = f"127.0.0.1:{upstream.port}"
    gw = gateway_factory(base_config(allow=[target]))
    h1 = [open_tunnel(gw.proxy_port, target) for _ in range(2)]
    client = H2Client(gw.proxy_port)  # h2c with prior knowledge on the plain listener
    streams = [client.connect(target) for _ in range(3)]
    for s in streams:
        client.wait_response(s)
        assert s.status == 200
    s = parse_samples(gw.get("/metrics")[2].decode())
    assert sample(s, "mcgw_tunnels_active", proto="h1", type="tcp") == 2
    assert sample(s, "mcgw_tunnels_active", proto="h2", type="tcp") == 3
    st = gw.status()
    assert st["tunnels"]["by_proto"]["h2"]["active"] == 3
    assert sorted(t["proto"] for t in gw.get_json("/tunnels")) == ["h1", "h1", "h2", "h2", "h2"]
    client.close()
    close_all(h1)
    wait_until(lambda: gw.status()["tunnels"]["active"] == 0, what="all tunnels closed")
    s = parse_samples(gw.get("/metrics")[2].decode())
    assert sample(s, "mcgw_tunnels_active", proto="h2", type="tcp") == 0
    closed_h2 = sum(v for (name, labels), v in s.items()
                    if name == "mcgw_tunnels_total" and ("proto", "h2") in labels)
    assert closed_h2 == 3
    assert sample(s, "mcgw_tunnels_total", proto="h1", type="tcp", result="ok") == 2
