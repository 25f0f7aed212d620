"""mcx-media end to end: the reference device's media path (an RTP-shaped
stream over CONNECT-UDP) through the gateway to `mcx-media reflect`, over
HTTP/2 on the TLS listener with a device certificate and over HTTP/1.1 on
the plain listener. mcx-media's capsule code is its own (device/), not the
gateway's."""

import json
import os
import subprocess

import pytest

import h2client
import mcgwtest

MEDIA = os.environ.get("MCX_MEDIA_BIN", str(mcgwtest.SRC / "build" / "mcx-media"))


@pytest.fixture
def reflector():
    p = subprocess.Popen([MEDIA, "reflect", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    line = p.stdout.readline()
    assert line.startswith("reflecting on 127.0.0.1:"), line
    yield int(line.rsplit(":", 1)[1])
    p.terminate()
    p.wait(timeout=10)


def run_media(*args, timeout=60):
    r = subprocess.run([MEDIA, "--json", "--seconds", "2", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check_figures(fig):
    assert fig["sent"] == 100 and fig["received"] == 100 and fig["lost"] == 0
    assert fig["duplicates"] == 0
    assert 0 < fig["rtt_p50_ms"] <= fig["rtt_p99_ms"]
    assert fig["jitter_ms"] >= 0


def test_h1_on_plain_listener(mcgw, reflector):
    gw = mcgw(allow_udp=f"127.0.0.1:{reflector}")
    fig = run_media("--proxy", f"http://127.0.0.1:{gw.proxy_port}",
                    "--target", f"127.0.0.1:{reflector}")
    check_figures(fig)
    rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed", 10, "the access log")
    assert (rec["proto"], rec["type"], rec["status"]) == ("h1", "udp", 101)
    assert rec["datagrams_up"] == rec["datagrams_down"] == 100
    assert rec["bytes_up"] == 100 * (12 + 160)


def test_h2_on_tls_listener_with_device_certificate(mcgw, pki, reflector, tmp_path):
    (tmp_path / "devices").mkdir()
    devices = h2client.make_device_pki(tmp_path / "devices")
    gw = mcgw(allow_udp=f"127.0.0.1:{reflector}", listen_tls="127.0.0.1:0",
              tls_cert=pki.server_cert, tls_key=pki.server_key, client_ca=devices.ca_cert)
    port = gw.listen_port("proxy_tls")
    fig = run_media("--h2", "--proxy", f"https://localhost:{port}", "--proxy-cacert", pki.ca_cert,
                    "--proxy-cert", devices.cert, "--proxy-key", devices.key,
                    "--target", f"127.0.0.1:{reflector}")
    check_figures(fig)
    assert fig["proto"] == "h2"
    rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed", 10, "the access log")
    assert (rec["proto"], rec["type"]) == ("h2", "udp")
    assert rec["subject"] != "-" and "CN=" in rec["subject"]
    # without the device certificate: refused at the TLS handshake
    r = subprocess.run([MEDIA, "--h2", "--seconds", "1", "--proxy", f"https://localhost:{port}",
                        "--proxy-cacert", str(pki.ca_cert), "--target", f"127.0.0.1:{reflector}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    # the key's mode is checked before its use (device/proxy_opts.c)
    loose = tmp_path / "loose.key"
    loose.write_bytes(open(devices.key, "rb").read())
    loose.chmod(0o640)
    r = subprocess.run([MEDIA, "--h2", "--seconds", "1", "--proxy", f"https://localhost:{port}",
                        "--proxy-cacert", str(pki.ca_cert), "--proxy-cert", str(devices.cert),
                        "--proxy-key", str(loose), "--target", f"127.0.0.1:{reflector}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "accessible by group or others (mode 0640)" in r.stderr, r.stderr


def test_proxy_option_errors(pki, reflector):
    """The proxy options' usage errors, the same as mcx-login's."""
    for args, message in [(["--proxy", "ftp://127.0.0.1:1"],
                           "--proxy: expected http://GW:PORT or https://GW:PORT"),
                          (["--proxy", "https://127.0.0.1:1", "--proxy-key", "k"],
                           "--proxy-cert and --proxy-key go together"),
                          (["--proxy", "http://127.0.0.1:1", "--proxy-cacert", str(pki.ca_cert)],
                           "need an https:// proxy")]:
        r = subprocess.run([MEDIA, *args, "--target", f"127.0.0.1:{reflector}"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and message in r.stderr, (args, r.stderr)


def test_text_output_and_refusal(mcgw, reflector):
    gw = mcgw(allow_udp="127.0.0.1:1")
    r = subprocess.run([MEDIA, "--seconds", "1", "--proxy", f"http://127.0.0.1:{gw.proxy_port}",
                        "--target", f"127.0.0.1:{reflector}"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "403" in r.stderr
    gw2 = mcgw(allow_udp=f"127.0.0.1:{reflector}")
    r = subprocess.run([MEDIA, "--seconds", "1", "--pps", "20", "--proxy",
                        f"http://127.0.0.1:{gw2.proxy_port}", "--target", f"127.0.0.1:{reflector}"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("sent 20, received 20, lost 0, reordered 0\nround trip p50 ")
    assert "jitter" in r.stdout
