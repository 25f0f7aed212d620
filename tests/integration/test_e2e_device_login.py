"""A device performs its own CSC-1 login through mcgw (TS 33.180 5.1.2.1):
build/mcx-login against the test IdMS (oidc-provider), over HTTP/1.1 on the
plain listener, over HTTP/1.1 on the TLS listener with a device certificate,
and over HTTP/2 CONNECT (h2c and h2 over TLS). Every IdMS request runs in its
own tunnel; the gateway sees only TLS records (require_tls = yes), and the
bytes it relayed are exactly the bytes the device's TLS wrote and read.
"""

import json
import os

import pytest

import e2etest
from e2etest import (allow_idms, device_pki, idms_clients, mcx_login, password_file, result_of,
                     tunnels_closed)
from idmtest import Gateway, pki  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def world(tmp_path, pki):  # noqa: F811
    """The IdMS and a gateway with plain and TLS listeners (device
    certificates required on TLS), allowing only the IdMS's two addresses."""
    e2etest.require_binaries()
    from idmtest import Idms
    idms = Idms(tmp_path / "idms", pki, clients=idms_clients()).start()
    dev = device_pki(pki)
    gw = Gateway(tmp_path / "gw", None, tunnel={
        "listen_tls": "127.0.0.1:0", "tls_cert": str(dev["gw_cert"]),
        "tls_key": str(dev["gw_key"]), "client_ca": str(pki.ca),
        "require_tls": "yes", "allow": allow_idms(idms)})
    gw.start()

    class World:
        pass
    w = World()
    w.idms, w.gw, w.pki, w.dev, w.dir = idms, gw, pki, dev, tmp_path
    w.plain = f"http://127.0.0.1:{gw.proxy_port}"
    w.tls = f"https://127.0.0.1:{gw.listen_port('proxy_tls')}"
    yield w
    gw.stop()
    idms.close()
    gw.assert_no_sanitizer_report()
    assert_no_secrets_anywhere(w)


def assert_no_secrets_anywhere(w):
    """Neither the gateway's log nor anything mcx-login printed holds a
    secret the IdMS issued or received (codes, tokens, verifier, state,
    nonce), nor the password."""
    secrets = {s for s in w.idms.secrets if len(s) >= 8}
    texts = {"mcgw log": w.gw.text, **getattr(w, "outputs", {})}
    for name, text in texts.items():
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{len(leaked)} secret(s) in {name}"
        assert "correct horse battery staple" not in text, f"password in {name}"


def run(w, proxy, *extra, label, **kw):
    p = mcx_login(proxy, w.idms, w.pki, w.dir, *extra, **kw)
    w.outputs = getattr(w, "outputs", {})
    w.outputs[label] = p.stdout + p.stderr
    return p


def check_login(w, res, proto, transport):
    assert res["subject"] == "officer-7"
    assert res["mcptt_id"] == "sip:officer-7@mcptt.mc.test"
    assert res["mcdata_id"] == "sip:officer-7@mcdata.mc.test"
    assert res["transport"] == transport
    # One tunnel per request: discovery, JWKS, the authorization endpoint and
    # its pages, the token endpoint - each its own CONNECT.
    closed = w.gw.wait_log(lambda r: len(tunnels_closed(w.gw)) >= res["tunnels"], 10,
                           "every tunnel closed") and tunnels_closed(w.gw)
    assert len(closed) == res["tunnels"] >= 5
    assert all(r["proto"] == proto and r["result"] == "ok" for r in closed), closed
    targets = [r["target"] for r in closed]
    authz = f"127.0.0.2:{w.idms.authz_port}"
    token = f"127.0.0.3:{w.idms.token_port}"
    assert targets.count(token) == 1 and targets[-1] == token, targets
    assert set(targets) == {authz, token}
    # No inspection: what the gateway relayed, per tunnel and in both
    # directions, is byte for byte what the device's TLS layer wrote and read.
    assert [(r["target"], r["bytes_up"], r["bytes_down"]) for r in closed] == \
        [(t["target"], t["tls_bytes_sent"], t["tls_bytes_received"]) for t in res["tunnel_log"]]
    return closed


def test_http1_plain_listener(world):
    p = run(world, world.plain, label="plain")
    res = result_of(p)
    closed = check_login(world, res, "h1", "http/1.1")
    assert all(r["subject"] == "-" for r in closed)
    # The story on stderr names each endpoint reached, never a query string.
    assert "/token (tunnel" in p.stderr and "?" not in p.stderr


def test_http1_tls_listener_with_device_certificate(world):
    p = run(world, world.tls, "--proxy-cacert", world.pki.ca, "--proxy-cert",
            world.dev["cert"], "--proxy-key", world.dev["key"], label="tls")
    res = result_of(p)
    closed = check_login(world, res, "h1", "http/1.1")
    # The gateway recorded the device certificate's subject with each tunnel.
    assert all("mcx-device-1" in r["subject"] for r in closed), closed


def test_tls_listener_refuses_a_device_without_certificate(world):
    p = run(world, world.tls, "--proxy-cacert", world.pki.ca, label="nocert")
    assert p.returncode == 1
    assert "mcx-login: discovery https://127.0.0.2:" in p.stderr
    assert "proxy 127.0.0.1:" in p.stderr, p.stderr


def test_tls_proxy_certificate_is_verified(world):
    """The device verifies the gateway's certificate too: against the wrong
    trust anchor the login stops before any CONNECT."""
    p = run(world, world.tls, "--proxy-cacert", world.pki.other_ca, "--proxy-cert",
            world.dev["cert"], "--proxy-key", world.dev["key"], label="badproxyca")
    assert p.returncode == 1
    assert "certificate verification failed: certificate of proxy 127.0.0.1:" in p.stderr, p.stderr
    assert tunnels_closed(world.gw) == []


def test_http2_prior_knowledge_on_plain_listener(world):
    res = result_of(run(world, world.plain, "--h2", label="h2c"))
    check_login(world, res, "h2", "h2")


def test_http2_on_tls_listener(world):
    res = result_of(run(world, world.tls, "--h2", "--proxy-cacert", world.pki.ca,
                        "--proxy-cert", world.dev["cert"], "--proxy-key", world.dev["key"],
                        label="h2tls"))
    closed = check_login(world, res, "h2", "h2")
    assert all("mcx-device-1" in r["subject"] for r in closed), closed


def test_refused_target_is_a_clear_error(world, tmp_path):
    """A gateway that does not allow the IdMS: the device says so."""
    gw = Gateway(tmp_path / "gw2", None, tunnel={"require_tls": "yes",
                                                 "allow": "127.0.0.9:443"}).start()
    try:
        p = run(world, f"http://127.0.0.1:{gw.proxy_port}", label="refused")
        assert p.returncode == 1
        assert f"CONNECT 127.0.0.2:{world.idms.authz_port} refused with status 403" in p.stderr
    finally:
        gw.stop()


def test_proxy_key_mode_is_checked(world, tmp_path):
    """--proxy-key must be 0600 or stricter, as --help says: refused before
    any connection to the gateway."""
    loose = tmp_path / "loose.key"
    loose.write_bytes(world.dev["key"].read_bytes())
    loose.chmod(0o640)
    p = run(world, world.tls, "--proxy-cacert", world.pki.ca, "--proxy-cert", world.dev["cert"],
            "--proxy-key", loose, label="key-mode")
    assert p.returncode == 1
    assert "accessible by group or others (mode 0640); it must be 0600 or stricter" in p.stderr
    assert tunnels_closed(world.gw) == []


def test_password_file_mode_is_checked(world, tmp_path):
    (tmp_path / "loose").mkdir()
    pw = password_file(tmp_path / "loose", mode=0o644)
    p = run(world, world.plain, password=pw, label="mode")
    assert p.returncode == 1
    assert "accessible by group or others (mode 0644); it must be 0600 or stricter" in p.stderr
    assert tunnels_closed(world.gw) == []


def test_usage_errors_exit_2(world):
    p = run(world, world.plain, "--bogus", label="usage")
    assert p.returncode == 2 and "unknown option '--bogus'" in p.stderr
    # The proxy options' checks (device/proxy_opts.c, shared with mcx-media).
    p = run(world, world.tls, "--proxy-cert", world.dev["cert"], label="cert-only")
    assert p.returncode == 2 and "--proxy-cert and --proxy-key go together" in p.stderr
    p = run(world, world.plain, "--proxy-cacert", world.pki.ca, label="cacert-plain")
    assert p.returncode == 2 and "need an https:// proxy" in p.stderr, p.stderr
    import subprocess
    h = subprocess.run([str(e2etest.MCX_LOGIN), "--help"], capture_output=True, text=True,
                       timeout=10)
    assert h.returncode == 0
    for opt in ("--proxy", "--h2", "--proxy-cert", "--redirect-uri", "--user", "--json"):
        assert opt in h.stdout


def test_text_output_names_the_service_ids(world):
    p = run(world, world.plain, json_out=False, label="text")
    assert p.returncode == 0, p.stderr
    assert "MCPTT ID:   sip:officer-7@mcptt.mc.test" in p.stdout
    assert "MCData ID:  sip:officer-7@mcdata.mc.test" in p.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(p.stdout)
