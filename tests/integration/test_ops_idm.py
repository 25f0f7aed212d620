"""The ops surface with identity management configured: once the gateway is
logged in, /metrics, /status, mcgw status and systemd's STATUS show it."""

import re
import subprocess
import urllib.request

import pytest

from idmtest import env, pki, require_idms, wait_until  # noqa: F401
from opsutil import BIN

pytestmark = pytest.mark.timeout(120)


def metrics(gw):
    with urllib.request.urlopen(gw.admin_url + "/metrics", timeout=10) as r:
        return r.read().decode()


def test_login_state_in_metrics_status_and_cli(env):
    require_idms()
    idms = env.idms(access_ttl=4)
    gw = env.gateway(idms, idm={"refresh_before": "2s"})
    gw.msg("idm_discovered", timeout=20)
    text = metrics(gw)
    assert "mcgw_idm_authorized 0\n" in text
    assert 'mcgw_idm_state{state="unconfigured"} 0\n' in text

    status, _, page = env.browser().login(gw.admin_url + "/login")
    assert status == 200, page
    gw.wait_state("authorized")
    st = wait_until(lambda: (lambda s: s["refreshes"]["ok"] >= 1 and s)(gw.idm_status()), 20,
                    "a refresh", interval=0.1)
    text = metrics(gw)
    assert "mcgw_idm_authorized 1\n" in text
    expiry = int(re.search(r"^mcgw_idm_access_token_expiry_timestamp_seconds (\d+)$", text,
                           re.M).group(1))
    assert abs(expiry - st["access_token_expires_at"]) <= 4  # a refresh may land in between
    ok = int(re.search(r'^mcgw_idm_refresh_total\{result="ok"\} (\d+)$', text, re.M).group(1))
    assert ok >= 1

    r = subprocess.run([str(BIN), "status", "--admin", gw.admin_url], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^gateway login\s+(authorized|refreshing) as officer-7, token expires in",
                     r.stdout, re.M), r.stdout
