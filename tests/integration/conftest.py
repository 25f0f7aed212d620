"""Fixtures for mcgw's integration tests (helpers live in mcgwtest.py)."""

import pytest

import mcgwtest
from mcgwtest import BIN, Mcgw, Upstream


@pytest.fixture(scope="session")
def mcgw_bin():
    if not BIN.is_file():
        pytest.fail(f"mcgw binary not found at {BIN}: build it first (make build) "
                    "or set MCGW_BIN")
    return BIN


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    mcgwtest.require_tool("openssl")
    return mcgwtest.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def upstream():
    """upstream(handler, ssl_context=None, host="127.0.0.1") -> a started
    Upstream; closed at teardown."""
    servers = []

    def start(handler, ssl_context=None, host="127.0.0.1"):
        server = Upstream(handler, ssl_context, host)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def echo(upstream):
    return upstream(mcgwtest.echo_handler)


@pytest.fixture
def tls_upstream(upstream, pki):
    """A TLS server (certificate for localhost/127.0.0.1 from the test CA)
    answering one HTTP request with 200 and mcgwtest.UPSTREAM_BODY."""
    return upstream(mcgwtest.http_handler, pki.server_context())


@pytest.fixture
def mcgw(mcgw_bin, tmp_path):
    """mcgw(**tunnel_keys, gateway={...}, admin={...}, extra={section: {...}})
    -> a started, ready Mcgw.

    Keyword arguments are [tunnel] keys (lists for repeated keys, None to drop
    a default). Teardown stops every daemon and fails on a sanitizer report."""
    daemons = []

    def start(gateway=None, admin=None, extra=None, **tunnel):
        daemon = Mcgw(tmp_path / f"mcgw{len(daemons)}", tunnel=tunnel,
                      gateway=gateway, admin=admin, extra=extra)
        daemons.append(daemon)
        return daemon.start()

    yield start
    for daemon in daemons:
        daemon.stop()
    for daemon in daemons:
        daemon.assert_no_sanitizer_report()
