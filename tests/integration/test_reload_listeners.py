"""SIGHUP and listeners: listeners a reload adds are opened and those it
drops are closed, without touching tunnels already open; a new TLS
certificate applies to new connections; a listener that cannot bind
rejects the whole reload."""

import signal
import socket
import ssl

import pytest

import mcgwtest
from mcgwtest import Mcgw, render_config


def rewrite(gw, tunnel):
    """Replaces the daemon's [tunnel] section (other sections as started)."""
    text = gw.config_path.read_text()
    head = text[: text.index("[tunnel]")]
    gw.config_path.write_text(head + render_config({"tunnel": {**mcgwtest.DEFAULT_TUNNEL, **tunnel}}))


def reload(gw, expect="reloaded"):
    n = len([r for r in gw.records if r.get("msg") in ("reloaded", "reload_failed")])
    gw.send_signal(signal.SIGHUP)
    mcgwtest.wait_until(
        lambda: len([r for r in gw.records if r.get("msg") in ("reloaded", "reload_failed")]) > n,
        10, "the reload outcome")
    last = [r for r in gw.records if r.get("msg") in ("reloaded", "reload_failed")][-1]
    assert last["msg"] == expect, last
    return last


def listening(gw, kind, host):
    return [mcgwtest._addr_port(r["addr"]) for r in gw.records
            if r.get("msg") == "listening" and r.get("kind") == kind and r["addr"].startswith(host)]


def peer_serial(port, pki):
    ctx = pki.client_context()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            der = s.getpeercert(binary_form=True)
    return der


@pytest.fixture
def daemon(mcgw_bin, tmp_path):
    daemons = []

    def start(**tunnel):
        gw = Mcgw(tmp_path / f"gw{len(daemons)}", tunnel=tunnel)
        daemons.append(gw)
        return gw.start()

    yield start
    for gw in daemons:
        gw.stop()
    for gw in daemons:
        gw.assert_no_sanitizer_report()


def test_listeners_added_and_removed_tunnels_kept(daemon, echo, pki):
    allow = f"127.0.0.1:{echo.port}"
    gw = daemon(allow=allow)
    old_port = gw.proxy_port
    held = mcgwtest.open_tunnel(old_port, allow)
    assert held.status == 200
    mcgwtest.echo_roundtrip(held, b"before")

    rewrite(gw, {"allow": allow, "listen": "[::1]:0", "listen_tls": "127.0.0.1:0",
                 "tls_cert": pki.server_cert, "tls_key": pki.server_key})
    reload(gw)
    closed = gw.wait_log(lambda r: r.get("msg") == "listener_closed")
    assert closed["addr"] == f"127.0.0.1:{old_port}" and closed["connections_remaining"] == 1
    assert mcgwtest.connection_refused(old_port)
    mcgwtest.echo_roundtrip(held, b"after the reload")  # the open tunnel is untouched

    v6_port = listening(gw, "proxy", "[::1]")[0]
    with socket.create_connection(("::1", v6_port), timeout=10) as s:
        s.sendall(mcgwtest.connect_request(allow))
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    tls_port = listening(gw, "proxy_tls", "127.0.0.1")[0]
    assert peer_serial(tls_port, pki)
    st = gw.status()
    shown = {(x["addr"], x["tls"], x["open"]) for x in st["listeners"]}
    assert (f"127.0.0.1:{old_port}", False, False) in shown  # still has a tunnel
    assert (f"[::1]:{v6_port}", False, True) in shown
    assert (f"127.0.0.1:{tls_port}", True, True) in shown
    held.close()


def test_new_certificate_for_new_connections(daemon, pki, tmp_path):
    gw = daemon(listen_tls="127.0.0.1:0", tls_cert=pki.server_cert, tls_key=pki.server_key,
                allow="127.0.0.1:1")
    port = listening(gw, "proxy_tls", "127.0.0.1")[0]
    before = peer_serial(port, pki)
    (tmp_path / "second").mkdir()
    second = mcgwtest.make_pki(tmp_path / "second")  # another CA and certificate
    rewrite(gw, {"listen_tls": "127.0.0.1:0", "tls_cert": second.server_cert,
                 "tls_key": second.server_key, "allow": "127.0.0.1:1"})
    reload(gw)
    assert listening(gw, "proxy_tls", "127.0.0.1") == [port]  # same listener, not re-bound
    after = peer_serial(port, second)
    assert after != before
    with pytest.raises(ssl.SSLCertVerificationError):
        peer_serial(port, pki)  # the old CA no longer matches


def test_listener_that_cannot_bind_rejects_the_reload(daemon, echo):
    allow = f"127.0.0.1:{echo.port}"
    gw = daemon(allow=allow)
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        rewrite(gw, {"allow": [allow, "127.0.0.1:9"], "listen": ["127.0.0.1:0", f"127.0.0.1:{port}"]})
        failed = reload(gw, expect="reload_failed")
        assert "address already in use" in failed["reason"]
        # Nothing changed: the old listener serves, the new rule is not in force.
        resp = mcgwtest.open_tunnel(gw.proxy_port, "127.0.0.1:9")
        assert resp.status == 403
        resp.close()
        assert mcgwtest.open_tunnel(gw.proxy_port, allow).status == 200
    finally:
        taken.close()
