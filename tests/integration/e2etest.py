"""Helpers for the end-to-end tests: an MC device (build/mcx-login) doing its
own CSC-1 login through mcgw to the test IdMS (oidc-provider).

Builds on idmtest (the PKI, the IdMS, the operator's browser, the gateway
process). Synchronisation is always a condition polled with a deadline.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

import idmtest
from idmtest import SRC, native_client

MCX_LOGIN = Path(os.environ.get("MCX_LOGIN_BIN", SRC / "build" / "mcx-login"))
DEVICE_CLIENT_ID = "mcx-device-1"
DEVICE_SCOPE = "openid 3gpp:mc:ptt_service 3gpp:mc:data_service"


def device_client():
    """The device's registration: a public native client, loopback redirect
    on any port (RFC 8252 7.3), code flow with PKCE only."""
    return native_client(client_id=DEVICE_CLIENT_ID, grant_types=["authorization_code"])


def idms_clients():
    return [native_client(), device_client()]


def allow_idms(idms):
    """[tunnel] allow rules for the test IdMS's two addresses."""
    return [f"127.0.0.2:{idms.authz_port}", f"127.0.0.3:{idms.token_port}"]


def device_pki(pki):
    """A device certificate (client auth) signed by the test CA, and the
    gateway's TLS listener certificate for 127.0.0.1."""
    d = pki.dir
    if not (d / "device.crt").exists():
        idmtest._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                         "-nodes", "-keyout", "device.key", "-out", "device.csr",
                         "-subj", "/CN=mcx-device-1/O=Fire Brigade", cwd=d)
        (d / "device.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                      "extendedKeyUsage=clientAuth\n")
        idmtest._openssl("x509", "-req", "-in", "device.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                         "-CAcreateserial", "-out", "device.crt", "-days", "2",
                         "-extfile", "device.ext", cwd=d)
        idmtest._leaf(d, "gateway", "IP:127.0.0.1")
        for k in ("device.key", "gateway.key"):
            os.chmod(d / k, 0o600)
    return {"cert": d / "device.crt", "key": d / "device.key",
            "gw_cert": d / "gateway.crt", "gw_key": d / "gateway.key"}


def password_file(directory, secret="correct horse battery staple", mode=0o600):
    p = Path(directory) / "password"
    p.write_text(secret + "\n")
    os.chmod(p, mode)
    return p


def mcx_login(proxy, idms, pki, workdir, *extra, user="officer-7", password=None,
              timeout=60, json_out=True):
    """Runs mcx-login; returns the CompletedProcess (stdout/stderr text)."""
    args = [str(MCX_LOGIN), "--proxy", proxy, "--issuer", idms.issuer,
            "--client-id", DEVICE_CLIENT_ID, "--scope", DEVICE_SCOPE,
            "--cacert", str(pki.ca), "-v"]
    if user:
        pw = password or password_file(workdir)
        args += ["--user", user, "--password-file", str(pw)]
    if json_out:
        args.append("--json")
    args += [str(a) for a in extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def result_of(proc):
    assert proc.returncode == 0, f"mcx-login failed ({proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout)


def tunnels_closed(gateway, since=0):
    with gateway._cond:
        return [r for r in gateway.records[since:] if r.get("msg") == "tunnel_closed"]


def wait_tunnels_closed(gateway, targets, since=0, timeout=10):
    """The access-log lines once every target in `targets` has one: the
    device may exit before the gateway has logged its last tunnel's close."""
    import mcgwtest
    mcgwtest.wait_until(lambda: set(targets) <= {r["target"] for r in tunnels_closed(gateway, since)},
                        timeout, f"tunnel_closed records for {sorted(targets)}")
    return tunnels_closed(gateway, since)


def require_binaries():
    if not MCX_LOGIN.exists():
        pytest.fail(f"{MCX_LOGIN} is not built (make build)")
    idmtest.require_idms()
