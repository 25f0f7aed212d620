"""The admin token: required off loopback, checked by mcgw check, enforced
with 401 on every data endpoint, never logged."""

import os

import pytest

from opsutil import base_config, gateway_factory, run_cli, upstream  # noqa: F401

TOKEN = "6f1c0d2e9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b"


def write_token(path, token=TOKEN, mode=0o600):
    path.write_text(token + "\n")
    os.chmod(path, mode)
    return path


@pytest.mark.timeout(60)
def test_non_loopback_admin_needs_token_file(tmp_path):
    cfg = tmp_path / "mcgw.ini"
    sections = base_config(admin_listen="0.0.0.0:0")
    from opsutil import render_config
    cfg.write_text(render_config(sections))
    r = run_cli("check", "-c", cfg)
    assert r.returncode == 1
    assert f"{cfg}:6: listen: 0.0.0.0:0 is not a loopback address, so the admin API needs a token" \
        in r.stderr, r.stderr

    loose = write_token(tmp_path / "token", mode=0o644)
    sections["admin"].append(("admin_token_file", loose))
    cfg.write_text(render_config(sections))
    r = run_cli("check", "-c", cfg)
    assert r.returncode == 1
    assert f"admin_token_file: {loose} is accessible by group or others (mode 0644): chmod 600" \
        in r.stderr, r.stderr
    assert TOKEN not in r.stderr + r.stdout

    os.chmod(loose, 0o600)
    r = run_cli("check", "-c", cfg)
    assert r.returncode == 0, r.stderr

    write_token(loose, "short")
    r = run_cli("check", "-c", cfg)
    assert r.returncode == 1 and "token shorter than 16 characters" in r.stderr


@pytest.mark.timeout(60)
def test_non_loopback_admin_answers_401_without_token(gateway_factory, tmp_path):
    # The rule is about the configured bind address: 0.0.0.0 is every
    # interface, so a token is required even when we come in over loopback.
    token_file = write_token(tmp_path / "admin.token")
    gw = gateway_factory(base_config(admin_listen="0.0.0.0:0",
                                     extra_admin=[("admin_token_file", "admin.token")]))
    for path in ("/metrics", "/status", "/tunnels", "/nonexistent"):
        status, headers, body = gw.get(path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = gw.get(path, token="wrong-" + TOKEN)
        assert status == 401, path
        status, _, _ = gw.get(path, token=TOKEN[:-1])
        assert status == 401, path
    assert gw.get("/metrics", token=TOKEN)[0] == 200
    assert gw.get("/status", token=TOKEN)[0] == 200
    assert gw.get("/tunnels", token=TOKEN)[0] == 200
    assert gw.get("/nonexistent", token=TOKEN)[0] == 404
    # Liveness and the page's static files carry no figures.
    assert gw.get("/healthz")[0] == 200
    assert gw.get("/")[0] == 200
    assert gw.get("/app.js")[0] == 200

    # The CLI takes the address and token from a config (-c; the running one
    # has port 0, so a copy names the port it got) or --token-file.
    cli_cfg = tmp_path / "cli.ini"
    cli_cfg.write_text(gw.config_path.read_text().replace("0.0.0.0:0", f"0.0.0.0:{gw.admin_port}"))
    r = run_cli("status", "-c", cli_cfg)
    assert r.returncode == 0, r.stderr
    r = run_cli("status", "--admin", gw.admin_url)
    assert r.returncode == 1 and "answered 401" in r.stderr
    r = run_cli("status", "--admin", gw.admin_url, "--token-file", token_file)
    assert r.returncode == 0, r.stderr

    unauthorized = [r for r in gw.log_records() if r.get("msg") == "admin_unauthorized"]
    assert unauthorized, "401s are logged"
    assert TOKEN not in gw.text and TOKEN[:-1] not in gw.text


@pytest.mark.timeout(60)
def test_loopback_admin_needs_no_token(gateway_factory):
    gw = gateway_factory(base_config())
    assert gw.get("/status")[0] == 200
    assert gw.get("/metrics")[0] == 200
