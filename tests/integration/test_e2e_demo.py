"""`make demo`'s script (tests/demo/demo.py) runs with DEMO_SECONDS and tells
the whole story: numbered steps, the IdMS's separate addresses, limited
service, the gateway's and the device's MC service IDs, the byte-for-byte
relay, the status table and the live page - and leaks no secret."""

import os
import re
import subprocess
from pathlib import Path

import pytest

import e2etest
from idmtest import BIN, SRC

pytestmark = pytest.mark.timeout(240)


def test_demo_tells_the_story(tmp_path):
    e2etest.require_binaries()
    env = dict(os.environ, BUILD=str(Path(BIN).parent), DEMO_DIR=str(tmp_path / "demo"),
               DEMO_SECONDS="1", DEMO_VOICE_SECONDS="2")
    p = subprocess.run(["/usr/bin/python3", str(SRC / "tests" / "demo" / "demo.py")],
                       capture_output=True, text=True, timeout=200, env=env)
    out = p.stdout
    assert p.returncode == 0, f"demo failed:\n{out}\n{p.stderr}"
    # Eight numbered steps, in order.
    steps = [int(m) for m in re.findall(r"^(\d)\. ", out, re.M)]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8], steps
    # The voice step: 2 s of 50 packets/s through HTTP/2 CONNECT-UDP, all back.
    assert "sent 100, received 100, lost 0, reordered 0" in out
    assert re.search(r"round trip p50 [\d.]+ ms, p99 [\d.]+ ms; jitter [\d.]+ ms", out)
    assert "type=udp, 100 datagrams up, 100 down, 0 dropped" in out
    assert re.search(r"authorization endpoint\s+https://127\.0\.0\.2:\d+", out)
    assert re.search(r"token endpoint\s+https://127\.0\.0\.3:\d+", out)
    assert "Started mcgw with configs/demo.ini" in out
    assert re.search(r"gets 403\n.*limited service", out)
    assert re.search(r"Now the MC server is allowed: CONNECT 127\.0\.0\.4:\d+ -> 200", out)
    assert "mcptt_id   sip:vehicle-17@mcptt.mc.test" in out        # the gateway's
    assert "mcptt_id   sip:officer-7@mcptt.mc.test" in out         # the device's
    assert "exactly what the device's TLS wrote and read" in out
    assert "10 HTTP/2 CONNECT streams" in out
    # The status table: the gateway's login and expiry, tunnels and counts.
    assert re.search(r"authorized as vehicle-17", out)
    assert re.search(r"expires in (\d+ s|\d+m)", out)
    assert re.search(r"127\.0\.0\.3:\d+\s+h2\s+ok\s+200", out)
    assert re.search(r"Live status: http://127\.0\.0\.1:\d+/ ", out)
    assert "Stopping after DEMO_SECONDS=1 s." in out and "Stopped." in out
    # Logs go to files, whose paths are printed; mcgw's log is not dumped.
    assert "idms.log" in out and "mcgw.log" in out
    assert '"msg":' not in out
    demo = tmp_path / "demo"
    assert (demo / "mcgw.log").stat().st_size > 0 and (demo / "idms.log").exists()
    # No secret in the story or the logs: no JWT (tokens), no code or
    # verifier parameters, not the password, none of the IdMS's secret events.
    text = out + p.stderr + (demo / "mcgw.log").read_text() + (demo / "idms.log").read_text()
    assert not re.search(r"eyJ[A-Za-z0-9_-]{10,}\.", text)
    assert '"event":"secret"' not in text
    assert "demo password" not in text
    assert not re.search(r"[?&](code|state|code_verifier)=", text)
