"""Allow rules that open far more than they seem to (issue 18): a wildcard
on a public suffix (decided by libpsl, the Public Suffix List) is refused by
`mcgw check` and at reload, unless allow_public_suffix = yes, which is
warned about at every start; wildcards and prefixes on any port, and
prefixes wider than /16 (IPv4) or /48 (IPv6), get a warning naming what
they open. rate_exempt = * is warned about too."""

import re
import signal
import textwrap

import pytest

from mcgwtest import run_cli

HEAD = """\
[admin]
listen = 127.0.0.1:0
[tunnel]
listen = 127.0.0.1:0
"""
# An [idm] section after the rules, so that `mcgw check` has no "no [idm]"
# warning to give (test_idm_none.py) and prints only what the rules earn.
IDM = """\
[idm]
issuer = https://127.0.0.2:8443
client_id = mcgw-1
"""


def check(tmp_path, body):
    """(exit code, output, path) of `mcgw check` on HEAD + body; body's
    first line is line 5 of the file."""
    path = tmp_path / "mcgw.ini"
    path.write_text(HEAD + textwrap.dedent(body) + IDM)
    rc, out = run_cli("check", "-c", path)
    return rc, out, path


def lines_of(out, path, warning):
    """{line: message} of the FILE:LINE: errors (or warnings) for path."""
    tag = "warning: " if warning else ""
    found = {}
    for m in re.finditer(rf"^{re.escape(str(path))}:(\d+): (.+)$", out, re.M):
        if m.group(2).startswith("warning: ") == warning:
            found[int(m.group(1))] = m.group(2)[len(tag):]
    return found


@pytest.mark.timeout(30)
def test_public_suffix_wildcards_refused_with_file_line(tmp_path):
    rc, out, path = check(tmp_path, """\
        allow = *.com:443
        allow = *.co.uk:443
        allow = *.github.io:443
        allow = *.example.org:443
        allow = *.s3.amazonaws.com:443
        """)
    assert rc == 1, out
    errors = lines_of(out, path, warning=False)
    assert set(errors) == {5, 6, 7, 9}, out  # not line 8, *.example.org
    for line, suffix in ((5, "com"), (6, "co.uk"), (7, "github.io"), (9, "s3.amazonaws.com")):
        assert f"'{suffix}' is a public suffix" in errors[line], errors[line]
        assert "allow_public_suffix = yes" in errors[line], errors[line]
    assert not lines_of(out, path, warning=True), out


@pytest.mark.timeout(30)
def test_public_suffix_override_accepted_with_warning(tmp_path):
    rc, out, path = check(tmp_path, """\
        allow = *.com:443
        allow = *.co.uk:443
        allow = *.github.io:443
        allow_public_suffix = yes
        """)
    assert rc == 0, out
    assert not lines_of(out, path, warning=False), out
    warnings = lines_of(out, path, warning=True)
    assert set(warnings) == {5, 6, 7}, out
    assert "public suffix 'co.uk'" in warnings[6], warnings


@pytest.mark.timeout(30)
def test_narrow_rules_are_silent(tmp_path):
    rc, out, path = check(tmp_path, """\
        allow = *.example.org:443
        allow = idms.example.net:*
        allow = 192.168.0.0/16:443
        allow = [2001:db8:1::/48]:443
        allow = 192.0.2.10:*
        allow = *.corp:443
        """)
    assert rc == 0, out
    assert out.strip() == f"{path}: ok", out


@pytest.mark.timeout(30)
def test_wide_rules_warned(tmp_path):
    rc, out, path = check(tmp_path, """\
        allow = *.example.org:*
        allow = 10.0.0.0/8:443
        allow = [2001:db8::/32]:443
        allow = 10.1.0.0/16:*
        rate_exempt = *
        rate_exempt = 10.9.0.0/16
        """)
    assert rc == 0, out
    assert not lines_of(out, path, warning=False), out
    w = lines_of(out, path, warning=True)
    assert set(w) == {5, 6, 7, 8, 9}, out
    assert "every port (1-65535" in w[5] and "SMTP 25" in w[5], w[5]
    assert "wider than /16" in w[6], w[6]
    assert "wider than /48" in w[7], w[7]
    assert "every port" in w[8], w[8]
    assert "rate_exempt = *" in w[9], w[9]
    assert "(with warnings)" in out


@pytest.mark.timeout(30)
def test_rate_keys_checked(tmp_path):
    rc, out, path = check(tmp_path, """\
        max_new_tunnels_per_client = 20
        max_new_upstream_per_target = fast
        new_tunnels_burst = 0
        h2_max_refused_per_connection = -1
        """)
    assert rc == 1, out
    errors = lines_of(out, path, warning=False)
    assert set(errors) == {5, 6, 7, 8}, out
    assert "expected a rate like 20/s" in errors[5], errors
    rc, out, path = check(tmp_path, """\
        max_new_tunnels_per_client = 0/s
        max_new_upstream_per_target = 1000/s
        new_tunnels_burst = 5
        h2_max_refused_per_connection = 0
        rate_exempt = CN=cam 7,O=Fire
        """)
    assert rc == 0 and out.strip() == f"{path}: ok", out


@pytest.mark.timeout(60)
def test_reload_refuses_public_suffix_and_start_warns(mcgw):
    """A running gateway: a reload adding *.com is rejected whole (the old
    rules stay); a start with allow_public_suffix = yes logs the warning."""
    gw = mcgw(allow="*.example.org:443")
    text = gw.config_path.read_text()
    gw.config_path.write_text(text.replace("allow = *.example.org:443", "allow = *.com:443"))
    gw.send_signal(signal.SIGHUP)
    rec = gw.wait_log(lambda r: r.get("msg") == "reload_failed")
    assert rec["errors"] == 1, rec
    err = gw.wait_log(lambda r: r.get("msg") == "config_error")
    assert re.search(r"mcgw\.ini:\d+: allow: '\*\.com:443': 'com' is a public suffix",
                     err["error"]), err
    gw2 = mcgw(allow="*.com:443", allow_public_suffix="yes")
    w = gw2.wait_log(lambda r: r.get("msg") == "config_warning")
    assert w["level"] == "warn" and "public suffix 'com'" in w["warning"], w
