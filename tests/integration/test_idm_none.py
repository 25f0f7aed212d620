"""Without [idm] the gateway says plainly that it performs no identity
management of its own (issue 16, TS 33.180 5.1.2.1): at `mcgw check` and at
start-up. Its login routes answer 404."""

import subprocess

import pytest

import mcgwtest
from idmtest import Gateway

pytestmark = pytest.mark.timeout(60)

WARNING = "no [idm]: this gateway performs no identity management of its own"


def check(path):
    p = subprocess.run([str(mcgwtest.BIN), "check", "-c", str(path)], capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def test_check_warns_without_idm(tmp_path):
    cfg = tmp_path / "mcgw.ini"
    cfg.write_text("[tunnel]\nlisten = 127.0.0.1:0\nallow = 127.0.0.1:9\n")
    code, out, err = check(cfg)
    assert code == 0 and out == f"{cfg}: ok\n", (out, err)
    assert f"{cfg}: warning: {WARNING}" in err and "TS 33.180 5.1.2.1" in err, err


def test_check_is_quiet_with_idm(tmp_path):
    cfg = tmp_path / "mcgw.ini"
    cfg.write_text("[tunnel]\nlisten = 127.0.0.1:0\nallow = 127.0.0.1:9\n"
                   "[idm]\nissuer = https://127.0.0.2:8443\nclient_id = mcgw-1\n")
    code, out, err = check(cfg)
    assert code == 0 and err == "", err


def test_startup_warns_without_idm(tmp_path):
    gw = Gateway(tmp_path / "gw", None, tunnel={"allow": "127.0.0.1:9"}).start()
    try:
        rec = gw.msg("no_idm")
        assert rec["level"] == "warn" and rec["warning"].startswith(WARNING)
        assert "TS 33.180 5.1.2.1" in rec["warning"]
        assert gw.idm_status()["state"] == "unconfigured"
        assert gw.admin("/login")[0] == 404
        status, _, body = gw.admin_request("/logout", "POST",
                                           headers={"Content-Type": "application/json"})
        assert status == 404, body
    finally:
        gw.stop()
    gw.assert_no_sanitizer_report()
