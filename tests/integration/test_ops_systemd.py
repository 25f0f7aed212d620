"""systemd integration: sd_notify messages read from a NOTIFY_SOCKET the test
binds, the shipped unit checked by systemd-analyze verify, and the
privilege drop of `[gateway] user` (runs only as root, as CI does)."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from opsutil import (BIN, SRC, Mcgw, base_config, close_all, gateway_factory,  # noqa: F401
                     open_tunnel, render_config, require_tool, run_cli, upstream, wait_until)


class NotifySocket:
    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def wait_for(self, predicate, timeout=15, what="an sd_notify message"):
        """The first message (a dict of its KEY=VALUE lines) not yet consumed
        that matches predicate; earlier ones are consumed with it."""
        deadline = time.monotonic() + timeout
        while True:
            while self.messages:
                m = self.messages.pop(0)
                if predicate(m):
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()
                                      if "=" in line))

    def close(self):
        self.sock.close()


@pytest.mark.timeout(60)
def test_sd_notify_ready_reload_status_stopping(tmp_path, upstream):
    notify = NotifySocket(tmp_path / "notify.sock")
    gw = Mcgw(tmp_path, base_config(allow=[f"127.0.0.1:{upstream.port}"]),
              env={"NOTIFY_SOCKET": notify.path})
    held = []
    try:
        gw.start()
        ready = notify.wait_for(lambda m: "READY" in m, what="READY=1")
        assert ready["READY"] == "1"
        assert ready["STATUS"] == "0 tunnels, no gateway login configured"

        held = [open_tunnel(gw.proxy_port, f"127.0.0.1:{upstream.port}") for _ in range(2)]
        notify.wait_for(lambda m: m.get("STATUS") == "2 tunnels, no gateway login configured",
                        what="STATUS with 2 tunnels")

        gw.send_signal(signal.SIGHUP)
        reloading = notify.wait_for(lambda m: "RELOADING" in m, what="RELOADING=1")
        assert reloading["RELOADING"] == "1"
        usec = int(reloading["MONOTONIC_USEC"])
        assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 30
        again = notify.wait_for(lambda m: "READY" in m, what="READY=1 after the reload")
        assert again["STATUS"] == "2 tunnels, no gateway login configured"

        gw.send_signal(signal.SIGTERM)
        stopping = notify.wait_for(lambda m: "STOPPING" in m, what="STOPPING=1")
        assert stopping["STATUS"] == "draining: 2 tunnels, no gateway login configured"
        close_all(held)
        assert gw.proc.wait(30) == 0
    finally:
        close_all(held)
        gw.stop()
        notify.close()


@pytest.mark.timeout(60)
def test_unit_file_verifies(tmp_path):
    analyze = require_tool("systemd-analyze")
    unit = (SRC / "configs" / "mcgw.service").read_text()
    for key in ("Type=notify", "User=mcgw", "StateDirectory=mcgw", "StateDirectoryMode=0700",
                "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW\n",
                "RestrictAddressFamilies=", "SystemCallFilter=", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert key in unit, key
    # verify checks that ExecStart's binary exists: point it at the build.
    # Documentation=man:mcgw(8) comes with the package (test_deb_package).
    (tmp_path / "mcgw.service").write_text(unit.replace("/usr/sbin/mcgw", str(BIN)))
    r = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "mcgw.service")],
                       capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "mcgw.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def need_root():
    if os.geteuid() != 0:
        pytest.skip("the privilege drop needs root (CI runs as root)")


@pytest.mark.timeout(60)
def test_privilege_drop_to_user(tmp_path, upstream):
    need_root()
    nobody = pwd.getpwnam("nobody")
    # The dropped process re-reads its config on SIGHUP: it must be able to
    # reach it (pytest's tmp_path sits below a 0700 directory).
    workdir = tempfile.mkdtemp(prefix="mcgw-privdrop-")
    os.chmod(workdir, 0o755)
    gw = Mcgw(workdir, base_config(allow=[f"127.0.0.1:{upstream.port}"],
                                    extra_gateway=[("user", "nobody")]))
    held = []
    try:
        gw.start()
        dropped = gw.wait_log(lambda r: r.get("msg") == "privileges_dropped", what="privileges_dropped")
        assert dropped["uid"] == nobody.pw_uid and dropped["gid"] == nobody.pw_gid
        # The log order says the drop came before serving: ready follows it.
        msgs = [r.get("msg") for r in gw.log_records()]
        assert msgs.index("privileges_dropped") < msgs.index("ready")
        status = open(f"/proc/{gw.proc.pid}/status").read()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        gids = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1:]
        groups = next(line for line in status.splitlines() if line.startswith("Groups:")).split()[1:]
        assert uids == [str(nobody.pw_uid)] * 4
        assert gids == [str(nobody.pw_gid)] * 4
        assert groups in ([], [str(nobody.pw_gid)])
        held = [open_tunnel(gw.proxy_port, f"127.0.0.1:{upstream.port}")]
        assert gw.status()["tunnels"]["active"] == 1
        gw.send_signal(signal.SIGHUP)  # still able to reload as nobody
        gw.wait_log(lambda r: r.get("msg") == "reloaded", what="reloaded as nobody")
    finally:
        close_all(held)
        gw.stop()
        shutil.rmtree(workdir)


@pytest.mark.timeout(30)
def test_root_with_missing_user_refuses_to_start(tmp_path):
    need_root()
    name = "mcgw-no-such-user"
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    cfg = tmp_path / "mcgw.ini"
    cfg.write_text(render_config(base_config(extra_gateway=[("user", name)])))
    r = subprocess.run([str(BIN), "run", "-c", str(cfg)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert f"[gateway] user = {name}: no such user" in r.stderr
    assert "useradd --system" in r.stderr
    assert "listening" not in r.stderr  # refused before binding anything
