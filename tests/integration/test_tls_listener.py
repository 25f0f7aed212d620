"""The HTTPS proxy listener (listen_tls): HTTP/1.1 over TLS with curl,
device admission by certificate (client_ca) with curl and openssl s_client,
source admission (clients), and the TLS checks of `mcgw check`."""

import socket
import subprocess

import pytest

import mcgwtest
from h2client import make_device_pki
from mcgwtest import UPSTREAM_BODY


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    mcgwtest.require_tool("openssl")
    return make_device_pki(tmp_path_factory.mktemp("devices"))


@pytest.fixture
def gw_tls(mcgw, pki):
    def start(**tunnel):
        tunnel.setdefault("allow", "localhost:*")
        gw = mcgw(listen_tls="127.0.0.1:0", tls_cert=pki.server_cert, tls_key=pki.server_key,
                  **tunnel)
        gw.tls_port = gw._listening("proxy_tls")[0]
        return gw
    return start


def curl_via_https_proxy(gw, pki, target_port, *, cacert=None, cert=None, key=None):
    """curl through the TLS listener to https://localhost:PORT/. The device
    verifies the proxy with the test CA and the destination with cacert."""
    mcgwtest.require_tool("curl")
    cmd = ["curl", "-sS", "--max-time", "20", "--proxy", f"https://localhost:{gw.tls_port}",
           "--proxy-cacert", str(pki.ca_cert), "--cacert", str(cacert or pki.ca_cert),
           f"https://localhost:{target_port}/"]
    if cert:
        cmd[1:1] = ["--proxy-cert", str(cert), "--proxy-key", str(key)]
    return subprocess.run(cmd, capture_output=True, timeout=30)


def test_http11_over_tls_end_to_end(gw_tls, pki, tls_upstream):
    """TLS in TLS: curl speaks TLS to the proxy and, inside the tunnel, its
    own TLS to the destination, whose certificate it verifies."""
    gw = gw_tls(require_tls="yes")
    r = curl_via_https_proxy(gw, pki, tls_upstream.port)
    assert r.returncode == 0, r.stderr
    assert r.stdout == UPSTREAM_BODY
    rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed")
    assert rec["proto"] == "h1" and rec["result"] == "ok" and rec["status"] == 200


def test_inner_tls_is_not_terminated_by_the_gateway(gw_tls, pki, tls_upstream):
    """With a CA that did not sign the destination's certificate, the device
    refuses it: the certificate it saw was the destination's own, so the
    gateway did not terminate the inner TLS."""
    gw = gw_tls(require_tls="yes")
    r = curl_via_https_proxy(gw, pki, tls_upstream.port, cacert=pki.other_ca_cert)
    assert r.returncode != 0, r.stdout
    # The device's own "unknown CA" alert reached the destination through
    # the tunnel: the handshake it refused was with the destination itself.
    with pytest.raises(Exception, match="UNKNOWN_CA"):
        tls_upstream.result()


def test_device_certificate_accepted_and_recorded(gw_tls, pki, devices, tls_upstream):
    gw = gw_tls(client_ca=devices.ca_cert)
    r = curl_via_https_proxy(gw, pki, tls_upstream.port, cert=devices.cert, key=devices.key)
    assert r.returncode == 0, r.stderr
    assert r.stdout == UPSTREAM_BODY
    rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed")
    assert rec["subject"] == devices.subject
    assert rec["result"] == "ok"


def test_device_without_certificate_refused_by_curl(gw_tls, pki, devices, tls_upstream):
    gw = gw_tls(client_ca=devices.ca_cert)
    r = curl_via_https_proxy(gw, pki, tls_upstream.port)
    assert r.returncode != 0
    assert tls_upstream.accepted == 0
    assert not [x for x in gw.records if x.get("msg") == "tunnel_closed"]


def s_client(port, pki, cert=None, key=None):
    """An openssl s_client handshake to the TLS listener; returns
    (handshake_ok, output). With TLS 1.3 a refused client certificate shows
    as an alert after the handshake, so a byte is exchanged to see it."""
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
           "-CAfile", str(pki.ca_cert), "-verify_return_error", "-alpn", "http/1.1",
           "-ign_eof"]
    if cert:
        cmd += ["-cert", str(cert), "-key", str(key)]
    r = subprocess.run(cmd, input=b"CONNECT localhost:1 HTTP/1.1\r\n\r\n", capture_output=True,
                       timeout=30)
    out = r.stdout + r.stderr
    return b"HTTP/1.1" in r.stdout, out


@pytest.mark.parametrize("which", ["none", "expired", "stranger"])
def test_s_client_refused_without_a_valid_device_certificate(gw_tls, pki, devices, which):
    gw = gw_tls(client_ca=devices.ca_cert)
    cert, key = {"none": (None, None), "expired": (devices.expired_cert, devices.expired_key),
                 "stranger": (devices.stranger_cert, devices.stranger_key)}[which]
    answered, out = s_client(gw.tls_port, pki, cert, key)
    assert not answered, out
    rec = gw.wait_log(lambda r: r.get("msg") == "tls_handshake_failed")
    assert rec["reason"] != "-"


def test_s_client_admitted_with_a_valid_device_certificate(gw_tls, pki, devices):
    gw = gw_tls(client_ca=devices.ca_cert, allow="localhost:1")
    answered, out = s_client(gw.tls_port, pki, devices.cert, devices.key)
    assert answered, out  # an HTTP answer (502: nothing listens on port 1)


def test_refused_source_gets_nothing(mcgw, echo):
    """A source outside `clients` is closed before any byte is read or sent."""
    gw = mcgw(allow=f"127.0.0.1:{echo.port}", clients="10.0.0.0/8")
    got = b""
    try:  # the reset may arrive before connect() even returns
        with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10) as s:
            s.sendall(mcgwtest.connect_request(f"127.0.0.1:{echo.port}"))
            got = s.recv(1024)
    except (ConnectionResetError, BrokenPipeError):
        pass
    assert got == b""
    assert echo.accepted == 0
    st = gw.status()
    assert st["tunnels"]["total"] == 0
    gw2 = mcgw(allow=f"127.0.0.1:{echo.port}", clients=["10.0.0.0/8", "127.0.0.0/8"])
    resp = mcgwtest.open_tunnel(gw2.proxy_port, f"127.0.0.1:{echo.port}")
    assert resp.status == 200


def write_config(tmp_path, pki, cert, key, extra=""):
    cfg = tmp_path / "tls.ini"
    cfg.write_text(f"[tunnel]\nlisten_tls = 127.0.0.1:0\ntls_cert = {cert}\n"
                   f"tls_key = {key}\n{extra}")
    return cfg


def test_check_reports_tls_file_problems_on_their_lines(tmp_path, pki, devices):
    cases = [
        (pki.server_cert, devices.key, "", 4, "does not match the certificate"),
        (tmp_path / "missing.crt", pki.server_key, "", 3, "cannot read"),
        (pki.server_cert, pki.server_key, f"client_ca = {tmp_path / 'nope.pem'}\n", 5,
         "cannot read"),
        (pki.server_cert, pki.server_key, "clients = 10.0.0.1/8\n", 5, "clients:"),
    ]
    for cert, key, extra, line, text in cases:
        cfg = write_config(tmp_path, pki, cert, key, extra)
        code, out = mcgwtest.run_cli("check", "-c", str(cfg))
        assert code == 1, out
        assert f"{cfg}:{line}: " in out and text in out, out
    cfg = write_config(tmp_path, pki, pki.server_cert, pki.server_key,
                       f"client_ca = {devices.ca_cert}\n")
    code, out = mcgwtest.run_cli("check", "-c", str(cfg))
    assert code == 0, out
