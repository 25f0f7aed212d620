"""Smoke test of the benchmark tools against a real mcgw on loopback: every
loadgen mode works and reports what happened, so `make bench` cannot rot
unnoticed. Small counts only; the figures themselves are not checked here."""
import os
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("BUILD", os.path.dirname(os.environ.get("MCGW_BIN", "build/mcgw")))
import run as bench  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("bench"))
    upstream, up = bench.start_upstream()
    proxy = bench.Mcgw(tmp, up)
    proxy.start()
    yield proxy, up
    proxy.stop()
    bench.stop(upstream)
    bench.cleanup()


def lg(*args, timeout=60):
    return subprocess.run([bench.LOADGEN] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout)


def result(r):
    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, r.stdout + r.stderr
    return bench.kv(lines[-1])


def test_setup_counts_every_tunnel(env):
    proxy, up = env
    r = lg("setup", "--proxy", "127.0.0.1:%d" % proxy.port, "--target",
           "127.0.0.1:%d" % up["echo"], "-n", 300, "-c", 20)
    res = result(r)
    assert r.returncode == 0, r.stderr
    assert res["ok"] == 300 and res["failed"] == 0 and res["measured"] == 300
    assert 0 < res["p50_us"] <= res["p99_us"] <= res["max_us"]


def test_refused_connect_is_a_failure(env):
    proxy, up = env
    r = lg("setup", "--proxy", "127.0.0.1:%d" % proxy.port, "--target",
           "127.0.0.1:%d" % up["fake"], "-n", 3, "-c", 1)
    res = result(r)
    assert r.returncode == 1
    assert res["ok"] == 0 and res["fail_status"] == 3
    assert "403" in r.stderr


def test_hold_steps_and_release(env):
    proxy, up = env
    p = bench.spawn([bench.LOADGEN, "hold", "--proxy", "127.0.0.1:%d" % proxy.port, "--target",
                     "127.0.0.1:%d" % up["echo"], "-n", "200", "-c", "50", "--steps", "50"],
                    stdout=subprocess.PIPE)
    rd = bench.LineReader(p)
    try:
        level = bench.kv(rd.line(timeout=30))
        assert level["ok"] == 50 and level["failed"] == 0
        os.kill(p.pid, signal.SIGUSR1)
        line = rd.line(timeout=30)
        assert line.startswith("HELD")
        assert bench.kv(line)["ok"] == 200
        assert bench.n_fds(proxy.pid) >= 400  # two descriptors per held tunnel
        os.kill(p.pid, signal.SIGTERM)
        res = bench.kv(rd.line(timeout=30))
        assert res["dropped"] == 0 and res["failed"] == 0
        assert p.wait(30) == 0
    finally:
        bench.stop(p)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_bulk_moves_every_byte(env, direction):
    proxy, up = env
    port = up["sink"] if direction == "up" else up["source"]
    r = lg("bulk", "--proxy", "127.0.0.1:%d" % proxy.port, "--target", "127.0.0.1:%d" % port,
           "--bytes", 8 << 20, "--dir", direction)
    res = result(r)
    assert r.returncode == 0, r.stderr
    assert res["ok"] == 1 and res["bytes"] == 8 << 20 and res["gbit_s"] > 0


# ---------------------------------------------------------------- HTTP/2 over TLS


@pytest.fixture(scope="module")
def h2env(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("bench-h2"))
    pki = bench.make_pki(os.path.join(tmp, "pki"))
    upstream, up = bench.start_upstream()
    proxy = bench.McgwTls(tmp, up, pki)
    proxy.start()
    yield proxy, up, pki, tmp
    proxy.stop()
    bench.stop(upstream)


def h2(proxy, up, pki, op, kind, *args):
    return lg("h2", op, "--proxy", "127.0.0.1:%d" % proxy.port, "--target",
              "127.0.0.1:%d" % up[kind], "--ca", pki["ca"], *args)


def test_h2_hold_levels_and_echo_per_stream(h2env):
    proxy, up, pki, _ = h2env
    fds0 = bench.steady_fds(proxy.pid)
    p = bench.spawn([bench.LOADGEN, "h2", "hold", "--proxy", "127.0.0.1:%d" % proxy.port,
                     "--target", "127.0.0.1:%d" % up["echo"], "--ca", pki["ca"],
                     "--streams", "30", "--conns", "3", "--steps", "10"], stdout=subprocess.PIPE)
    rd = bench.LineReader(p)
    try:
        level = bench.kv(rd.line(timeout=30))  # connections up, no stream yet
        assert level["conns"] == 3 and level["streams"] == 0 and level["ok"] == 0
        assert level["tls"] == "TLSv1.3"
        os.kill(p.pid, signal.SIGUSR1)
        level = bench.kv(rd.line(timeout=30))
        assert level["streams"] == 10 and level["ok"] == 10 and level["failed"] == 0
        os.kill(p.pid, signal.SIGUSR1)
        line = rd.line(timeout=30)
        assert line.startswith("HELD") and bench.kv(line)["ok"] == 30
        # 3 device connections, one upstream socket per stream
        assert bench.n_fds(proxy.pid) >= fds0 + 33
        os.kill(p.pid, signal.SIGTERM)
        res = bench.kv(rd.line(timeout=30))
        assert res["dropped"] == 0 and res["failed"] == 0
        assert p.wait(30) == 0
    finally:
        bench.stop(p)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_h2_bulk_moves_every_byte_on_every_stream(h2env, direction):
    proxy, up, pki, _ = h2env
    n = (8 << 20) + 7  # not a multiple of the stream count: uneven shares add up
    r = h2(proxy, up, pki, "bulk", "sink" if direction == "up" else "source",
           "--streams", 20, "--bytes", n, "--dir", direction)
    res = result(r)
    assert r.returncode == 0, r.stderr
    assert res["ok"] == 1 and res["bytes"] == n and res["streams"] == 20 and res["gbit_s"] > 0


def test_h2_refused_stream_is_a_failure(h2env):
    proxy, up, pki, _ = h2env
    r = h2(proxy, up, pki, "bulk", "fake", "--streams", 3, "--bytes", 1000)
    res = result(r)
    assert r.returncode == 1 and res["ok"] == 0
    assert res["fail_status"] >= 1 and "403" in r.stderr


def test_h2_server_certificate_is_verified(h2env):
    proxy, up, pki, tmp = h2env
    other = bench.make_pki(os.path.join(tmp, "other-pki"))
    r = lg("h2", "bulk", "--proxy", "127.0.0.1:%d" % proxy.port, "--target",
           "127.0.0.1:%d" % up["source"], "--ca", other["ca"], "--bytes", 1000)
    res = result(r)
    assert r.returncode == 1 and res["ok"] == 0 and res["fail_tls"] == 1
    assert "certificate" in r.stderr


def test_h2_usage_error():
    r = lg("h2", "bulk", "--proxy", "127.0.0.1:1")
    assert r.returncode == 2 and "--ca" in r.stderr
