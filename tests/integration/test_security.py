"""Security audit: mcgw is not an open proxy into the vehicle or the MC
network, resists DNS rebinding, enforces require_tls, never logs payload, and
keeps its admin listener on loopback by default (issue 7, "Security audit
tests"; docs/security.md maps each control to the test here).

Every refusal is checked three ways: the exact status, an access-log line
with connected=- (no upstream connection was made), and an upstream listener
on the target port that saw no connection.
"""

import os
import socket
import subprocess

import pytest

from sechelp import (MCGW_BIN, Gateway, Upstream, connect_request, echo_roundtrip,
                     namespaces_usable, recv_all, wait_for)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not namespaces_usable(),
                       reason="needs root and unshare -m (private /etc/hosts for the gateway)"),
]

REBIND_NAME = "rebind.mcgw-test"


@pytest.fixture
def upstreams():
    """Echo listeners on 127.0.0.1 and ::1, on the same port when possible,
    so any connection mcgw made to either would be seen."""
    v4 = Upstream("echo", "127.0.0.1")
    try:
        v6 = Upstream("echo", "::1", port=v4.port)
    except OSError:
        v6 = Upstream("echo", "::1")
    yield v4, v6
    v4.close()
    v6.close()


@pytest.fixture
def gw_loopback_rules(tmp_path, upstreams):
    """Allow rules that match every loopback spelling by name, literal and
    prefix - and allow_private = no, which must still refuse them all."""
    v4, v6 = upstreams
    gw = Gateway(tmp_path, tunnel=[
        "allow = localhost:*",
        f"allow = {REBIND_NAME}:*",
        "allow = 127.0.0.0/8:*",
        "allow = [::1]:*",
        "allow = [::ffff:0:0/96]:*",
        "allow = b:*",
        "allow = idms.example.org:*",
        "allow_private = no",
    ], hosts=[f"127.0.0.1 {REBIND_NAME}"]).start()
    yield gw
    assert gw.stop() == 0


def refused(gw, target, expect_status, upstreams, extra=b""):
    """CONNECT target; asserts the status, that nothing was connected, and
    that no upstream listener saw a connection. Returns the access record."""
    before = [u.accepted for u in upstreams]
    s, status, _ = connect_request(gw.proxy_port, target, extra=extra)
    port = s.getsockname()[1]
    assert status == expect_status, f"CONNECT {target!r}: {status}"
    s.close()
    rec = gw.wait_access(port)
    assert rec["connected"] == "-", rec
    assert rec["status"] == str(expect_status), rec
    assert rec["result"] == ("bad_request" if expect_status == 400 else "denied"), rec
    assert [u.accepted for u in upstreams] == before, "an upstream saw a connection"
    return rec


# Numeric spellings a resolver (inet_aton) would turn into 127.0.0.1: refused
# as malformed before any rule is consulted.
@pytest.mark.parametrize("host", ["127.1", "0x7f000001", "2130706433", "017700000001",
                                  "0177.0.0.1", "127.0.0.0x1", "0x7f.1", "127.000.000.001"])
def test_odd_ipv4_spellings_are_malformed(gw_loopback_rules, upstreams, host):
    port = upstreams[0].port
    refused(gw_loopback_rules, f"{host}:{port}", 400, upstreams)


# Well-formed loopback targets that an allow rule matches by name or prefix:
# refused by allow_private = no on the address, never connected.
@pytest.mark.parametrize("host", ["[::1]", "[::ffff:127.0.0.1]", "[0:0:0:0:0:ffff:7f00:1]",
                                  "localhost", "localhost.", "LOCALHOST", "LocalHost.",
                                  "127.0.0.1", "127.0.0.2", "[::ffff:7f00:1]", REBIND_NAME])
def test_loopback_spellings_are_denied(gw_loopback_rules, upstreams, host):
    port = upstreams[0].port if not host.startswith("[") else upstreams[1].port
    refused(gw_loopback_rules, f"{host}:{port}", 403, upstreams)


def test_gateway_own_admin_port_is_denied(gw_loopback_rules, upstreams):
    """SSRF into the gateway itself: its admin listener is loopback."""
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
    b"\xc3\xaddms.example.org:443",   # non-ASCII (IDN must be sent as A-label)
])
def test_malformed_targets_get_400(gw_loopback_rules, upstreams, target):
    gw = gw_loopback_rules
    before = [u.accepted for u in upstreams]
    s, status, _ = connect_request(gw.proxy_port, target)
    port = s.getsockname()[1]
    s.close()
    assert status == 400, f"CONNECT {target!r}: {status}"
    # llhttp refuses some bytes before our code sees a target: then the log
    # line says "malformed request"; either way nothing was connected.
    rec = gw.wait_access(port)
    assert rec["connected"] == "-" and rec["result"] == "bad_request", rec
    assert [u.accepted for u in upstreams] == before


def test_unlisted_targets_get_403_without_resolution(gw_loopback_rules, upstreams):
    """A name no rule allows is refused before any lookup: the debug log has
    no resolve line for it."""
    gw = gw_loopback_rules
    for target in ["evil.example.net:443", "idms.example.org.evil.net:443",
                   "xidms.example.org:443", "192.0.2.1:443", "[2001:db8::1]:443"]:
        refused(gw, target, 403, upstreams)
    assert "evil.example.net" not in "".join(
        str(r) for r in gw.records() if r.get("msg") in ("resolve_failed", "connect_attempt_failed"))


def test_dns_rebinding_refused_unless_allow_private(tmp_path, upstreams):
    """An allowed name that resolves to a private address is refused with
    allow_private = no, and works with allow_private = yes."""
    v4, _ = upstreams
    rules = [f"allow = {REBIND_NAME}:*", "require_tls = no"]
    hosts = [f"127.0.0.1 {REBIND_NAME}"]
    (tmp_path / "no").mkdir()
    (tmp_path / "yes").mkdir()
    gw = Gateway(tmp_path / "no", tunnel=rules + ["allow_private = no"], hosts=hosts).start()
    try:
        refused(gw, f"{REBIND_NAME}:{v4.port}", 403, upstreams)
        assert any("allow_private" in r.get("reason", "") for r in gw.records("tunnel_refused"))
    finally:
        assert gw.stop() == 0
    gw = Gateway(tmp_path / "yes", tunnel=rules + ["allow_private = yes"], hosts=hosts).start()
    try:
        s, status, _ = connect_request(gw.proxy_port, f"{REBIND_NAME}:{v4.port}")
        assert status == 200
        echo_roundtrip(s, b"rebinding control")
        assert v4.accepted == 1
        s.close()
    finally:
        assert gw.stop() == 0


@pytest.fixture
def gw_tls(tmp_path, upstreams):
    gw = Gateway(tmp_path, tunnel=["allow = 127.0.0.1:*", "allow_private = yes",
                                   "require_tls = yes"]).start()
    yield gw
    assert gw.stop() == 0


def test_require_tls_refuses_pipelined_plaintext(gw_tls, upstreams):
    """Plaintext sent with the request: refused before connecting."""
    v4, _ = upstreams
    s, status, _ = connect_request(gw_tls.proxy_port, f"127.0.0.1:{v4.port}",
                                   extra=b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    port = s.getsockname()[1]
    assert status == 0  # closed, no 200
    s.close()
    rec = gw_tls.wait_access(port)
    assert rec["result"] == "refused_not_tls" and rec["connected"] == "-", rec
    assert v4.accepted == 0


def test_require_tls_refuses_plaintext_after_200(gw_tls, upstreams):
    """Plaintext after the 200: the tunnel is closed and not one byte of it
    reaches the destination."""
    v4, _ = upstreams
    s, status, _ = connect_request(gw_tls.proxy_port, f"127.0.0.1:{v4.port}")
    assert status == 200
    port = s.getsockname()[1]
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert recv_all(s) == b""
    s.close()
    rec = gw_tls.wait_access(port)
    assert rec["result"] == "refused_not_tls" and rec["close"] == "not_tls", rec
    assert rec["bytes_up"] == "0", rec
    wait_for(lambda: v4.accepted == 1, what="the upstream connection")
    assert bytes(v4.received) == b""


def test_require_tls_passes_a_tls_record(gw_tls, upstreams):
    """Control: a TLS handshake record header gets through."""
    v4, _ = upstreams
    s, status, _ = connect_request(gw_tls.proxy_port, f"127.0.0.1:{v4.port}")
    assert status == 200
    echo_roundtrip(s, b"\x16\x03\x01\x00\x04abcd")
    s.close()


MARKER = b"MCGW-PAYLOAD-MARKER-7f3a9c"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_payload_never_logged(tmp_path, upstreams, log_format):
    """A marker sent through tunnels, in both directions, in pipelined bytes,
    in refused and reset tunnels, never appears in the log (debug level)."""
    v4, _ = upstreams
    gw = Gateway(tmp_path, log_format=log_format, tunnel=[
        "allow = 127.0.0.1:*", "allow_private = yes", "require_tls = yes"]).start()
    try:
        record = b"\x16\x03\x01\x00" + bytes([len(MARKER) * 2]) + MARKER * 2
        # Relayed both ways (the upstream echoes).
        s, status, _ = connect_request(gw.proxy_port, f"127.0.0.1:{v4.port}")
        assert status == 200
        echo_roundtrip(s, record)
        s.close()
        # Pipelined with the request.
        s, status, rest = connect_request(gw.proxy_port, f"127.0.0.1:{v4.port}", extra=record)
        assert status == 200
        got = rest
        s.settimeout(5)
        while len(got) < len(record):
            got += s.recv(65536)
        assert got == record
        s.close()
        # Refused: not TLS, denied target, malformed request, 405.
        for target, extra in [(f"127.0.0.1:{v4.port}", MARKER),
                              ("denied.example:443", record),
                              ("bad target:443", record)]:
            s, _, _ = connect_request(gw.proxy_port, target, extra=extra)
            s.close()
        with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=5) as c:
            c.sendall(b"GET /" + MARKER + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            recv_all(c)
        wait_for(lambda: len(gw.access()) >= 6, what="six access-log lines")
    finally:
        assert gw.stop() == 0
    log = gw.log_bytes()
    assert b"tunnel_closed" in log
    # A GET's path is its request target, not payload; it may be logged only
    # as part of a refusal reason - and must not be: mcgw logs no raw URL.
    assert MARKER not in log, [l for l in log.splitlines() if MARKER in l]
    assert MARKER.lower() not in log.lower()


def test_admin_listener_loopback_by_default(tmp_path):
    """With no [admin] section, the admin listener binds 127.0.0.1:9090. Run
    in a private network namespace so port 9090 is surely free and the
    machine's ports are not touched; the listening sockets are read from
    /proc/PID/net/tcp{,6} of that namespace."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n (network namespace) not available")
    conf = tmp_path / "mcgw.ini"
    conf.write_text("[tunnel]\nlisten = 127.0.0.1:0\n")
    log = open(tmp_path / "log", "wb")
    proc = subprocess.Popen(["unshare", "-n", "--", "sh", "-c",
                             'ip link set lo up 2>/dev/null; exec "$@"', "sh",
                             MCGW_BIN, "run", "-c", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: b"kind=admin" in (tmp_path / "log").read_bytes(),
                 what="the admin listener")

        def listeners():
            out = []
            for name in ("tcp", "tcp6"):
                try:
                    lines = open(f"/proc/{proc.pid}/net/{name}").read().splitlines()[1:]
                except FileNotFoundError:
                    continue
                for line in lines:
                    f = line.split()
                    if f[3] == "0A":  # LISTEN
                        out.append((name, f[1]))
            return out

        found = wait_for(lambda: [l for l in listeners() if l[1].endswith(":2382")],
                         what="a listener on port 9090")
        assert found == [("tcp", "0100007F:2382")], found  # 127.0.0.1:9090 only
        text = (tmp_path / "log").read_text()
        assert "kind=admin addr=127.0.0.1:9090" in text
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def test_shipped_config_admin_is_loopback():
    """configs/mcgw.ini, what `make run` uses, keeps the admin on loopback."""
    src = os.environ.get("MCGW_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
    text = open(os.path.join(src, "configs", "mcgw.ini")).read()
    section = None
    listens = []
    for line in text.splitlines():
        line = line.split(";")[0].strip()
        if line.startswith("["):
            section = line
        elif section == "[admin]" and line.startswith("listen"):
            listens.append(line.split("=", 1)[1].strip())
    assert listens and all(l.startswith("127.0.0.1:") or l.startswith("[::1]:")
                           for l in listens), listens


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
    with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10) as s:
        s.sendall(line + b"\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        data = recv_all(s)
        port = s.getsockname()[1]
    assert data.startswith(b"HTTP/1.1 405 "), data[:80]
    assert b"\r\nAllow: CONNECT\r\n" in data
    assert b'"version"' not in data  # not the admin's /status
    rec = gw.wait_access(port)
    assert rec["connected"] == "-" and rec["result"] == "bad_request", rec
    assert [u.accepted for u in upstreams] == before
