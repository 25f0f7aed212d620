"""Helpers for mcgw's identity management (CSC-1) integration tests.

- A throw-away PKI for the test IdMS (openssl CLI): a CA, a server
  certificate for 127.0.0.2 and 127.0.0.3, a second unrelated CA, and
  certificates for wrong host names.
- Idms: the real oidc-provider (tests/idms/idms.mjs on node) configured like
  an MCX IdMS, with its issued secrets collected from its stdout.
- Browser: a cookie-keeping urllib client that plays the operator through
  the provider's login and consent forms (oidc-provider's devInteractions).
- Gateway: mcgwtest.Mcgw with [idm] and a state directory.

Synchronisation is always a condition polled with a deadline.
"""

import html.parser
import http.client
import http.cookiejar
import json
import queue
import shutil
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import mcgwtest
from mcgwtest import BIN, SRC, render_config as render  # noqa: F401  (for the tests)

IDMS_DIR = SRC / "tests" / "idms"
CLIENT_ID = "mcgw-vehicle-17"
SCOPE = "openid 3gpp:mc:ptt_service 3gpp:mc:data_service"


def wait_until(predicate, timeout=10.0, what="condition", interval=0.05):
    """mcgwtest.wait_until, polling every 50 ms by default."""
    return mcgwtest.wait_until(predicate, timeout, what, interval)


def require_idms():
    """Fails (not skips) when node or the npm packages are missing."""
    import pytest
    if shutil.which("node") is None:
        pytest.fail("node is not installed (scripts/deps.sh test installs it)")
    if not (IDMS_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(f"oidc-provider is not installed in {IDMS_DIR} (run scripts/deps.sh test)")


# ---------------------------------------------------------------- PKI


_openssl = mcgwtest._openssl  # also used by e2etest.py and tests/demo/demo.py
_ca = mcgwtest._make_ca


def _leaf(d, name, san):
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName={san}\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
             cwd=d)
    return d / f"{name}.crt", d / f"{name}.key"


class Pki:
    def __init__(self, directory):
        d = Path(directory)
        self.dir = d
        self.ca = _ca(d, "ca", "mcgw test IdMS CA")
        self.other_ca = _ca(d, "other-ca", "an unrelated CA")
        self.cert, self.key = _leaf(d, "idms", "IP:127.0.0.2,IP:127.0.0.3")
        # Signed by the right CA, but for other names: host name check fails.
        self.wrong_cert, self.wrong_key = _leaf(d, "wrong", "DNS:idms.elsewhere.test,IP:127.0.0.9")

    def context(self):
        return ssl.create_default_context(cafile=str(self.ca))


# ---------------------------------------------------------------- the IdMS


class Idms:
    """oidc-provider in a node process. secrets: every token/code it issued."""

    def __init__(self, workdir, pki, access_ttl=5, clients=None, cert=None, key=None,
                 device_ttl=120, token_cert=None, token_key=None, client_ca=None,
                 tls_max=None, clock_offset=0, grant_scopes=None, mc_ids=True,
                 names=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        clients = clients or [native_client()]
        conf = {"cert": str(cert or pki.cert), "key": str(key or pki.key),
                "access_ttl": access_ttl, "device_ttl": device_ttl, "clients": clients}
        if token_cert:
            conf.update(token_cert=str(token_cert), token_key=str(token_key))
        if client_ca:  # mutual TLS: both listeners require a certificate from this CA
            conf.update(client_ca=str(client_ca))
        if tls_max:  # e.g. "TLSv1.2"
            conf.update(tls_max=tls_max)
        if clock_offset:  # seconds the IdMS's clock is ahead (> 0) or behind
            conf.update(clock_offset=clock_offset)
        if grant_scopes is not None:  # the 3gpp:mc:* scopes it grants
            conf.update(grant_scopes=list(grant_scopes))
        if not mc_ids:  # ID tokens without mcptt_id / mcdata_id
            conf.update(mc_ids=False)
        if names:  # (authorization host name, token host name) in its URLs
            conf.update(authz_name=names[0], token_name=names[1])
        self.conf_path = self.workdir / "idms.json"
        self.conf_path.write_text(json.dumps(conf))
        self.proc = None
        self.events = queue.Queue()
        self._secrets = set()
        self._secret_kinds = set()  # (kind, value)
        self.on_secret = None  # hook(kind, value), in the reader thread, as each is reported
        self.log = bytearray()
        self.issuer = None

    def start(self, timeout=30):
        self.proc = subprocess.Popen(["node", str(IDMS_DIR / "idms.mjs"), str(self.conf_path)],
                                     cwd=IDMS_DIR, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()
        ev = self.next_event("listening", timeout)
        self.issuer = ev["issuer"]
        self.authz_port = ev["authz_port"]
        self.token_port = ev["token_port"]
        return self

    def _read(self):
        for line in self.proc.stdout:
            self.log += line
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "secret":
                self._secrets.add(ev["value"])
                self._secret_kinds.add((ev["kind"], ev["value"]))
                hook = self.on_secret
                if hook:
                    hook(ev["kind"], ev["value"])
            else:
                self.events.put(ev)
        self.events.put({"event": "exited"})

    def next_event(self, name, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"idms: no {name} event within {timeout}s:\n"
                                     f"{self.log.decode('utf-8', 'replace')[-3000:]}")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev.get("event") == "exited":
                raise AssertionError(f"idms exited:\n{self.log.decode('utf-8', 'replace')[-3000:]}")
            if ev.get("event") == name:
                return ev
            if ev.get("event") == "error":
                raise AssertionError(f"idms command failed: {ev}")

    def _synced(self):
        """A round trip to the IdMS first, while it runs: its stdout is read by
        a thread, and the ack comes after every secret it printed before."""
        if self.proc and self.proc.poll() is None:
            self.command("sync")

    @property
    def secrets(self):
        """Every token and code issued so far."""
        self._synced()
        return set(self._secrets)

    @property
    def secret_kinds(self):
        self._synced()
        return set(self._secret_kinds)

    @property
    def kinds(self):
        return {k for k, _ in self.secret_kinds}

    def command(self, cmd):
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()
        ev = self.next_event("ack")
        assert ev["command"] == cmd, ev
        return ev

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def native_client(**extra):
    """The gateway's client registration: a public native app (RFC 8252:
    loopback redirect on any port), PKCE, refresh tokens, device flow."""
    c = {"client_id": CLIENT_ID, "application_type": "native",
         "token_endpoint_auth_method": "none",
         "redirect_uris": ["http://127.0.0.1/callback"],
         "grant_types": ["authorization_code", "refresh_token",
                         "urn:ietf:params:oauth:grant-type:device_code"],
         "response_types": ["code"], "id_token_signed_response_alg": "ES256"}
    c.update(extra)
    return c


# ---------------------------------------------------------------- the operator's browser


class _Forms(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms = []
        self._cur = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._cur = {"action": a.get("action", ""), "method": a.get("method", "get").lower(),
                         "id": a.get("id"), "fields": {}}
            self.forms.append(self._cur)
        elif tag == "input" and self._cur is not None and a.get("name"):
            self._cur["fields"][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "form":
            self._cur = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Browser:
    """Cookies, the test CA, redirects followed by hand (so that each hop is
    visible), forms filled from the page."""

    def __init__(self, pki):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar),
            urllib.request.HTTPSHandler(context=pki.context()), _NoRedirect())
        self.visited = []

    def request(self, url, data=None, max_hops=20):
        """Follows redirects; returns (status, final url, body text)."""
        for _ in range(max_hops):
            self.visited.append(url)
            body = urllib.parse.urlencode(data).encode() if data is not None else None
            req = urllib.request.Request(url, data=body)
            try:
                resp = self.opener.open(req, timeout=15)
                status, headers, text = resp.status, resp.headers, resp.read()
            except urllib.error.HTTPError as e:
                status, headers, text = e.code, e.headers, e.read()
            if status in (301, 302, 303, 307, 308) and headers.get("Location"):
                url = urllib.parse.urljoin(url, headers["Location"])
                data = None
                continue
            return status, url, text.decode("utf-8", "replace")
        raise AssertionError(f"too many redirects: {self.visited[-5:]}")

    def submit(self, url, page, **values):
        """Submits the first form of page with values filled in."""
        p = _Forms()
        p.feed(page)
        assert p.forms, f"no form on {url}:\n{page[:2000]}"
        form = p.forms[0]
        fields = dict(form["fields"])
        fields.update(values)
        return self.request(urllib.parse.urljoin(url, form["action"]), fields)

    def login(self, start_url, user="officer-7"):
        """From the gateway's /login (or the IdMS's device page) through the
        provider's login and consent; returns the final (status, url, text)."""
        return self._interactions(*self.request(start_url), user)

    def device_login(self, verification_uri, user_code, user="officer-7"):
        status, url, text = self.request(verification_uri)
        status, url, text = self.submit(url, text, user_code=user_code)
        return self._interactions(*self.submit(url, text), user)  # confirm

    def _interactions(self, status, url, text, user):
        """Fills the provider's login and consent pages from this one on."""
        for _ in range(6):
            if "/interaction/" not in url:
                return status, url, text
            if 'name="login"' in text:
                status, url, text = self.submit(url, text, login=user, password="any")
            else:
                status, url, text = self.submit(url, text)
        return status, url, text


# ---------------------------------------------------------------- the gateway


class Gateway(mcgwtest.Mcgw):
    """mcgwtest.Mcgw (DNS kept on loopback like every daemon under test)
    with [idm] (None: no [idm] section) and a state_dir, restartable:
    start() again after stop() or a kill."""

    tunnel_defaults = {"listen": "127.0.0.1:0", "allow_private": "yes", "require_tls": "no",
                       "drain_timeout": "2s"}
    admin_timeout = 15

    def __init__(self, workdir, idm, tunnel=None, gateway=None, state_dir=None, admin=None):
        workdir = Path(workdir)
        self.state_dir = Path(state_dir) if state_dir else workdir / "state"
        super().__init__(workdir, tunnel=tunnel, admin=admin,
                         gateway={"state_dir": str(self.state_dir), **(gateway or {})},
                         extra={"idm": idm} if idm is not None else None)

    def start(self, timeout=20):
        return super().start(timeout)

    def stop(self):
        super().stop()
        self.proc = None

    def msg(self, name, timeout=10, since=0, **fields):
        return self.wait_log(lambda r: r.get("msg") == name and
                             all(r.get(k) == v for k, v in fields.items()),
                             timeout, f"{name} {fields}", since)

    def count(self, name):
        with self._cond:
            return sum(1 for r in self.records if r.get("msg") == name)

    def idm_status(self):
        return self.status()["idm"]

    def wait_state(self, state, timeout=20):
        return self.wait_status(lambda s: s["idm"]["state"] == state, timeout,
                                f"idm state {state}", interval=0.1)["idm"]

    def connect(self, target):
        """CONNECT target through the proxy; returns the status code."""
        resp = mcgwtest.open_tunnel(self.proxy_port, target, timeout=10)
        resp.close()
        return resp.status


def idm_section(idms, pki, **overrides):
    sect = {"issuer": idms.issuer, "client_id": CLIENT_ID, "client_auth": "none",
            "scope": SCOPE, "acr_values": "3gpp:acr:password", "ca_file": str(pki.ca),
            "refresh_before": "2s", "login": "browser"}
    sect.update(overrides)
    return sect


def assert_no_secrets(gateway, idms, extra=()):
    """Every secret the IdMS issued (and extra ones) is absent from the log."""
    text = gateway.text
    secrets = set(idms.secrets) | set(extra)
    leaked = [s for s in secrets if len(s) >= 8 and s in text]
    assert not leaked, f"{len(leaked)} secret(s) found in mcgw's log"
    return len(secrets)


# ---------------------------------------------------------------- pytest fixtures

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed")
    return Pki(tmp_path_factory.mktemp("idms-pki"))


@pytest.fixture
def env(tmp_path, pki):
    """env.idms(**kw) / env.gateway(idm_overrides, **kw) / env.browser(); at
    teardown every gateway and IdMS stop, and each gateway's whole log is
    checked for every secret the IdMS issued and for sanitizer reports."""
    class Env:
        def __init__(self):
            self.pki = pki
            self.idmses = []
            self.gateways = []
            self.extra_secrets = set()

        def idms(self, **kw):
            i = Idms(tmp_path / f"idms{len(self.idmses)}", pki, **kw).start()
            self.idmses.append(i)
            return i

        def gateway(self, idms, tunnel=None, idm=None, state_dir=None, start=True, admin=None):
            g = Gateway(tmp_path / f"gw{len(self.gateways)}",
                        idm_section(idms, pki, **(idm or {})), tunnel=tunnel,
                        state_dir=state_dir, admin=admin)
            self.gateways.append(g)
            return g.start() if start else g

        def browser(self):
            return Browser(pki)

    e = Env()
    yield e
    for g in e.gateways:
        g.stop()
    for i in e.idmses:
        i.close()
    for g in e.gateways:
        g.assert_no_sanitizer_report()
        for i in e.idmses:
            assert_no_secrets(g, i, e.extra_secrets)


def read_state(gateway):
    return json.loads((gateway.state_dir / "idm-login.json").read_text())
