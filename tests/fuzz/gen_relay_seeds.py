#!/usr/bin/python3
"""Writes the seed corpora of fuzz_relay_h1, fuzz_relay_h2 and
fuzz_relay_udp (see the operation tables at the top of those harnesses):
one named input per behaviour worth starting from. Run from anywhere;
rewrites tests/fuzz/corpus/fuzz_relay_{h1,h2,udp}/seed-*."""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

# Operations shared by both harnesses (low nibble), tunnel in the high nibble.
OPEN, SEND, BIG, FIN, RST = 0, 1, 2, 3, 4
DEV_STOP, DEV_READ, UP_FIN, UP_RST, UP_STOP, UP_READ = 5, 6, 7, 8, 9, 10


def op(code, tunnel=0, *args):
    return bytes([(tunnel << 4) | code, *args])


def send(tunnel, data):
    return op(SEND, tunnel, len(data) - 1) + data


def common(run):
    """Seeds for both harnesses; run(n) is the harness's 'run the loop' op."""
    r = run
    return {
        "echo-one": op(OPEN) + send(0, b"hello") + r(3) + op(FIN),
        "pipelined-fin-before-200": op(OPEN) + send(0, b"early bytes") + op(FIN),
        "two-tunnels-interleaved": op(OPEN, 0) + op(OPEN, 1) + send(0, b"zero") + send(1, b"one")
        + r(5) + send(1, b"ONE") + send(0, b"ZERO") + r(5),
        "many-tunnels": b"".join(op(OPEN, i) + send(i, bytes([i]) * (i + 1)) for i in range(16))
        + r(15),
        "bulk-backpressure": op(OPEN) + op(UP_STOP) + r(3) + op(UP_STOP) + op(BIG, 0, 100) + r(15)
        + op(UP_READ) + r(15),
        "device-stops-reading": op(OPEN) + r(3) + op(DEV_STOP) + op(BIG, 0, 120) + r(15)
        + op(DEV_READ) + r(15),
        "upstream-fin-first": op(OPEN) + send(0, b"a") + r(5) + op(UP_FIN) + r(3)
        + send(0, b"after upstream FIN") + r(3),
        "device-reset": op(OPEN) + op(OPEN, 1) + send(0, b"x") + r(5) + op(RST, 0, 0)
        + send(1, b"unaffected") + r(5),
        "upstream-reset": op(OPEN) + op(OPEN, 1) + send(0, b"x") + r(5) + op(UP_RST)
        + send(1, b"unaffected") + r(5),
        "reset-after-fin": op(OPEN) + send(0, b"x") + op(FIN) + op(RST, 0, 1) + r(5),
    }


def write(harness, seeds, engines=(0, 1)):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    for name, ops in seeds.items():
        for engine in engines:
            with open(os.path.join(d, f"seed-{name}-{engine}"), "wb") as f:
                f.write(bytes([engine]) + ops)


def main():
    h1 = common(lambda n: bytes([0x0B, n]))
    h1["splice-switch"] = op(OPEN) + send(0, b"s") + op(BIG, 0, 80) + bytes([0x0B, 9]) + op(BIG, 0, 10)
    # Mode byte bit 1: the TLS listener; bit 2: bare FINs; bit 3: KeyUpdates.
    write("fuzz_relay_h1", h1, engines=(0, 1, 2, 6, 10))
    h2 = common(lambda n: bytes([0x0E, n]))
    h2["settings-and-windows"] = (op(OPEN) + op(12, 0, 0x21) + op(DEV_STOP) + op(BIG, 0, 20)
                                  + bytes([0x0E, 9]) + op(11, 0, 1, 0) + op(13) + op(12, 0, 0x05)
                                  + op(DEV_READ))
    h2["rst-no-error-after-end-stream"] = op(OPEN) + op(BIG, 0, 30) + op(FIN) + op(RST, 0, 1)
    # Mode byte bit 0: 16 KiB windows; bit 1: the TLS listener (ALPN h2); bit 3: KeyUpdates.
    write("fuzz_relay_h2", h2, engines=(0, 1, 2, 10))
    # Mode byte bit 0: HTTP/2; bit 1: small limits.
    write("fuzz_relay_udp", udp(), engines=(0, 1, 2, 3))


def udp():
    """fuzz_relay_udp's operations (its own table)."""
    U_OPEN, DG, U_BIG, CTX, TYPE, MALFORMED, WRITE, END, U_RST = 0, 1, 2, 3, 4, 5, 6, 7, 8
    U_STOP, U_READ, BURST, SETTLE, RUN = 9, 10, 11, 12, 13

    def dg(t, data, enc=0):
        return op(DG, t, enc, len(data)) + data

    def write_all(t):
        return op(WRITE, t, 255)

    def r(n):
        return op(RUN, 0, n)

    return {
        "echo-one": op(U_OPEN) + dg(0, b"hello") + write_all(0) + r(3) + op(END, 0, 0),
        "held-before-the-101": op(U_OPEN) + dg(0, b"a") + dg(0, b"") + dg(0, b"c") + write_all(0)
        + op(END, 0, 0),
        "split-byte-by-byte": op(U_OPEN) + dg(0, b"split across reads", 0x15) + dg(0, b"x", 0x3f)
        + b"".join(op(WRITE, 0, 0) + r(1) for _ in range(40)),
        "contexts-types-too-large": op(U_OPEN) + op(CTX, 0, 7, 0x04, 3) + b"ctx"
        + op(TYPE, 0, 0x00, 0x29, 0, 4) + b"type" + dg(0, b"kept") + op(U_BIG, 0, 0, 200)
        + op(U_BIG, 0, 0, 20) + dg(0, b"after") + write_all(0) + op(SETTLE) + op(END, 0, 0),
        "malformed-ends-one-tunnel": op(U_OPEN, 0) + op(U_OPEN, 1) + dg(0, b"zero") + dg(1, b"one")
        + write_all(0) + write_all(1) + op(SETTLE) + op(MALFORMED, 0, 1) + dg(1, b"still one")
        + write_all(0) + write_all(1) + r(5),
        "malformed-kinds": b"".join(op(U_OPEN, i) + dg(i, b"ok") + op(MALFORMED, i, i)
                                    + write_all(i) for i in range(4)) + r(9),
        "many-tunnels": b"".join(op(U_OPEN, i) + dg(i, bytes([i]) * (i + 1)) + write_all(i)
                                 for i in range(16)) + r(15),
        "device-stops-reading": op(U_OPEN) + dg(0, b"peer") + write_all(0) + op(SETTLE)
        + op(U_STOP) + op(BURST, 0, 31, 180) + op(BURST, 0, 31, 180) + op(SETTLE)
        + op(U_READ) + r(9),
        "device-busy": op(U_OPEN) + dg(0, b"peer") + write_all(0) + op(SETTLE) + op(U_STOP)
        + b"".join(op(BURST, 0, 31, 24) + op(SETTLE) for _ in range(8)) + op(U_READ) + r(9),
        "upstream-too-large": op(U_OPEN) + dg(0, b"peer") + write_all(0) + op(SETTLE)
        + op(BURST, 0, 3, 250) + op(BURST, 0, 3, 10) + r(5),
        "device-reset": op(U_OPEN, 0) + op(U_OPEN, 1) + dg(0, b"x") + dg(1, b"y") + write_all(0)
        + write_all(1) + r(5) + op(U_RST, 0) + dg(1, b"unaffected") + write_all(1) + r(5),
        "cut-at-the-end": op(U_OPEN, 0) + op(U_OPEN, 1) + dg(0, b"x") + dg(1, b"y")
        + op(END, 0, 1) + op(END, 1, 3),
    }


if __name__ == "__main__":
    main()
