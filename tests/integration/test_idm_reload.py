"""SIGHUP applies a changed [idm] without a restart (issue 16): a new client
or issuer logs the old login out (revoked at its IdMS) and starts the new
configuration, whose login flow works and which never reuses the old stored
login; a change of refresh_before alone is applied in place, the login kept;
a bad [idm] rejects the whole reload."""

import re
import signal

import pytest

from idmtest import CLIENT_ID, env, native_client, pki, read_state, require_idms  # noqa: F401
from test_idm_logout import login, refresh_error

pytestmark = pytest.mark.timeout(150)

OTHER_CLIENT = "mcgw-vehicle-18"


@pytest.fixture(autouse=True)
def _idms_installed():
    require_idms()


def edit_config(gw, **keys):
    """Sets [idm] keys (all [idm] keys have unique names in the file)."""
    text = gw.config_path.read_text()
    for k, v in keys.items():
        text, n = re.subn(rf"^{k} = .*$", f"{k} = {v}", text, flags=re.M)
        if n == 0:
            text = text.replace("[idm]\n", f"[idm]\n{k} = {v}\n")
    gw.config_path.write_text(text)


def reload(gw):
    since = len(gw.records)
    gw.send_signal(signal.SIGHUP)
    return gw.wait_log(lambda r: r.get("msg") in ("reloaded", "reload_failed"), 10,
                       "the reload's outcome", since=since)


def no_token_request_since(gw, since):
    return not any(r.get("msg") == "idm_http" and r.get("method") == "POST"
                   for r in gw.records[since:])


def test_new_client_logs_the_old_login_out(env, pki):
    idms = env.idms(access_ttl=60, clients=[native_client(),
                                            native_client(client_id=OTHER_CLIENT)])
    gw = env.gateway(idms)
    login(env, gw)
    old_token = read_state(gw)["refresh_token"]
    edit_config(gw, client_id=OTHER_CLIENT)
    since = len(gw.records)  # before the signal: the reload logs all at once
    assert reload(gw)["msg"] == "reloaded"
    rec = gw.msg("idm_reloaded")
    assert rec["change"] == "old login logged out; new configuration"
    assert gw.msg("idm_logout")["revoked"] == "yes"
    assert refresh_error(idms, pki, old_token) == "invalid_grant"  # revoked at the IdMS
    st = gw.wait_state("unauthorized")
    assert st["subject"] is None
    starting = gw.msg("idm_starting", since=since)
    assert starting["client_id"] == OTHER_CLIENT and starting["stored_login"] == "no"
    gw.msg("idm_discovered", since=since, timeout=20)
    # The new configuration's login flow works, for the new client.
    st = login(env, gw, user="crew-b")
    assert st["subject"] == "crew-b"
    stored = read_state(gw)
    assert stored["client_id"] == OTHER_CLIENT and stored["subject"] == "crew-b"


def test_new_issuer_logs_the_old_login_out(env, pki):
    old_idms = env.idms(access_ttl=60)
    new_idms = env.idms(access_ttl=60)
    gw = env.gateway(old_idms)
    login(env, gw)
    old_token = read_state(gw)["refresh_token"]
    edit_config(gw, issuer=new_idms.issuer)
    since = len(gw.records)
    assert reload(gw)["msg"] == "reloaded"
    assert gw.msg("idm_logout")["revoked"] == "yes"
    assert refresh_error(old_idms, pki, old_token) == "invalid_grant"
    gw.msg("idm_discovered", issuer=new_idms.issuer, timeout=20)
    st = login(env, gw, user="crew-b")
    assert st["subject"] == "crew-b"
    assert read_state(gw)["issuer"] == new_idms.issuer
    # The old login's revocation went to the old IdMS; the new login to the
    # new IdMS's token endpoint only.
    revocations = [r["url"] for r in gw.records[since:] if r.get("msg") == "idm_http"
                   and r["url"].endswith("/token/revocation")]
    assert revocations == [f"{old_idms.issuer}/token/revocation"], revocations
    urls = [r["url"] for r in gw.records[since:] if r.get("msg") == "idm_http"
            and r.get("method") == "POST" and r["url"].endswith("/token")]
    assert urls and all(f":{new_idms.token_port}/" in u for u in urls), urls


def test_stored_login_for_another_client_is_never_reused(env):
    idms = env.idms(access_ttl=60, clients=[native_client(),
                                            native_client(client_id=OTHER_CLIENT)])
    first = env.gateway(idms)
    login(env, first)
    first.stop()
    second = env.gateway(idms, state_dir=first.state_dir, idm={"client_id": OTHER_CLIENT})
    second.msg("idm_state_ignored")
    second.msg("idm_discovered", timeout=20)
    second.wait_state("unauthorized")
    assert no_token_request_since(second, 0)


def test_refresh_before_applied_in_place(env):
    idms = env.idms(access_ttl=60)
    gw = env.gateway(idms, idm={"refresh_before": "2s"})
    login(env, gw)
    token = read_state(gw)["refresh_token"]
    edit_config(gw, refresh_before="30s")
    assert reload(gw)["msg"] == "reloaded"
    assert gw.msg("idm_reloaded")["change"] == "refresh_before applied in place"
    # The login is kept; its next refresh is rescheduled 30 s ahead of the
    # token's expiry (it was 2 s ahead: 58 s after the login).
    rec = gw.msg("idm_refresh_scheduled")
    assert rec["refresh_before_ms"] == 30000 and 27000 <= rec["in_ms"] <= 30000, rec
    assert gw.count("idm_logout") == 0 and gw.count("idm_starting") == 1
    st = gw.idm_status()
    assert st["state"] == "authorized" and st["subject"] == "officer-7"
    assert read_state(gw)["refresh_token"] == token


def test_bad_idm_rejects_the_whole_reload(env):
    idms = env.idms(access_ttl=60)
    gw = env.gateway(idms)
    login(env, gw)
    token = read_state(gw)["refresh_token"]
    edit_config(gw, client_id="", refresh_before="5s")
    rec = reload(gw)
    assert rec["msg"] == "reload_failed", rec
    assert gw.count("idm_reloaded") == 0 and gw.count("idm_logout") == 0
    st = gw.idm_status()
    assert st["state"] in ("authorized", "refreshing") and st["subject"] == "officer-7"
    assert read_state(gw)["refresh_token"] == token
    assert gw.status()["reloads"]["last_ok"] is False


def test_idm_removed_logs_out(env, pki):
    """[idm] taken out: the login is logged out (revoked), the gateway says
    it now performs no identity management, its login routes answer 404."""
    idms = env.idms(access_ttl=60)
    gw = env.gateway(idms)
    login(env, gw)
    old_token = read_state(gw)["refresh_token"]
    text = gw.config_path.read_text()
    gw.config_path.write_text(text[:text.index("[idm]")])
    assert reload(gw)["msg"] == "reloaded"
    assert gw.msg("idm_logout")["revoked"] == "yes"
    assert gw.msg("no_idm")["level"] == "warn"
    assert refresh_error(idms, pki, old_token) == "invalid_grant"
    assert gw.idm_status()["state"] == "unconfigured"
    assert not (gw.state_dir / "idm-login.json").exists()
    assert gw.admin("/login")[0] == 404


def test_other_idm_key_restarts_with_the_stored_login(env):
    """A key that is neither identity nor timing (here acr_values): a new
    instance with the same issuer and client, which logs in again from the
    stored refresh token - no logout, no operator."""
    idms = env.idms(access_ttl=60)
    gw = env.gateway(idms)
    login(env, gw)
    edit_config(gw, acr_values="")
    since = len(gw.records)
    assert reload(gw)["msg"] == "reloaded"
    assert gw.msg("idm_reloaded")["change"] == "restarted with the stored login"
    assert gw.msg("idm_starting", since=since)["stored_login"] == "yes"
    gw.msg("idm_refreshed", via="refresh", since=since, timeout=20)
    st = gw.wait_state("authorized")
    assert st["subject"] == "officer-7" and gw.count("idm_logout") == 0
