"""The command line: --help, --version and `mcgw check`."""

import re
import textwrap

import pytest

from mcgwtest import run_cli, version_from_changelog

# The spec's sample configuration, inline comments included, plus every form
# of allow rule.
GOOD_CONFIG = """\
[gateway]
log_level = debug
log_format = json        ; one JSON object per line on stderr
[admin]
listen = 127.0.0.1:0
[tunnel]
listen = 127.0.0.1:0     ; repeatable
listen = [::1]:0
allow = localhost:8443
allow = *.example.org:443
allow = idms.example.net:*
allow = 192.0.2.10:443
allow = 10.20.0.0/16:443
allow = [2001:db8::1]:443
allow_private = yes
require_tls = yes
max_tunnels = 10000
max_tunnels_per_client = 256
header_timeout = 10s
connect_timeout = 10s
idle_timeout = 30m
drain_timeout = 30s
"""


@pytest.fixture(autouse=True)
def _binary(mcgw_bin):
    return mcgw_bin


def write(tmp_path, text, name="mcgw.ini"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_lines(output, path):
    """{line number: message} of every `FILE:LINE: message` line for path."""
    found = {}
    for m in re.finditer(rf"^{re.escape(str(path))}:(\d+): (.+)$", output, re.M):
        found.setdefault(int(m.group(1)), m.group(2))
    return found


def test_help():
    rc, out = run_cli("--help")
    assert rc == 0, out
    for word in ("run", "check", "-c"):
        assert word in out, f"--help does not mention {word!r}:\n{out}"


def test_version():
    rc, out = run_cli("--version")
    assert rc == 0, out
    assert out == f"mcgw {version_from_changelog()}\n", out


def test_check_good_file(tmp_path):
    path = write(tmp_path, GOOD_CONFIG)
    rc, out = run_cli("check", "-c", path)
    assert rc == 0, out
    assert not error_lines(out, path), out


def test_check_reports_every_error(tmp_path):
    path = write(tmp_path, """\
        [gateway]
        log_level = loud
        log_format = json
        [tunnel]
        listen = 127.0.0.1:99999
        allow = *:443
        allow = localhost:443
        require_tls = maybe
        max_tunnels = lots
        header_timeout = 10
        connect_timeout = 5s
        """)
    rc, out = run_cli("check", "-c", path)
    assert rc == 1, out
    found = error_lines(out, path)
    assert set(found) == {2, 5, 6, 8, 9, 10}, f"errors reported on lines {sorted(found)}:\n{out}"


def test_check_unknown_key(tmp_path):
    path = write(tmp_path, """\
        [tunnel]
        listen = 127.0.0.1:0
        max_tunels = 5
        """)
    rc, out = run_cli("check", "-c", path)
    assert rc == 1, out
    found = error_lines(out, path)
    assert set(found) == {3}, out
    assert "max_tunels" in found[3], out


def test_check_unknown_section(tmp_path):
    path = write(tmp_path, """\
        [tunnel]
        listen = 127.0.0.1:0
        [tunel]
        allow = localhost:443
        """)
    rc, out = run_cli("check", "-c", path)
    assert rc == 1, out
    found = error_lines(out, path)
    # Reported on the section header or on the key inside it, once.
    assert len(found) == 1 and set(found) <= {3, 4}, out
    assert "tunel" in next(iter(found.values())), out


def test_check_missing_file(tmp_path):
    path = tmp_path / "nope.ini"
    rc, out = run_cli("check", "-c", path)
    assert rc == 1, out
    assert str(path) in out, out


def test_run_refuses_invalid_config(tmp_path):
    path = write(tmp_path, """\
        [tunnel]
        listen = 127.0.0.1:0
        max_tunnels = -1
        """)
    rc, out = run_cli("run", "-c", path, timeout=15)
    assert rc != 0, out
    assert f"{path}:3:" in out, out
