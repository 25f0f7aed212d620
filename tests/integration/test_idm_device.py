"""Device login (RFC 8628) through `mcgw login`, and refused TLS peers."""

import subprocess
import threading

import pytest

from idmtest import BIN, env, pki, require_idms, wait_until  # noqa: F401

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


class Cli:
    """`mcgw login` in the background, its output read line by line."""

    def __init__(self, gw):
        self.proc = subprocess.Popen(
            [str(BIN), "login", "-c", str(gw.config_path), "--admin", f"127.0.0.1:{gw.admin_port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.decode("utf-8", "replace").rstrip("\n"))

    def line_after(self, prefix, timeout=20):
        def find():
            for i, l in enumerate(self.lines[:-1]):
                if l.startswith(prefix):
                    return self.lines[i + 1].strip()
            return None
        return wait_until(find, timeout, f"a line after '{prefix}'")

    def wait(self, timeout=60):
        rc = self.proc.wait(timeout=timeout)
        return rc, "\n".join(self.lines)


def test_device_login_with_mcgw_login(env):
    idms = env.idms(access_ttl=30)
    gw = env.gateway(idms, idm={"login": "device"})
    gw.msg("idm_discovered", timeout=20)
    cli = Cli(gw)
    uri = cli.line_after("To log this gateway in to the IdMS, open")
    code = cli.line_after("and enter the code")
    assert uri == f"{idms.issuer}/device"
    assert len(code) >= 8
    st = gw.wait_state("authorizing")
    assert st["subject"] is None
    wait_until(lambda: any(l.startswith("waiting for the login") for l in cli.lines), 10,
               "progress shown")
    status, url, page = env.browser().device_login(uri, code)
    assert status == 200, page
    rc, out = cli.wait()
    assert rc == 0, out
    assert "Logged in as officer-7." in out
    assert "sip:officer-7@mcptt.mc.test" in out
    st = gw.wait_state("authorized")
    assert st["mc_service_ids"]["mcdata_id"] == "sip:officer-7@mcdata.mc.test"
    gw.msg("idm_authorized", via="device")
    # The device code never reached the log; the user code neither.
    assert any(len(s) > 20 for s in idms.secrets)


def test_device_login_denied(env):
    idms = env.idms(access_ttl=30)
    gw = env.gateway(idms, idm={"login": "device"})
    gw.msg("idm_discovered", timeout=20)
    cli = Cli(gw)
    uri = cli.line_after("To log this gateway in to the IdMS, open")
    code = cli.line_after("and enter the code")
    browser = env.browser()
    status, url, text = browser.request(uri)
    status, url, text = browser.submit(url, text, user_code=code)
    status, url, text = browser.submit(url, text, abort="yes")  # the operator says no
    rc, out = cli.wait()
    assert rc == 1 and "Login denied" in out, out
    assert gw.idm_status()["state"] == "unauthorized"


def test_browser_route_refused_in_device_mode(env):
    idms = env.idms()
    gw = env.gateway(idms, idm={"login": "device"})
    gw.msg("idm_discovered", timeout=20)
    code, _, body = gw.admin("/login")
    assert code == 409 and b"login = device" in body


@pytest.mark.parametrize("case", ["wrong_ca", "wrong_host"])
def test_tls_verification_refuses(env, pki, case):
    if case == "wrong_ca":
        idms = env.idms()
        gw = env.gateway(idms, idm={"ca_file": str(pki.other_ca)})
    else:
        idms = env.idms(cert=pki.wrong_cert, key=pki.wrong_key)
        gw = env.gateway(idms)
    rec = gw.msg("idm_discovery_failed", timeout=20)
    want = "unable to get local issuer certificate" if case == "wrong_ca" else "mismatch"
    assert want in rec["error"], rec
    st = gw.wait_state("error")
    assert want in st["last_error"] and "certificate" in st["last_error"]
    code, _, body = gw.admin("/login")
    assert code == 409
