"""The live status page in Debian's headless Chromium (driven by playwright-core
from tests/ui): the shown tunnel count follows the tunnels the test holds,
a CONNECT-UDP tunnel is shown as such beside a TCP one, and the page fits a
phone screen. Screenshots go to build/test-artifacts/."""

import json
import os
import shutil
import subprocess

import pytest

from opsutil import (ARTIFACTS, SRC, base_config, close_all, connect_status,  # noqa: F401
                     gateway_factory, open_tunnel, require_tool, upstream, wait_until)
from test_udp import connect_udp, datagram, h2c, udp_target

UI = SRC / "tests" / "ui"


class Browser:
    def __init__(self):
        self.proc = subprocess.Popen(["node", str(UI / "status_page.mjs")], cwd=UI,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def __call__(self, cmd, **args):
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"browser driver exited: {self.proc.stderr.read()}")
        answer = json.loads(line)
        assert answer["ok"], f"{cmd}: {answer.get('error')}"
        return answer

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()  # node stays up while its stdin is open
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def browser():
    require_tool("chromium")
    require_tool("node")
    if not (UI / "node_modules" / "playwright-core").is_dir():
        pytest.fail("playwright-core is not installed: scripts/deps.sh test runs npm ci in tests/ui")
    b = Browser()
    yield b
    b.close()


@pytest.mark.timeout(120)
def test_page_follows_held_tunnels(gateway_factory, upstream, browser):
    target = f"127.0.0.1:{upstream.port}"
    gw = gateway_factory(base_config(allow=[target]))
    held = [open_tunnel(gw.proxy_port, target) for _ in range(3)]
    assert connect_status(gw.proxy_port, "127.0.0.9:1") == 403
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        browser("open", url=gw.admin_url + "/", width=1280, height=900)
        browser("wait_text", selector="#tunnels-active", text="3")
        browser("wait_text", selector="#conn", text="live")
        held += [open_tunnel(gw.proxy_port, target) for _ in range(5)]
        browser("wait_text", selector="#tunnels-active", text="8")
        assert browser("text", selector="#idm-state")["text"] == "not configured"
        assert browser("text", selector="#idm-clock")["text"] == "–"
        assert target in browser("text", selector="#destinations")["text"]
        browser("wait_text", selector="#destinations td:nth-child(2)", text="8")
        refusals = browser("text", selector="#refusals")["text"]
        assert refusals.startswith("denied"), refusals
        assert browser("text", selector="#listeners td:first-child")["text"] == f"127.0.0.1:{gw.proxy_port}"
        browser("wait_text", selector="#tunnels-by-proto", text="h1: 8 · h2: 0 · 8 connections")
        assert len(browser("text", selector="#tunnels")["text"]) > 0
        browser("screenshot", path=str(ARTIFACTS / "status-page.png"))

        close_all(held)
        browser("wait_text", selector="#tunnels-active", text="0")

        # A phone: the page reflows without sideways scrolling.
        held += [open_tunnel(gw.proxy_port, target) for _ in range(2)]
        browser("open", url=gw.admin_url + "/", width=390, height=844)
        browser("wait_text", selector="#tunnels-active", text="2")
        size = browser("overflow")
        assert size["scroll"] <= size["inner"], size
        browser("screenshot", path=str(ARTIFACTS / "status-page-phone.png"))
        assert browser("errors")["errors"] == []
    finally:
        close_all(held)


@pytest.mark.timeout(120)
def test_page_shows_udp_tunnel_beside_tcp(gateway_factory, upstream, browser):
    """A CONNECT-UDP tunnel (python3-h2, h2c) and a CONNECT tunnel (HTTP/1.1)
    open at once: the page's tunnel table shows one row of each, the UDP one
    typed as such, with its target and the datagram's bytes."""
    tcp_target = f"127.0.0.1:{upstream.port}"
    media = udp_target()
    udp_port = media.getsockname()[1]
    gw = gateway_factory(base_config(allow=[tcp_target],
                                     extra_tunnel=[("allow_udp", f"127.0.0.1:{udp_port}")]))
    held = [open_tunnel(gw.proxy_port, tcp_target)]
    client = h2c(gw)
    try:
        s = connect_udp(client, "127.0.0.1", udp_port)
        assert s.status == 200
        client.send(s, datagram(b"R" * 172))
        assert media.recvfrom(2048)[0] == b"R" * 172
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser("open", url=gw.admin_url + "/", width=1280, height=900)
        browser("wait_text", selector="#tunnels-active", text="2")
        browser("wait_text", selector="#tunnels-by-proto",
                text="h1: 1 · h2: 1 · udp: 1 · 2 connections")
        rows = browser("rows", selector="#tunnels")["rows"]
        # id, proto, device, target, state, age, up, down
        by_proto = {r[1]: r for r in rows}
        assert sorted(by_proto) == ["h1", "h2 udp"], rows
        assert by_proto["h2 udp"][3].startswith(f"127.0.0.1:{udp_port} from 127.0.0.1:"), rows
        assert by_proto["h2 udp"][6] == "172 B", rows
        assert by_proto["h1"][3].startswith(f"{tcp_target} from 127.0.0.1:"), rows
        browser("screenshot", path=str(ARTIFACTS / "status-page-udp.png"))
        assert browser("errors")["errors"] == []
    finally:
        client.close()
        media.close()
        close_all(held)
