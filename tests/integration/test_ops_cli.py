"""mcgw status and mcgw tunnels against held tunnels."""

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

from opsutil import (BIN, base_config, close_all, connect_status, free_port,  # noqa: F401
                     gateway_factory, open_tunnel, run_cli, upstream, wait_until)


@pytest.mark.timeout(60)
def test_status_and_tunnels_tables(gateway_factory, upstream):
    gw = gateway_factory(base_config(allow=[f"127.0.0.1:{upstream.port}"]))
    target = f"127.0.0.1:{upstream.port}"
    held = [open_tunnel(gw.proxy_port, target) for _ in range(5)]
    assert connect_status(gw.proxy_port, "127.0.0.9:1") == 403
    wait_until(lambda: gw.status()["tunnels"]["by_result"]["denied"] == 1, what="refusal counted")

    r = run_cli("status", "--admin", gw.admin_url)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"^tunnels\s+5 open of 10000 \(h1 5, h2 0\)", out, re.M), out
    assert re.search(r"^gateway login\s+not configured", out, re.M), out
    assert re.search(r"^\s+denied\s+1\s+0\s+1$", out, re.M), out
    assert re.search(r"^clients\s+1 active", out, re.M), out
    assert re.search(r"^rate tables\s+clients 1 of 4096, targets [01] of 4096$", out, re.M), out
    assert re.search(rf"^\s+{re.escape(target)}\s+5$", out, re.M), out

    r = run_cli("status", "--admin", gw.admin_url, "--json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["tunnels"]["active"] == 5

    r = run_cli("tunnels", "--admin", gw.admin_url)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].split()[:6] == ["ID", "PROTO", "CLIENT", "TARGET", "CONNECTED", "STATE"]
    rows = lines[1:-1]
    assert lines[-1] == "5 tunnels"
    ports = sorted(s.getsockname()[1] for s in held)
    assert sorted(int(row.split()[2].rsplit(":", 1)[1]) for row in rows) == ports
    for row in rows:
        cols = row.split()
        assert cols[1] == "h1" and cols[3] == target and cols[5] == "established"

    r = run_cli("tunnels", "--admin", gw.admin_url, "--json")
    assert len(json.loads(r.stdout)) == 5
    close_all(held)
    wait_until(lambda: run_cli("tunnels", "--admin", gw.admin_url).stdout.endswith("\n0 tunnels\n"),
               what="an empty table")


@pytest.mark.timeout(30)
def test_no_answer_exits_1():
    port = free_port()  # nothing listens there any more
    r = run_cli("status", "--admin", f"http://127.0.0.1:{port}")
    assert r.returncode == 1
    assert r.stderr.strip() == f"mcgw: no answer from http://127.0.0.1:{port}: connection refused"
    r = run_cli("tunnels", "--admin", f"127.0.0.1:{port}")
    assert r.returncode == 1 and "no answer" in r.stderr
    r = run_cli("status", "--admin", "https://127.0.0.1:1")
    assert r.returncode == 2 and "https is not supported" in r.stderr
    r = run_cli("status", "--bogus")
    assert r.returncode == 2


@pytest.mark.timeout(60)
def test_config_option_reads_admin_listen(gateway_factory, tmp_path, upstream):
    gw = gateway_factory(base_config(allow=[f"127.0.0.1:{upstream.port}"]))
    cfg = tmp_path / "cli.ini"
    cfg.write_text(gw.config_path.read_text().replace("listen = 127.0.0.1:0\n",
                                                 f"listen = 127.0.0.1:{gw.admin_port}\n", 1))
    held = [open_tunnel(gw.proxy_port, f"127.0.0.1:{upstream.port}") for _ in range(2)]
    r = run_cli("status", "-c", cfg)
    assert r.returncode == 0, r.stderr
    assert f"at {gw.admin_url}:" in r.stdout
    assert re.search(r"^tunnels\s+2 open", r.stdout, re.M)
    close_all(held)


@pytest.mark.timeout(60)
def test_watch_refreshes_in_place(gateway_factory, upstream):
    gw = gateway_factory(base_config(allow=[f"127.0.0.1:{upstream.port}"]))
    held = [open_tunnel(gw.proxy_port, f"127.0.0.1:{upstream.port}") for _ in range(2)]
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(BIN), "status", "--admin", gw.admin_url, "--watch", "-n", "0.2"],
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    screen = b""

    def frames():
        nonlocal screen
        while select.select([master], [], [], 0)[0]:
            try:
                screen += os.read(master, 65536)
            except OSError:
                break
        return screen.split(b"\x1b[H\x1b[2J")[1:]

    try:
        wait_until(lambda: any(b"2 open" in f for f in frames()), what="a frame with 2 tunnels")
        held += [open_tunnel(gw.proxy_port, f"127.0.0.1:{upstream.port}") for _ in range(3)]
        wait_until(lambda: b"5 open" in frames()[-1] if frames() else False,
                   what="the screen redrawn with 5 tunnels")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        close_all(held)
