"""Egress per destination: two uplinks (network namespaces behind veth
pairs) both serve the same MC server address; an allow rule's egress=NAME
decides which one a tunnel leaves by (SO_BINDTODEVICE), as the echo servers
in the namespaces report. Also: the DSCP of an egress on the wire (tshark),
an egress whose interface is down (502 egress_down, the other unaffected),
an egress whose interface does not exist yet (the gateway starts with a
warning; its tunnels get 502 egress_down until the interface appears, then
work without a restart), and mcgw check's errors."""

import contextlib
import random
import signal
import socket
import shutil
import subprocess
import threading

import pytest

import mcgwtest
from mcgwtest import echo_roundtrip, open_tunnel, wait_until
from netns import Uplink, require_netns
from test_udp import closed_record, connect_udp, datagram, h2c, udp_target

pytestmark = pytest.mark.timeout(90)

PORT_A, PORT_B = 7443, 7444  # inside the namespaces only: nothing else listens there


@contextlib.contextmanager
def uplinks(second_plugged=True):
    """Two uplinks, each serving one MC server address (an echo server on
    PORT_A and PORT_B), uplink 1 first by route metric; the second one's
    interface absent until plug() when not second_plugged. Torn down
    whatever happens."""
    require_netns()
    ups = []
    try:
        ups.append(Uplink())
        ups.append(Uplink(plugged=second_plugged))
        server = "198.18.%d.%d" % (random.randrange(256), random.randrange(1, 255))
        for metric, u in enumerate(ups, 1):
            u.serve_address(server, 100 * metric)
            u.echo_server(server, PORT_A)
            u.echo_server(server, PORT_B)
        yield server, ups
    finally:
        for u in ups:
            u.close()


@pytest.fixture
def two_uplinks():
    with uplinks() as found:
        yield found


def gateway(mcgw_factory, server, ups, dscp=None):
    egress = {}
    for i, u in enumerate(ups, 1):
        egress[f"egress up{i}"] = {"interface": u.host_if, "dscp": dscp if i == 1 else None}
    return mcgw_factory(egress, allow=[f"{server}:{PORT_A} egress=up1",
                                       f"{server}:{PORT_B} egress=up2"])


@pytest.fixture
def mcgw_with(mcgw):
    """The conftest mcgw fixture, with other sections (egress, dns)."""
    return lambda extra, **tunnel: mcgw(extra=extra, **tunnel)


def through(gw, target):
    t = open_tunnel(gw.proxy_port, target)
    assert t.status == 200, t
    echo_roundtrip(t, b"which way?")
    client = t.client
    t.close()
    return gw.tunnel_closed(client)


def through_uplink(gw, target, up, source):
    """A tunnel to target that left from source: its local= address is the
    one up's echo server saw, and the only one it saw."""
    b = through(gw, target)
    assert b["result"] == "ok" and b["local"].startswith(source + ":"), (b, source)
    wait_until(lambda: up.seen, 10, "the uplink's echo server reached")
    assert up.seen == [b["local"]], (up.seen, b)
    return b


def test_each_rule_leaves_by_its_egress(mcgw_with, two_uplinks):
    server, (up1, up2) = two_uplinks
    gw = gateway(mcgw_with, server, (up1, up2))
    a = through(gw, f"{server}:{PORT_A}")
    b = through(gw, f"{server}:{PORT_B}")
    assert a["egress"] == "up1" and b["egress"] == "up2", (a, b)
    wait_until(lambda: up1.seen and up2.seen, 10, "both echo servers reached")
    assert up1.seen == [a["local"]], (up1.seen, a)  # the peer uplink 1 saw is local=
    assert up2.seen == [b["local"]], (up2.seen, b)
    assert a["local"].startswith(up1.gw_addr + ":") and b["local"].startswith(up2.gw_addr + ":")


def test_egress_down_fails_fast_and_alone(mcgw_with, two_uplinks):
    server, (up1, up2) = two_uplinks
    gw = gateway(mcgw_with, server, (up1, up2))
    subprocess.run(["ip", "link", "set", up2.host_if, "down"], check=True)
    t = open_tunnel(gw.proxy_port, f"{server}:{PORT_B}")
    assert t.status == 502, t
    rec = gw.tunnel_closed(t.client)
    assert rec["close"] == "egress_down" and rec["egress"] == "up2", rec
    t.close()
    assert through(gw, f"{server}:{PORT_A}")["egress"] == "up1"  # the other egress is fine


def line_of(path, text):
    """The number of the first line of the file that is text."""
    return path.read_text().splitlines().index(text) + 1


def test_missing_interface_starts_and_recovers(mcgw_with):
    """An LTE modem's interface that appears after boot: mcgw starts (and
    reloads) with a warning naming FILE:LINE and the interface; the egress's
    tunnels fail fast with 502 egress_down meanwhile, the other egress works;
    once the interface exists, a tunnel through it works, no restart."""
    with uplinks(second_plugged=False) as (server, (up1, up2)):
        gw = gateway(mcgw_with, server, [up1, up2])
        conf = gw.config_path
        warning = gw.wait_log(lambda r: r.get("msg") == "config_warning", what="config_warning")
        line = line_of(conf, f"interface = {up2.host_if}")
        assert warning["level"] == "warn", warning
        assert warning["warning"].startswith(
            f"{conf}:{line}: warning: interface: no network interface '{up2.host_if}' "
            "on this host (yet)"), warning
        t = open_tunnel(gw.proxy_port, f"{server}:{PORT_B}")
        assert t.status == 502, t
        rec = gw.tunnel_closed(t.client)
        assert rec["close"] == "egress_down" and rec["egress"] == "up2", rec
        t.close()
        assert through(gw, f"{server}:{PORT_A}")["egress"] == "up1"  # the other egress is fine
        # A reload keeps it: a warning again, not a rejected config.
        n = len(gw.records)
        gw.send_signal(signal.SIGHUP)
        gw.wait_log(lambda r: r.get("msg") == "reloaded", what="reloaded", since=n)
        again = gw.wait_log(lambda r: r.get("msg") == "config_warning", since=n)
        assert again["warning"] == warning["warning"], again
        up2.plug()
        b = through_uplink(gw, f"{server}:{PORT_B}", up2, up2.gw_addr)
        assert b["egress"] == "up2", b


def test_missing_source_address_starts_and_recovers(mcgw_with):
    """An egress whose source address is not on the host yet (the modem's
    address comes after boot): a warning, 502 egress_down meanwhile, then
    the address is there and its tunnels leave from it, no restart."""
    with uplinks() as (server, (up1, up2)):
        source = up2.gw_addr
        subprocess.run(["ip", "addr", "del", f"{source}/30", "dev", up2.host_if], check=True)
        gw = mcgw_with({"egress up2": {"interface": up2.host_if, "source": source}},
                       allow=[f"{server}:{PORT_B} egress=up2"])
        conf = gw.config_path
        warning = gw.wait_log(lambda r: r.get("msg") == "config_warning", what="config_warning")
        assert warning["warning"] == (
            f"{conf}:{line_of(conf, f'source = {source}')}: warning: source: {source} is not an "
            "address of this host (yet): connections through [egress up2] fail until it is "
            "(tunnels: 502 egress_down)"), warning
        t = open_tunnel(gw.proxy_port, f"{server}:{PORT_B}")
        assert t.status == 502, t
        rec = gw.tunnel_closed(t.client)
        assert rec["close"] == "egress_down" and rec["egress"] == "up2", rec
        t.close()
        subprocess.run(["ip", "addr", "add", f"{source}/30", "dev", up2.host_if], check=True)
        through_uplink(gw, f"{server}:{PORT_B}", up2, source)


def test_allow_udp_rule_egress(mcgw_with):
    """An allow_udp rule's egress=NAME: the CONNECT-UDP tunnel's socket gets
    the egress's options before its connect (the target receives the DSCP in
    the datagram's TOS byte) and the access log names it, with local=."""
    target = udp_target()
    target.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_RECVTOS", 13), 1)
    port = target.getsockname()[1]
    gw = mcgw_with({"egress media": {"dscp": 46, "mark": 7}},
                   allow_udp=f"127.0.0.1:{port} egress=media")
    client = h2c(gw)
    s = connect_udp(client, "127.0.0.1", port)
    assert s.status == 200, s
    client.send(s, datagram(b"which way?"))
    data, anc, _, peer = target.recvmsg(2048, socket.CMSG_SPACE(4))
    assert data == b"which way?"
    tos = [c[2][0] for c in anc if c[0] == socket.IPPROTO_IP and c[1] == socket.IP_TOS]
    assert tos and tos[0] >> 2 == 46, anc
    client.end(s)
    rec = closed_record(gw, f"127.0.0.1:{port}")
    assert rec["egress"] == "media" and rec["local"] == "%s:%d" % peer, rec
    client.close()


def test_dscp_on_the_wire(mcgw_with, two_uplinks, tmp_path):
    tshark = shutil.which("tshark")
    if not tshark:
        pytest.skip("tshark not installed (scripts/deps.sh test installs it)")
    server, (up1, up2) = two_uplinks
    gw = gateway(mcgw_with, server, (up1, up2), dscp=46)
    cap = subprocess.Popen([tshark, "-i", up1.host_if, "-f", f"tcp dst port {PORT_A}", "-l",
                            "-c", "5", "-a", "duration:30", "-T", "fields",
                            "-e", "ip.dsfield.dscp"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = threading.Event()

    def watch():
        for line in cap.stderr:
            if "Capturing on" in line:
                ready.set()
    threading.Thread(target=watch, daemon=True).start()
    try:
        assert ready.wait(30), "tshark did not start capturing"
        # "Capturing on" may come before the filter is attached: tunnels
        # until the capture has its packets (or its 30 s are up).
        wait_until(lambda: through(gw, f"{server}:{PORT_A}") and cap.poll() is not None, 40,
                   "tshark's packets", interval=0.5)
        out, _ = cap.communicate(timeout=30)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    values = [v.strip() for v in out.split()]
    assert len(values) >= 3 and all(v == "46" for v in values), (values, out)


def test_check_errors(tmp_path):
    require_netns()
    conf = tmp_path / "mcgw.ini"
    conf.write_text("[tunnel]\nlisten = 127.0.0.1:0\n"
                    "allow = a.example:443 egress=nope\n"         # line 3
                    "allow_when_authorized = b.example:443 egress=mc\n"
                    "egress = also-nope\n"                          # line 5
                    "[egress mc]\n"
                    "interface = mcgw-no-such0\n"                   # line 7
                    "source = 192.0.2.77\n"                         # line 8
                    "dscp = 46\n")
    p = subprocess.run([str(mcgwtest.BIN), "check", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0
    err = p.stderr + p.stdout
    assert f"{conf}:3: unknown egress 'nope'" in err, err
    assert f"{conf}:5: unknown egress 'also-nope'" in err, err
    assert f"{conf}:7: warning: interface: no network interface 'mcgw-no-such0'" in err, err
    assert f"{conf}:8: warning: source: 192.0.2.77 is not an address of this host (yet)" in err, err
    assert "egress=mc" not in err, err  # the rule naming a defined egress is fine


def test_check_warns_of_missing_interface(tmp_path):
    """A missing interface alone passes `mcgw check` (ExecStartPre) with a
    warning, so a vehicle whose modem is late still boots; a name no
    interface can have is an error."""
    require_netns()
    conf = tmp_path / "mcgw.ini"
    conf.write_text("[tunnel]\nlisten = 127.0.0.1:0\nallow = a.example:443 egress=lte\n"
                    "[egress lte]\ninterface = mcgw-no-such0\n")  # line 5
    p = subprocess.run([str(mcgwtest.BIN), "check", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert f"{conf}: ok (with warnings)" in p.stdout, p.stdout
    assert (f"{conf}:5: warning: interface: no network interface 'mcgw-no-such0' on this host "
            "(yet): connections through [egress lte] fail until it appears "
            "(tunnels: 502 egress_down)") in p.stderr, p.stderr
    conf.write_text("[tunnel]\nlisten = 127.0.0.1:0\n[egress lte]\ninterface = wwan0/x\n")
    p = subprocess.run([str(mcgwtest.BIN), "check", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode != 0
    assert f"{conf}:4: interface: expected a network interface name of 1 to 15 characters" \
        in p.stderr + p.stdout, (p.stdout, p.stderr)
