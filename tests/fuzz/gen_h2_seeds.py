#!/usr/bin/python3
"""Writes the seed corpus of fuzz_h2_session (tests/fuzz/corpus/fuzz_h2_session/)
with python3-h2 (a real HTTP/2 client; HPACK-encoded headers): each seed is
the h2c client preface, SETTINGS, then one or more HEADERS frames for
CONNECT requests, plus DATA, RST_STREAM, PING, WINDOW_UPDATE and GOAWAY
variants. Every target is one the harness's policy refuses (loopback with
allow_private = no, or not in the allowlist). Deterministic output:

    /usr/bin/python3 tests/fuzz/gen_h2_seeds.py
"""
import os

import h2.config
import h2.connection
import h2.settings

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_h2_session")


def conn():
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False))
    c.initiate_connection()
    return c


def connect(c, sid, authority, extra=(), end=False):
    headers = [(":method", "CONNECT"), (":authority", authority)] + list(extra)
    c.send_headers(sid, headers, end_stream=end)


def seed(name, c):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(c.data_to_send())


def main():
    os.makedirs(OUT, exist_ok=True)
    targets = {
        "localhost": "localhost:443",
        "loopback": "127.0.0.1:443",
        "loopback6": "[::1]:8443",
        "mapped": "[::ffff:127.0.0.1]:443",
        "denied": "example.com:443",
        "noport": "localhost",
        "badport": "127.0.0.1:0",
    }
    for name, target in targets.items():
        c = conn()
        connect(c, 1, target)
        seed("connect-" + name, c)

    c = conn()  # several streams, one ending early, a ping, flow control
    connect(c, 1, "localhost:443")
    connect(c, 3, "127.0.0.2:80")
    c.send_data(1, b"\x16\x03\x01\x00\x05hello")
    c.reset_stream(3)
    c.ping(b"12345678")
    c.increment_flow_control_window(65535)
    seed("multi-streams", c)

    c = conn()  # a CONNECT with data, then end of stream, then GOAWAY
    connect(c, 1, "127.0.0.1:443")
    c.send_data(1, b"\x16\x03\x01\x00\x01x", end_stream=True)
    c.close_connection()
    seed("data-goaway", c)

    c = conn()  # a CONNECT that ends the stream in HEADERS (malformed for CONNECT)
    connect(c, 1, "localhost:443", end=True)
    seed("connect-endstream", c)

    c = conn()  # extended CONNECT (RFC 8441 shape) and a GET: not ours
    connect(c, 1, "localhost:443", extra=[(":protocol", "websocket"), (":scheme", "https"),
                                           (":path", "/")])
    seed("connect-protocol", c)
    c = conn()
    c.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                       (":path", "/")], end_stream=True)
    seed("get", c)

    c = conn()  # a long header list: HPACK table churn, CONTINUATION
    c.max_outbound_frame_size = 16384
    connect(c, 1, "localhost:443", extra=[("x-pad-%d" % i, "v" * 200) for i in range(100)])
    seed("connect-big-headers", c)

    c = conn()  # settings change mid-connection
    c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1,
                       h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384})
    connect(c, 1, "[::1]:443")
    seed("settings-update", c)


if __name__ == "__main__":
    main()
