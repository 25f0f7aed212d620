"""Security audit: mcgw is not an open proxy into the vehicle or the MC
network, resists DNS rebinding, enforces require_tls, never logs payload, and
keeps its admin listener on loopback by default (issue 7, "Security audit
tests"; docs/security.md maps each control to the test here).

Every refusal is checked three ways: the exact status, an access-log record
with connected "-" (no upstream connection was made), and upstream listeners
on the target port that saw no connection.
"""

import subprocess

import pytest

import mcgwtest
from mcgwtest import (RESULT_FOR_STATUS, BIN, ProxyClosed, Upstream, echo_handler,
                      echo_roundtrip, open_tunnel, raw_exchange, wait_until)
from sechelp import gateway_factory, namespaces_usable, stop_all

pytestmark = pytest.mark.skipif(
    not namespaces_usable(), reason="needs root and unshare -m (a private /etc/hosts per daemon)")

REBIND_NAME = "rebind.mcgw-test"


@pytest.fixture
def gateway(tmp_path):
    start, daemons = gateway_factory(tmp_path)
    yield start
    stop_all(daemons)


@pytest.fixture
def upstreams():
    """Echo listeners on 127.0.0.1 and ::1: any connection mcgw made to a
    loopback target would be seen by one of them."""
    v4 = Upstream(echo_handler, host="127.0.0.1")
    v6 = Upstream(echo_handler, host="::1")
    yield v4, v6
    v4.close()
    v6.close()


@pytest.fixture
def gw_loopback_rules(gateway):
    """Allow rules that match every loopback spelling by name, literal and
    prefix - and allow_private = no, which must still refuse them all."""
    return gateway(tunnel={
        "allow": ["localhost:*", f"{REBIND_NAME}:*", "127.0.0.0/8:*", "[::1]:*",
                  "[::ffff:0:0/96]:*", "b:*", "idms.example.org:*"],
        "allow_private": "no",
        "require_tls": "yes",
    }, hosts=[f"127.0.0.1 {REBIND_NAME}"])


def refused(gw, target, status, upstreams, payload=b""):
    """CONNECT target: asserts the status, the access record (connected "-")
    and that no upstream saw a connection. Returns the record."""
    before = [u.accepted for u in upstreams]
    if isinstance(target, str):
        target = target.encode()
    resp = open_tunnel(gw.proxy_port, request=b"CONNECT " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                       payload=payload)
    client = resp.client
    assert resp.status == status, f"CONNECT {target!r}: {resp.status} {resp.reason}"
    mcgwtest.assert_error_response(resp, status)
    rec = gw.tunnel_closed(client)
    assert rec["connected"] == "-", rec
    assert rec["status"] == status and rec["result"] == RESULT_FOR_STATUS[status], rec
    assert [u.accepted for u in upstreams] == before, "an upstream saw a connection"
    return rec


# Numeric spellings a resolver (inet_aton) would turn into 127.0.0.1: refused
# as malformed before any rule is consulted.
@pytest.mark.parametrize("host", ["127.1", "0x7f000001", "2130706433", "017700000001",
                                  "0177.0.0.1", "127.0.0.0x1", "0x7f.1", "127.000.000.001"])
def test_odd_ipv4_spellings_are_malformed(gw_loopback_rules, upstreams, host):
    refused(gw_loopback_rules, f"{host}:{upstreams[0].port}", 400, upstreams)


# Well-formed loopback targets that an allow rule matches by name or prefix:
# refused by allow_private = no on the address, never connected.
@pytest.mark.parametrize("host", ["[::1]", "[::ffff:127.0.0.1]", "[0:0:0:0:0:ffff:7f00:1]",
                                  "[::ffff:7f00:1]", "localhost", "localhost.", "LOCALHOST",
                                  "LocalHost.", "127.0.0.1", "127.0.0.2", REBIND_NAME])
def test_loopback_spellings_are_denied(gw_loopback_rules, upstreams, host):
    port = upstreams[1].port if host.startswith("[::1") else upstreams[0].port
    refused(gw_loopback_rules, f"{host}:{port}", 403, upstreams)


def test_gateway_own_admin_port_is_denied(gw_loopback_rules, upstreams):
    """SSRF into the gateway itself: its admin listener is on loopback."""
    gw = gw_loopback_rules
    refused(gw, f"127.0.0.1:{gw.admin_port}", 403, upstreams)
    refused(gw, f"localhost:{gw.admin_port}", 403, upstreams)


# Not strict host:port: 400 whatever the rules say (b:* and
# idms.example.org:* are allowed, so a lenient parser would let these by).
@pytest.mark.parametrize("target", [
    b"a@b:443",                       # userinfo
    b"user:pw@idms.example.org:443",
    b"idms%2eexample.org:443",        # percent-encoding
    b"idms.example.org%3a443",
    b"%69dms.example.org:443",
    b"idms.example.org:65536",        # port out of range
    b"idms.example.org:4430000",      # overlong port
    b"idms.example.org:000443",
    b"idms.example.org:99999999999999999999",
    b"idms.example.org:0",            # port 0
    b"idms.example.org",              # missing port
    b"idms.example.org:",
    b"[::1]",
    b":443",
    b"idms.example.org:+443",
    b"idms.example.org:44 3",         # whitespace
    b"idms.example.org\t:443",
    b"idms.example.org:443\x00",      # control characters
    b"idms.\x01example.org:443",
    b"idms.example.org\x7f:443",
    b"idms.example.org\r:443",
    b"[fe80::1%25lo]:443",            # IPv6 zone id
    b"[::1%lo]:443",
    b"::1:443",                       # IPv6 without brackets
    b"idms.example.org:443/",         # path, query, fragment
    b"idms.example.org:443?x",
    b"idms.example.org:443#x",
    b"http://idms.example.org:443",   # absolute URI
    b"idms..example.org:443",
    b"*.example.org:443",
    b"\xc3\xaddms.example.org:443",   # non-ASCII (an IDN must come as its A-label)
])
def test_malformed_targets_get_400(gw_loopback_rules, upstreams, target):
    refused(gw_loopback_rules, target, 400, upstreams)


def test_unlisted_targets_get_403_without_resolution(gw_loopback_rules, upstreams):
    """A name no rule allows is refused before any lookup."""
    gw = gw_loopback_rules
    for target in ["evil.example.net:443", "idms.example.org.evil.net:443",
                   "xidms.example.org:443", "192.0.2.1:443", "[2001:db8::1]:443"]:
        refused(gw, target, 403, upstreams)
    looked_up = [r.get("target") for r in gw.find("resolve_failed")]
    assert not any("evil" in (t or "") for t in looked_up), looked_up


def test_dns_rebinding_refused_unless_allow_private(gateway, upstreams):
    """An allowed name that resolves to a private address is refused with
    allow_private = no, and works with allow_private = yes (the control)."""
    v4, _ = upstreams
    keys = {"allow": f"{REBIND_NAME}:*", "require_tls": "no"}
    hosts = [f"127.0.0.1 {REBIND_NAME}"]
    gw = gateway(tunnel={**keys, "allow_private": "no"}, hosts=hosts)
    refused(gw, f"{REBIND_NAME}:{v4.port}", 403, upstreams)
    assert any("allow_private" in r.get("reason", "") for r in gw.find("tunnel_refused"))

    gw = gateway(tunnel={**keys, "allow_private": "yes"}, hosts=hosts)
    resp = open_tunnel(gw.proxy_port, f"{REBIND_NAME}:{v4.port}")
    assert resp.status == 200
    echo_roundtrip(resp, b"rebinding control")
    resp.close()
    assert v4.accepted == 1


@pytest.fixture
def gw_tls(gateway):
    return gateway(tunnel={"allow": "127.0.0.1:*", "allow_private": "yes",
                           "require_tls": "yes"})


def test_require_tls_refuses_pipelined_plaintext(gw_tls, upstreams):
    """Plaintext sent with the request: refused before connecting."""
    v4, _ = upstreams
    with pytest.raises(ProxyClosed):
        open_tunnel(gw_tls.proxy_port, f"127.0.0.1:{v4.port}",
                    payload=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rec = gw_tls.wait_log(lambda r: r.get("msg") == "tunnel_closed")
    assert rec["result"] == "refused_not_tls" and rec["connected"] == "-", rec
    assert v4.accepted == 0


def test_require_tls_refuses_plaintext_after_200(gw_tls, upstreams):
    """Plaintext after the 200: the tunnel is closed and not one byte of it
    reaches the destination."""
    v4, _ = upstreams
    resp = open_tunnel(gw_tls.proxy_port, f"127.0.0.1:{v4.port}")
    assert resp.status == 200
    resp.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert resp.read_to_eof() == b""
    client = resp.client
    resp.close()
    rec = gw_tls.tunnel_closed(client)
    assert rec["result"] == "refused_not_tls" and rec["close"] == "not_tls", rec
    assert rec["bytes_up"] == 0, rec
    assert v4.result() == b""  # the upstream received nothing


def test_require_tls_passes_a_tls_record(gw_tls, upstreams):
    """Control: a TLS handshake record header gets through."""
    v4, _ = upstreams
    resp = open_tunnel(gw_tls.proxy_port, f"127.0.0.1:{v4.port}")
    assert resp.status == 200
    echo_roundtrip(resp, b"\x16\x03\x01\x00\x04abcd")
    resp.close()


MARKER = b"MCGW-PAYLOAD-MARKER-7f3a9c"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_payload_never_logged(gateway, upstreams, log_format):
    """A marker sent through tunnels, both ways, pipelined, in refused and
    malformed requests, never appears in the log (debug level)."""
    v4, _ = upstreams
    gw = gateway(gateway={"log_format": log_format},
                 tunnel={"allow": "127.0.0.1:*", "allow_private": "yes", "require_tls": "yes"})
    record = b"\x16\x03\x01\x00" + bytes([len(MARKER) * 2]) + MARKER * 2
    resp = open_tunnel(gw.proxy_port, f"127.0.0.1:{v4.port}")  # relayed, echoed back
    assert resp.status == 200
    echo_roundtrip(resp, record)
    resp.close()
    resp = open_tunnel(gw.proxy_port, f"127.0.0.1:{v4.port}", payload=record)  # pipelined
    assert resp.status == 200
    assert mcgwtest.recv_exactly(resp, len(record)) == record
    resp.close()
    for target, payload in [(f"127.0.0.1:{v4.port}", MARKER),   # not TLS
                            ("denied.example:443", record),      # 403
                            ("bad target:443", record)]:         # 400
        raw_exchange(gw.proxy_port, mcgwtest.connect_request(target) + payload)
    raw_exchange(gw.proxy_port, b"GET /" + MARKER + b" HTTP/1.1\r\nHost: x\r\n\r\n")  # 405
    wait_until(lambda: len(gw.find("tunnel_closed")) >= 6, what="six access records")
    log = gw.log_bytes()
    assert MARKER not in log, [line for line in log.splitlines() if MARKER in line]
    assert MARKER.lower() not in log.lower()


@pytest.mark.parametrize("request_line", [
    "GET http://127.0.0.1:{admin}/status HTTP/1.1",      # forward-proxy SSRF
    "GET http://localhost:{admin}/healthz HTTP/1.1",
    "POST http://127.0.0.1:{up}/ HTTP/1.1",
    "GET / HTTP/1.1",
    "OPTIONS * HTTP/1.1",
])
def test_not_a_forward_proxy(gw_loopback_rules, upstreams, request_line):
    """Only CONNECT: absolute-URI requests (plain forward proxying, the
    classic SSRF route) get 405 with Allow: CONNECT and reach nothing."""
    gw = gw_loopback_rules
    line = request_line.format(admin=gw.admin_port, up=upstreams[0].port).encode()
    before = [u.accepted for u in upstreams]
    client, data = raw_exchange(gw.proxy_port, line + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 405 "), data[:80]
    assert b"\r\nAllow: CONNECT\r\n" in data
    assert b'"version"' not in data  # not the admin's /status
    rec = gw.tunnel_closed(client)
    assert rec["connected"] == "-" and rec["result"] == "bad_request", rec
    assert [u.accepted for u in upstreams] == before


def test_admin_listener_loopback_by_default(tmp_path):
    """With no [admin] section, the admin listener binds 127.0.0.1:9090. Run
    in a private network namespace, so that port 9090 is surely free and the
    machine's ports are untouched; the listening sockets are read from
    /proc/PID/net/tcp{,6} of that namespace."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n (a network namespace) is not available")
    conf = tmp_path / "mcgw.ini"
    conf.write_text("[tunnel]\nlisten = 127.0.0.1:0\n")
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen(["unshare", "-n", "--", "sh", "-c",
                             'ip link set lo up 2>/dev/null; exec "$@"', "sh",
                             str(BIN), "run", "-c", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: b"kind=admin" in (tmp_path / "log").read_bytes(),
                   what="the admin listener")

        def listeners_on_9090():
            out = []
            for name in ("tcp", "tcp6"):
                try:
                    lines = open(f"/proc/{proc.pid}/net/{name}").read().splitlines()[1:]
                except FileNotFoundError:
                    continue
                for line in lines:
                    f = line.split()
                    if f[3] == "0A" and f[1].endswith(":2382"):  # LISTEN, port 9090
                        out.append((name, f[1]))
            return out

        found = wait_until(listeners_on_9090, what="a listener on port 9090")
        assert found == [("tcp", "0100007F:2382")], found  # 127.0.0.1 only
        assert "kind=admin addr=127.0.0.1:9090" in (tmp_path / "log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def test_shipped_config_admin_is_loopback():
    """configs/mcgw.ini, what `make run` uses, keeps the admin on loopback."""
    text = (mcgwtest.SRC / "configs" / "mcgw.ini").read_text()
    section, listens = None, []
    for line in text.splitlines():
        line = line.split(";")[0].strip()
        if line.startswith("["):
            section = line
        elif section == "[admin]" and line.startswith("listen"):
            listens.append(line.split("=", 1)[1].strip())
    assert listens and all(v.startswith(("127.0.0.1:", "[::1]:")) for v in listens), listens
