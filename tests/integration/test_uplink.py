"""A dead uplink is noticed: the destination sits in a network namespace
behind a veth pair (netns.Uplink); its far end is pulled down under an idle
tunnel and under a busy one. Keepalive and TCP_USER_TIMEOUT end each within
upstream_user_timeout + 5 s, the device gets a reset, and the access log
says close=uplink_dead."""

import threading
import time

import pytest

from mcgwtest import echo_roundtrip, open_tunnel, wait_until
from netns import Uplink, require_netns

pytestmark = pytest.mark.timeout(90)

USER_TIMEOUT_S = 3


@pytest.fixture
def uplink():
    require_netns()
    u = Uplink()
    yield u
    u.close()


def device_sees_reset(t, timeout):
    """The device's socket ends with a reset (ECONNRESET) within timeout."""
    t.sock.settimeout(timeout)
    try:
        while t.sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    return False


def test_link_pulled_idle_and_busy(mcgw, uplink):
    port = uplink.echo_server()
    target = f"{uplink.addr}:{port}"
    gw = mcgw(allow=target, upstream_keepalive="2s",
              upstream_user_timeout=f"{USER_TIMEOUT_S}s", splice="off")
    idle = open_tunnel(gw.proxy_port, target)
    assert idle.status == 200, idle
    echo_roundtrip(idle, b"idle tunnel")
    busy = open_tunnel(gw.proxy_port, target)
    assert busy.status == 200, busy
    echo_roundtrip(busy, b"busy tunnel")
    stop = threading.Event()

    def keep_sending():
        while not stop.is_set():
            try:
                busy.sock.sendall(b"x" * 1024)
            except OSError:
                return
            stop.wait(0.05)
    threading.Thread(target=keep_sending, daemon=True).start()
    try:
        t0 = time.monotonic()
        uplink.link_down()
        bound = USER_TIMEOUT_S + 5
        for t in (busy, idle):
            rec = gw.tunnel_closed(t.client, timeout=bound + 5)
            assert rec["close"] == "uplink_dead", rec
            assert time.monotonic() - t0 <= bound, f"ended after {time.monotonic() - t0:.1f}s"
            assert device_sees_reset(t, 5), "the device was not reset"
    finally:
        stop.set()


def test_link_pulled_under_h2_stream(mcgw, uplink):
    """HTTP/2: the stream gets RST_STREAM(CONNECT_ERROR), the connection
    stays up for the device's other streams."""
    import h2.errors
    from h2client import H2Client
    port = uplink.echo_server()
    target = f"{uplink.addr}:{port}"
    gw = mcgw(allow=target, upstream_keepalive="2s", upstream_user_timeout=f"{USER_TIMEOUT_S}s")
    client = H2Client(gw.proxy_port)
    try:
        s = client.wait_response(client.connect(target))
        assert s.status == 200, s
        client.send(s, b"ping")
        client.pump(lambda: s.received >= 4, 10, "the echo")
        t0 = time.monotonic()
        uplink.link_down()
        client.pump(lambda: s.reset_code is not None, USER_TIMEOUT_S + 10, "RST_STREAM")
        assert time.monotonic() - t0 <= USER_TIMEOUT_S + 5
        assert s.reset_code == h2.errors.ErrorCodes.CONNECT_ERROR, s.reset_code
        rec = gw.wait_log(lambda r: r.get("msg") == "tunnel_closed" and r.get("proto") == "h2")
        assert rec["close"] == "uplink_dead", rec
        assert not client.closed, "the connection itself stays up"
    finally:
        client.close()
