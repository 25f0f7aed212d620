"""Mutual TLS to the IdMS: [idm] tls_cert / tls_key against an IdMS that
requires a client certificate.

The IdMS is the real oidc-provider (tests/idms/idms.mjs with client_ca): its
node TLS listeners - discovery, JWKS and the authorization endpoint on one
address, the token endpoint on the other - refuse every handshake without a
client certificate issued by the test CA. The gateway logs in through the
browser flow (discovery, JWKS, token endpoint) with its certificate; without
one, or with one from another CA, it must say what is wrong and what to
change, in the log and in /status. `mcgw check` names a tls_key that does
not belong to tls_cert on the key's line."""

import os
import socket
import ssl
import subprocess

import pytest

from idmtest import BIN, Browser, env, pki, render, require_idms  # noqa: F401
from mcgwtest import _openssl

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def _client_cert(d, name, ca):
    """A TLS client certificate (EKU clientAuth) signed by ca ("ca" or
    "other-ca" in d); the key file is 0600, as [idm] tls_key requires."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                   "extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
             cwd=d)
    os.chmod(d / f"{name}.key", 0o600)
    return d / f"{name}.crt", d / f"{name}.key"


class Certs:
    def __init__(self, pki):
        d = pki.dir
        self.gateway = _client_cert(d, "gw-client", "ca")       # what the IdMS trusts
        self.operator = _client_cert(d, "operator", "ca")       # the operator's browser
        self.stranger = _client_cert(d, "stranger", "other-ca")  # an unrelated CA


@pytest.fixture(scope="module")
def certs(pki):
    return Certs(pki)


class _OperatorPki:
    """What idmtest.Browser needs from a Pki, with the operator's client
    certificate: the IdMS asks every client for one, browsers included."""

    def __init__(self, pki, cert, key):
        self.pki, self.cert, self.key = pki, cert, key

    def context(self):
        ctx = self.pki.context()
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


# Both sides of the TLS 1.3 / 1.2 difference: in TLS 1.3 the client's
# handshake is over before the server has looked at its certificate, so a
# refusal arrives as an alert or a hang-up after it; in TLS 1.2 within it.
TLS_VERSIONS = ["TLSv1.3", "TLSv1.2"]


def mtls_idms(env, certs, tls_max):
    idms = env.idms(client_ca=env.pki.ca, tls_max=tls_max)
    # The IdMS really requires a certificate: a client without one is refused
    # at the TLS layer, one with the operator's is served, in tls_max.
    host, port = "127.0.0.2", idms.authz_port
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        _get_discovery(env.pki.context(), host, port)
    ctx = _OperatorPki(env.pki, *certs.operator).context()
    version, answer = _get_discovery(ctx, host, port)
    assert version == tls_max and answer.startswith(b"HTTP/1.1 200 "), (version, answer[:100])
    return idms


def _get_discovery(ctx, host, port):
    """(TLS version, response) of a discovery GET with ctx."""
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: x\r\n"
                      b"Connection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return s.version(), data


def key_text(path):
    """The base64 body of a PEM key, which must never reach a log."""
    lines = path.read_text().splitlines()
    return [ln for ln in lines if ln and not ln.startswith("-----")]


@pytest.mark.parametrize("tls_max", TLS_VERSIONS)
def test_login_with_client_certificate(env, certs, tls_max):
    idms = mtls_idms(env, certs, tls_max)
    cert, key = certs.gateway
    gw = env.gateway(idms, idm={"tls_cert": str(cert), "tls_key": str(key)})
    gw.msg("idm_discovered", timeout=20)
    browser = Browser(_OperatorPki(env.pki, *certs.operator))
    status, _, page = browser.login(gw.admin_url + "/login")
    assert status == 200, page
    st = gw.wait_state("authorized")
    assert st["subject"] == "officer-7" and st["last_error"] is None, st
    # Discovery and JWKS on the issuer's address, the code exchanged at the
    # token endpoint on the other: both handshakes carried the certificate.
    urls = [r["url"] for r in gw.records if r.get("msg") == "idm_http"]
    assert any(u.startswith("https://127.0.0.3:") and u.endswith("/token") for u in urls), urls
    assert any("/.well-known/openid-configuration" in u for u in urls), urls
    assert gw.count("idm_discovery_failed") == 0
    for line in key_text(key):
        assert line not in gw.text


def discovery_error(env, certs, tls_max, idm):
    """The first discovery failure, as logged and as /status shows it."""
    idms = mtls_idms(env, certs, tls_max)
    gw = env.gateway(idms, idm=idm)
    fail = gw.msg("idm_discovery_failed", timeout=20)
    st = gw.wait_status(lambda s: s["idm"]["last_error"], 10, "last_error")["idm"]
    assert fail["level"] == "error", fail
    assert st["state"] == "error" and st["authorized"] is False and st["last_error"] == \
        "discovery failed: " + fail["error"], st
    return gw, fail["error"]


@pytest.mark.parametrize("tls_max", TLS_VERSIONS)
def test_without_client_certificate(env, certs, tls_max):
    _, error = discovery_error(env, certs, tls_max, {})
    assert error.startswith("client certificate required or refused: 127.0.0.2:"), error
    assert "requires a client certificate (mutual TLS) and none is configured" in error, error
    assert error.endswith("; see [idm] tls_cert and tls_key"), error


@pytest.mark.parametrize("tls_max", TLS_VERSIONS)
def test_certificate_from_another_ca(env, certs, tls_max):
    cert, key = certs.stranger
    gw, error = discovery_error(env, certs, tls_max, {"tls_cert": str(cert), "tls_key": str(key)})
    assert error.startswith("client certificate required or refused: 127.0.0.2:"), error
    assert f"refused the client certificate {cert} (" in error, error
    assert "it must be issued by a CA the server trusts" in error, error
    assert error.endswith("; see [idm] tls_cert and tls_key"), error
    for line in key_text(key):
        assert line not in gw.text


def test_check_names_a_key_that_does_not_match(tmp_path, certs):
    cert, _ = certs.gateway
    _, other_key = certs.stranger
    cfg = tmp_path / "mcgw.ini"
    cfg.write_text(render({
        "tunnel": {"listen": "127.0.0.1:0"},
        "idm": {"issuer": "https://idms.mc.test", "client_id": "mcgw-17",
                "tls_cert": str(cert), "tls_key": str(other_key)}}))
    lines = cfg.read_text().splitlines()
    key_line = next(i + 1 for i, ln in enumerate(lines) if ln.startswith("tls_key"))
    p = subprocess.run([str(BIN), "check", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1
    assert f"{cfg}:{key_line}: tls_key: private key {other_key} does not match the " \
           f"certificate {cert}" in p.stderr, p.stderr
    for line in key_text(other_key):
        assert line not in p.stdout + p.stderr
    # The matching key: the same configuration is fine.
    cfg.write_text(cfg.read_text().replace(str(other_key), str(certs.gateway[1])))
    p = subprocess.run([str(BIN), "check", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
