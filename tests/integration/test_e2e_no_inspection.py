"""No inspection, proven: the device's TLS sessions end at the IdMS and the
gateway only relays them.

- A capture on the gateway's upstream side (tshark on loopback, filtered on
  the IdMS's ports) holds only TLS records, and exactly as many bytes each
  way as the device's TLS layer wrote and read; nothing of the login (user
  name, password, paths, form fields) appears in it in clear.
- A tunnel to a server presenting a certificate for another name makes the
  device fail: had the gateway terminated the device's TLS, it would have
  had to present a certificate of its own, and the device checks the name.
"""

import os
import signal
import subprocess
import time

import pytest

import e2etest
import mcgwtest
from e2etest import allow_idms, idms_clients, mcx_login, result_of, tunnels_closed
from idmtest import Gateway, Idms, pki, wait_until  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(180)

PASSWORD = "correct horse battery staple"


@pytest.fixture
def stack(tmp_path, pki):  # noqa: F811
    e2etest.require_binaries()
    started = []

    def start(**idms_kw):
        idms = Idms(tmp_path / f"idms{len(started)}", pki, clients=idms_clients(), **idms_kw)
        idms.start()
        started.append(idms)
        gw = Gateway(tmp_path / f"gw{len(started)}", None,
                     tunnel={"require_tls": "yes", "allow": allow_idms(idms)}).start()
        started.append(gw)
        return idms, gw
    yield start
    for p in reversed(started):
        if isinstance(p, Gateway):
            p.stop()
            p.assert_no_sanitizer_report()
        else:
            p.close()


def start_capture(path, ports):
    """tshark on lo for the IdMS's ports; skips when it cannot capture."""
    mcgwtest.require_tool("tshark")
    flt = " or ".join(f"tcp port {p}" for p in ports)
    proc = subprocess.Popen(["tshark", "-q", "-i", "lo", "-f", flt, "-w", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = []

    def capturing():
        # tshark says "Capturing on 'Loopback: lo'" once the capture runs.
        if proc.poll() is not None:
            err.append(proc.stderr.read())
            return True
        return path.exists() and path.stat().st_size > 0
    wait_until(capturing, 30, "tshark to start capturing")
    if proc.poll() is not None:
        pytest.skip(f"tshark cannot capture on lo here: {''.join(err).strip()[:300]}")
    return proc


def stop_capture(proc):
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def tshark_fields(path, ports, display_filter, *fields):
    args = ["tshark", "-r", str(path), "-o", "tcp.desegment_tcp_streams:TRUE"]
    for p in ports:
        args += ["-d", f"tcp.port=={p},tls"]
    args += ["-Y", display_filter, "-T", "fields", "-E", "separator=|"]
    for f in fields:
        args += ["-e", f]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def test_capture_shows_only_tls_records(stack, tmp_path, pki):  # noqa: F811
    idms, gw = stack()
    ports = [idms.authz_port, idms.token_port]
    pcap = tmp_path / "upstream.pcapng"
    cap = start_capture(pcap, ports)
    try:
        res = result_of(mcx_login(f"http://127.0.0.1:{gw.proxy_port}", idms, pki, tmp_path))
        wait_until(lambda: len(tunnels_closed(gw)) >= res["tunnels"], 10, "tunnels closed")
        # Let the capture see the last FINs: poll the file for growth to stop.
        sizes = []

        def settled():
            sizes.append(pcap.stat().st_size)
            return len(sizes) >= 3 and sizes[-1] == sizes[-3]
        wait_until(settled, 10, "the capture to settle", interval=0.2)
    finally:
        stop_capture(cap)

    # 1. Every TCP payload on the IdMS side is TLS: no segment with data that
    #    tshark does not decode as TLS (or as part of a reassembled record).
    not_tls = tshark_fields(pcap, ports, "tcp.len > 0 && !tls && !tcp.reassembled_in",
                            "frame.number")
    assert not_tls == [], f"non-TLS payload in frames {not_tls[:10]}"
    # TLS 1.3 shows its encrypted records' outer type as opaque_type.
    types = tshark_fields(pcap, ports, "tls", "tls.record.content_type", "tls.record.opaque_type")
    seen = {t for row in types for col in row for t in col.split(",") if t}
    assert seen and seen <= {"20", "21", "22", "23"}, seen  # CCS, alert, handshake, data
    assert "23" in seen

    # 2. The bytes each way are what the device's TLS layer wrote and read.
    segs = tshark_fields(pcap, ports, "tcp.len > 0", "tcp.dstport", "tcp.len")
    to_idms = sum(int(n) for dst, n in segs if int(dst) in ports)
    from_idms = sum(int(n) for dst, n in segs if int(dst) not in ports)
    assert (to_idms, from_idms) == (res["tls_bytes_sent"], res["tls_bytes_received"])
    closed = tunnels_closed(gw)
    assert sum(r["bytes_up"] for r in closed) == to_idms
    assert sum(r["bytes_down"] for r in closed) == from_idms

    # 3. Nothing of the login is in clear on the wire.
    raw = pcap.read_bytes()
    for clear in (b"officer-7", PASSWORD.encode(), b"/token", b"/interaction/",
                  b"code_verifier", b"HTTP/1.1", b"mcptt"):
        assert clear not in raw, clear


def test_idms_certificate_for_another_name_fails_the_device(stack, tmp_path, pki):  # noqa: F811
    """The gateway relays the tunnel (it cannot tell); the device refuses."""
    idms, gw = stack(cert=pki.wrong_cert, key=pki.wrong_key)
    p = mcx_login(f"http://127.0.0.1:{gw.proxy_port}", idms, pki, tmp_path)
    assert p.returncode == 1
    assert (f"mcx-login: discovery https://127.0.0.2:{idms.authz_port}/.well-known/"
            f"openid-configuration: certificate verification failed: certificate of "
            f"127.0.0.2:{idms.authz_port} refused: IP address mismatch") in p.stderr, p.stderr
    closed = wait_until(lambda: tunnels_closed(gw), 10, "the tunnel closed")
    assert len(closed) == 1 and closed[0]["result"] == "ok" and closed[0]["bytes_up"] > 0


def test_token_endpoint_certificate_for_another_name(stack, tmp_path, pki):  # noqa: F811
    """Login pages fine, the token endpoint (its own tunnel, its own TLS)
    presents a certificate for another name: no code is redeemed."""
    idms, gw = stack(token_cert=pki.wrong_cert, token_key=pki.wrong_key)
    p = mcx_login(f"http://127.0.0.1:{gw.proxy_port}", idms, pki, tmp_path)
    assert p.returncode == 1
    assert (f"mcx-login: token endpoint https://127.0.0.3:{idms.token_port}/token: certificate "
            f"verification failed: certificate of 127.0.0.3:{idms.token_port} refused: "
            "IP address mismatch") in p.stderr, p.stderr
    assert "code" in idms.kinds and "access_token" not in idms.kinds
    assert "Logged in" not in p.stdout
