"""The status page's identity management panel against the real test IdMS
(oidc-provider, tests/integration/idmtest.py) in Debian's headless Chromium
(the driver and `browser` fixture of test_ops_page.py): the gateway's clock
skew against the IdMS, "not measured yet" before the IdMS answers, and the
warning (colour and hint) while the skew is beyond the 30 s leeway; the
"Log out" button (issue 16), and a logout CSRF attempt from a page on
another origin. Screenshots go to build/test-artifacts/."""

import http.server
import json
import re
import threading

import pytest

from idmtest import env, pki, read_state, require_idms  # noqa: F401
from opsutil import ARTIFACTS
from test_idm_logout import login, refresh_error
from test_ops_page import browser  # noqa: F401

pytestmark = pytest.mark.timeout(180)

HINT = "check NTP/GNSS time on the gateway"
SKEW = r"^([+-]?\d+\.\d) s \(±(\d+\.\d) s\)$"  # also a JS regex
SMALL_SKEW = r"^(0\.0|[+-][0-2]\.\d) s \(±\d+\.\d s\)$"


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def shown_skew(text):
    """(skew, uncertainty) in seconds from the page's clock line."""
    m = re.fullmatch(SKEW, text)
    assert m, text
    return float(m[1]), float(m[2])


def assert_warning(browser, direction):
    clock = browser("style", selector="#idm-clock")
    assert clock["className"] == "warn", clock
    assert clock["color"] == clock["palette"]["warn"] != clock["palette"]["fg"], clock
    hint = browser("style", selector="#idm-clock-hint")
    assert hint["visible"] and hint["color"] == hint["palette"]["warn"], hint
    text = browser("text", selector="#idm-clock-hint")["text"]
    assert re.fullmatch(rf"The gateway's clock is 1(19|20|21) s {direction} the IdMS's "
                        rf"\(more than 30 s\): {re.escape(HINT)}", text), text


def assert_no_warning(browser):
    clock = browser("style", selector="#idm-clock")
    assert clock["className"] == "", clock
    assert clock["color"] == clock["palette"]["fg"], clock
    assert not browser("style", selector="#idm-clock-hint")["visible"]


def test_page_warns_of_a_skewed_clock_until_it_is_fixed(env, browser):
    # The IdMS 120 s behind: the gateway's clock is 120 s ahead (within the
    # ID token's validity, so the login works).
    idms = env.idms(access_ttl=4, clock_offset=-120)
    gw = env.gateway(idms, idm={"refresh_before": "2s"})
    gw.msg("idm_discovered", timeout=20)
    status, _, page = env.browser().login(gw.admin_url + "/login")
    assert status == 200, page
    gw.wait_state("authorized")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    browser("open", url=gw.admin_url + "/", width=1280, height=900)
    browser("wait_text", selector="#conn", text="live")
    browser("wait_match", selector="#idm-state", pattern="^(authorized|refreshing)$")
    skew, uncertainty = shown_skew(browser("wait_match", selector="#idm-clock",
                                           pattern=SKEW)["text"])
    assert abs(skew - 120) <= 2 and 0 < uncertainty <= 2, (skew, uncertainty)
    assert_warning(browser, "ahead of")
    browser("screenshot", path=str(ARTIFACTS / "status-page-clock-skew.png"))

    # A phone: the hint wraps inside the card.
    browser("open", url=gw.admin_url + "/", width=390, height=844)
    browser("wait_match", selector="#idm-clock", pattern=r"^\+1(19|20|21)\.\d s \(")
    assert_warning(browser, "ahead of")
    size = browser("overflow")
    assert size["scroll"] <= size["inner"], size
    browser("screenshot", path=str(ARTIFACTS / "status-page-clock-skew-phone.png"))

    # The clock fixed: the next IdMS responses (refreshes every ~2 s) bring
    # the skew back within the leeway, and the page drops the warning.
    idms.command("clock 0")
    skew, _ = shown_skew(browser("wait_match", selector="#idm-clock", pattern=SMALL_SKEW,
                                 timeout_s=40)["text"])
    assert abs(skew) <= 2, skew
    assert_no_warning(browser)
    assert browser("errors")["errors"] == []


def test_page_clock_not_measured_then_in_step(env, browser):
    idms = env.idms()
    idms.command("stop")
    gw = env.gateway(idms)
    gw.msg("idm_discovery_failed", timeout=20)
    browser("open", url=gw.admin_url + "/", width=1280, height=900)
    browser("wait_text", selector="#conn", text="live")
    browser("wait_text", selector="#idm-clock", text="not measured yet")
    assert_no_warning(browser)

    # The IdMS back, its clock in step with the gateway's: the discovery retry
    # measures it, and nothing is flagged.
    idms.command("start")
    skew, uncertainty = shown_skew(browser("wait_match", selector="#idm-clock", pattern=SKEW,
                                           timeout_s=60)["text"])
    assert abs(skew) <= 2 and 0 < uncertainty <= 2, (skew, uncertainty)
    assert_no_warning(browser)
    assert gw.idm_status()["clock_skew"]["large"] is False
    assert browser("errors")["errors"] == []


# ---------------------------------------------------------------- logout (issue 16)


def logged_in(env):
    """The test IdMS and a gateway logged in to it as officer-7."""
    idms = env.idms(access_ttl=60)
    gw = env.gateway(idms)
    login(env, gw)
    return idms, gw


def test_page_log_out_button(env, browser, pki):
    idms, gw = logged_in(env)
    refresh_token = read_state(gw)["refresh_token"]
    browser("open", url=gw.admin_url + "/", width=1280, height=900)
    browser("wait_match", selector="#idm-state", pattern="^(authorized|refreshing)$")
    browser("click", selector="#logout")
    text = browser("wait_match", selector="#logout-text", pattern="^Logged out")["text"]
    assert text == "Logged out; the refresh token was revoked at the IdMS.", text
    assert browser("attr", selector="#end-session", name="href")["value"] == \
        f"{idms.issuer}/session/end"
    assert browser("style", selector="#end-session")["visible"]
    browser("wait_text", selector="#idm-state", text="unauthorized")
    assert not (gw.state_dir / "idm-login.json").exists()
    assert refresh_error(idms, pki, refresh_token) == "invalid_grant"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser("screenshot", path=str(ARTIFACTS / "status-page-logged-out.png"))
    assert browser("errors")["errors"] == []


ATTACK = """<!doctype html><html><body>
<p id="img">pending</p><p id="login">pending</p><p id="fetch">pending</p><p id="forms">pending</p><p id="all">pending</p>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe><iframe name="sink3"></iframe>
<form id="f1" method="POST" action="{admin}/logout" target="sink1">
  <input name="x" value="{{}}"></form>
<form id="f2" method="POST" action="{admin}/logout" target="sink2" enctype="text/plain">
  <input name='{{"a":"' value='"}}'></form>
<form id="f3" method="POST" action="{admin}/login/device" target="sink3">
  <input name="x" value="{{}}"></form>
<script>
const mark = (id, t) => {{ document.getElementById(id).textContent = t; }};
let pending = 6;
const settled = () => {{ if (--pending === 0) mark('all', 'done'); }};
const img = new Image();
img.onload = img.onerror = () => {{ mark('img', 'done'); settled(); }};
img.src = '{admin}/logout';
const login = new Image();
login.onload = login.onerror = () => {{ mark('login', 'done'); settled(); }};
login.src = '{admin}/login';
fetch('{admin}/logout', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},
                         body: '{{}}'}})
  .then((r) => {{ mark('fetch', 'answered ' + r.status); settled(); }},
        () => {{ mark('fetch', 'blocked'); settled(); }});
let forms = 0;
for (const [form, sink] of [['f1', 'sink1'], ['f2', 'sink2'], ['f3', 'sink3']]) {{
  document.querySelector('iframe[name=' + sink + ']').onload = () => {{
    if (++forms === 3) mark('forms', 'answered');
    settled();
  }};
  document.getElementById(form).submit();
}}
</script></body></html>"""


def test_logout_csrf_from_another_origin(env, browser):
    """A page on another origin auto-submits form POSTs (urlencoded and
    text/plain) to /logout and one to /login/device, loads <img
    src=.../logout> and <img src=.../login>, and tries a JSON fetch: none of
    them logs the gateway out or starts a login."""
    _, gw = logged_in(env)
    logins_started = gw.count("idm_login_started")
    body = ATTACK.format(admin=gw.admin_url).encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        browser("open", url=f"http://127.0.0.1:{evil.server_address[1]}/", width=800, height=600)
        browser("wait_text", selector="#all", text="done")
        assert browser("text", selector="#img")["text"] == "done"
        assert browser("text", selector="#login")["text"] == "done"
        assert browser("text", selector="#forms")["text"] == "answered"
        assert browser("text", selector="#fetch")["text"] == "blocked"  # no CORS preflight grant
    finally:
        evil.shutdown()
        evil.server_close()
    st = gw.idm_status()
    assert st["state"] in ("authorized", "refreshing") and st["subject"] == "officer-7"
    assert (gw.state_dir / "idm-login.json").exists()
    assert gw.count("idm_logout") == 0
    assert gw.count("idm_login_started") == logins_started
    assert json.loads(gw.admin("/login/device")[2])["status"] == "none"
