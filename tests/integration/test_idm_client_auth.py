"""Client authentication at the token endpoint: client_secret_basic and
private_key_jwt against oidc-provider; `mcgw check` on secret file modes."""

import os
import subprocess

import pytest

from idmtest import BIN, env, native_client, pki, require_idms, render, wait_until  # noqa: F401

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def login_ok(env, gw):
    gw.msg("idm_discovered", timeout=20)
    status, _, page = env.browser().login(gw.admin_url + "/login")
    assert status == 200, page
    return gw.wait_state("authorized")


def test_client_secret_basic(env, tmp_path):
    secret = "mcgw-test-client-secret-7f3a9c"
    env.extra_secrets.add(secret)
    path = tmp_path / "idm-secret"
    path.write_text(secret + "\n")
    os.chmod(path, 0o600)
    idms = env.idms(clients=[native_client(token_endpoint_auth_method="client_secret_basic",
                                           client_secret=secret)])
    gw = env.gateway(idms, idm={"client_auth": "client_secret_basic",
                                "client_secret_file": str(path)})
    assert login_ok(env, gw)["subject"] == "officer-7"
    # In the Authorization header, never in the form body.
    assert "client_secret" not in idms.kinds


def test_client_secret_post(env, tmp_path):
    """The secret in the token request's form body (RFC 6749 2.3.1): the
    test IdMS reports every client_secret it finds among the request's
    parameters (the form body; never the Authorization header), so seeing
    ours there - for the code exchange and for a refresh - proves the
    method; client_secret_basic below never puts it there."""
    secret = "mcgw-test-post-secret-41c8d2"
    env.extra_secrets.add(secret)
    path = tmp_path / "idm-secret"
    path.write_text(secret + "\n")
    os.chmod(path, 0o600)
    idms = env.idms(access_ttl=4, clients=[native_client(
        token_endpoint_auth_method="client_secret_post", client_secret=secret)])
    gw = env.gateway(idms, idm={"client_auth": "client_secret_post",
                                "client_secret_file": str(path), "refresh_before": "2s"})
    assert login_ok(env, gw)["subject"] == "officer-7"
    wait_until(lambda: ("client_secret", secret) in idms.secret_kinds, 10,
               "the IdMS to report the secret from the form body")
    gw.msg("idm_refreshed", via="refresh", timeout=15)  # a second token request, same method
    assert gw.idm_status()["refreshes"]["ok"] >= 1


def test_private_key_jwt(env, tmp_path):
    key = tmp_path / "client.key"
    pub = tmp_path / "client.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(key)], check=True, timeout=30)
    os.chmod(key, 0o600)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)],
                   check=True, timeout=30)
    idms = env.idms(clients=[native_client(token_endpoint_auth_method="private_key_jwt",
                                           token_endpoint_auth_signing_alg="ES256",
                                           key_pem=str(pub))])
    gw = env.gateway(idms, idm={"client_auth": "private_key_jwt", "client_key": str(key)})
    assert login_ok(env, gw)["subject"] == "officer-7"


def test_check_refuses_a_readable_secret_file(tmp_path):
    secret = tmp_path / "idm-secret"
    secret.write_text("s3cr3t-value\n")
    os.chmod(secret, 0o644)
    cfg = tmp_path / "mcgw.ini"
    cfg.write_text(render({
        "tunnel": {"listen": "127.0.0.1:0"},
        "idm": {"issuer": "https://idms.mc.test", "client_id": "mcgw-17",
                "client_auth": "client_secret_basic", "client_secret_file": str(secret)}}))
    p = subprocess.run([str(BIN), "check", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1
    assert f"{cfg}:8: client_secret_file: '{secret}' is accessible by group or others " \
           f"(mode 0644)" in p.stderr
    assert "s3cr3t-value" not in p.stdout + p.stderr
    os.chmod(secret, 0o600)
    p = subprocess.run([str(BIN), "check", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr
