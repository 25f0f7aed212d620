"""A real browser as a non-3GPP device (a laptop or tablet): an app
(mcx-login without --user) prints its authorization URL and waits on its
loopback redirect URI; headless Chromium (Debian), with mcgw as its HTTP
proxy, opens it and goes through the IdMS's login and consent pages through
the gateway; the app redeems the code through the gateway too.

Chromium trusts the test CA through an NSS database (certutil) in its HOME:
the IdMS's certificate is verified, never ignored. Screenshots of the pages
are saved under build/test-artifacts/.
"""

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

import e2etest
from e2etest import DEVICE_CLIENT_ID, DEVICE_SCOPE, allow_idms, idms_clients, tunnels_closed
from idmtest import BIN, SRC, Gateway, Idms, pki, wait_until  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(240)

UI = SRC / "tests" / "ui"
ARTIFACTS = Path(os.environ.get("MCGW_ARTIFACTS", Path(BIN).parent / "test-artifacts"))


def require_browser():
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("chromium is not installed (scripts/deps.sh test installs it)")
    if shutil.which("certutil") is None:
        pytest.fail("certutil is not installed (libnss3-tools; scripts/deps.sh test)")
    if not (UI / "node_modules" / "playwright-core").is_dir():
        pytest.fail(f"playwright-core is not installed in {UI} (scripts/deps.sh test)")


def nss_home(home, ca):
    """A HOME whose NSS database trusts ca for TLS servers."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    for args in (["-N", "--empty-password"],
                 ["-A", "-t", "C,,", "-n", "mcgw test IdMS CA", "-i", str(ca)]):
        subprocess.run(["certutil", "-d", f"sql:{db}", *args], check=True, timeout=30,
                       capture_output=True)
    return home


def test_chromium_logs_in_through_the_gateway(tmp_path, pki):  # noqa: F811
    e2etest.require_binaries()
    require_browser()
    idms = Idms(tmp_path / "idms", pki, clients=idms_clients()).start()
    gw = Gateway(tmp_path / "gw", None, tunnel={"require_tls": "yes",
                                                "allow": allow_idms(idms)}).start()
    app = None
    try:
        proxy = f"http://127.0.0.1:{gw.proxy_port}"
        # The app: browser mode, its URL on stderr, waiting on its redirect URI.
        app = subprocess.Popen(
            [str(e2etest.MCX_LOGIN), "--proxy", proxy, "--issuer", idms.issuer, "--cacert",
             str(pki.ca), "--client-id", DEVICE_CLIENT_ID, "--scope", DEVICE_SCOPE, "--json",
             "--wait", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err_lines = []
        threading.Thread(target=lambda: err_lines.extend(app.stderr), daemon=True).start()

        def auth_url():
            for ln in err_lines:
                if ln.strip().startswith(idms.issuer + "/auth?"):
                    return ln.strip()
            assert app.poll() is None, "".join(err_lines)
            return None
        url = wait_until(auth_url, 30, "mcx-login's authorization URL")
        before = len(tunnels_closed(gw))

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        home = nss_home(tmp_path / "home", pki.ca)
        drive = subprocess.run(
            ["node", str(UI / "device_login.mjs"),
             json.dumps({"url": url, "proxy": proxy, "home": str(home), "user": "tablet-3",
                         "password": "any password", "shots": str(ARTIFACTS)})],
            cwd=UI, capture_output=True, text=True, timeout=120)
        assert drive.returncode == 0, drive.stderr[-3000:]
        seen = json.loads(drive.stdout)
        steps = [p["step"] for p in seen["pages"]]
        assert steps == ["login", "consent", "redirect"], seen
        assert seen["pages"][0]["url"].startswith(idms.issuer + "/interaction/")
        assert "received" in seen["final"]

        out, _ = app.communicate(timeout=60)
        assert app.returncode == 0, "".join(err_lines)
        res = json.loads(out)
        assert res["subject"] == "tablet-3"
        assert res["mcptt_id"] == "sip:tablet-3@mcptt.mc.test"
        for shot in ("browser-1-login.png", "browser-2-consent.png", "browser-3-done.png"):
            assert (ARTIFACTS / shot).stat().st_size > 1000

        # The browser's own tunnels: to the IdMS's authorization address,
        # through the gateway, TLS only (require_tls = yes), relayed whole.
        authz = f"127.0.0.2:{idms.authz_port}"
        wait_until(lambda: len(tunnels_closed(gw)) - before >= 2, 20, "the browser's tunnels")
        browser_tunnels = [r for r in tunnels_closed(gw)[before:]
                           if r["target"] == authz and r["result"] == "ok"]
        # mcx-login's own requests after the browser: the token endpoint only.
        assert browser_tunnels, tunnels_closed(gw)
        assert all(r["bytes_up"] > 0 and r["bytes_down"] > 0 for r in browser_tunnels)
        # Whatever else Chromium tried (its background services, the web font
        # on the IdMS's page) the gateway refused: only the IdMS is allowed.
        idms_targets = set(allow_idms(idms))
        assert all(r["result"] == "ok" for r in tunnels_closed(gw) if r["target"] in idms_targets)
        assert all(r["result"] != "ok" and r["bytes_up"] == 0 for r in tunnels_closed(gw)
                   if r["target"] not in idms_targets)
        # Nothing about the login in the gateway's log but metadata.
        assert "tablet-3" not in gw.text and "any password" not in gw.text
        assert not re.search(r"code=|/interaction/", gw.text)
    finally:
        if app and app.poll() is None:
            app.kill()
            app.wait(timeout=10)
        gw.stop()
        idms.close()
    gw.assert_no_sanitizer_report()
