"""Behaviour the real provider cannot be made to show on demand, against a
scripted HTTPS IdMS: 503 with Retry-After, chunked bodies, the body size cap,
a corrupt state file. (The oidc-provider tests cover the protocol itself.)"""

import http.server
import json
import os
import ssl
import threading
import time

import pytest

from idmtest import CLIENT_ID, env, pki, wait_until  # noqa: F401

pytestmark = pytest.mark.timeout(60)


class FakeIdms:
    """Discovery (chunked), a JWKS (optionally oversized) and a token
    endpoint that always answers 503 with Retry-After."""

    def __init__(self, pki, retry_after=3, jwks_size=0):
        self.token_posts = []
        handler = self._handler(retry_after, jwks_size)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.cert, pki.key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.issuer = f"https://127.0.0.2:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self, retry_after, jwks_size):
        fake = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path == "/.well-known/openid-configuration":
                    doc = json.dumps({"issuer": fake.issuer,
                                      "authorization_endpoint": fake.issuer + "/auth",
                                      "token_endpoint": fake.issuer + "/token",
                                      "jwks_uri": fake.issuer + "/jwks"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(doc), 17):
                        part = doc[i:i + 17]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                elif self.path == "/jwks":
                    body = json.dumps({"keys": [], "pad": "x" * jwks_size}).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                fake.token_posts.append((time.monotonic(), self.rfile.read(n)))
                body = b'{"error":"temporarily_unavailable"}'
                self.send_response(503)
                self.send_header("Retry-After", str(retry_after))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return H

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def stored_login(state_dir, issuer, refresh_token):
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    f = state_dir / "idm-login.json"
    f.write_text(json.dumps({"version": 1, "issuer": issuer, "client_id": CLIENT_ID,
                             "refresh_token": refresh_token, "subject": "officer-7",
                             "aud": [CLIENT_ID]}))
    os.chmod(f, 0o600)


def test_503_retry_after_is_honoured(env, pki, tmp_path):
    fake = FakeIdms(pki, retry_after=3)
    try:
        state = tmp_path / "state"
        stored_login(state, fake.issuer, "stored-refresh-token-0123456789")
        env.extra_secrets.add("stored-refresh-token-0123456789")
        from idmtest import Gateway, idm_section
        gw = Gateway(tmp_path / "gw", idm_section(fake, pki), state_dir=state)
        env.gateways.append(gw)
        gw.start()
        gw.msg("idm_discovered", timeout=15)  # a chunked discovery document
        first = gw.msg("idm_refresh_failed", timeout=15, attempt=1)
        assert "HTTP 503" in first["error"]
        assert first["retry_in_ms"] >= 3000  # Retry-After beats the 1 s backoff
        wait_until(lambda: len(fake.token_posts) >= 2, 15, "the retry")
        gap = fake.token_posts[1][0] - fake.token_posts[0][0]
        assert gap >= 2.9, gap
        st = gw.wait_state("error")
        assert "503" in st["last_error"]
        # The stored refresh token was sent, never logged.
        assert b"stored-refresh-token-0123456789" in fake.token_posts[0][1]
    finally:
        fake.close()


def test_oversized_jwks_is_refused(env, pki, tmp_path):
    fake = FakeIdms(pki, jwks_size=300 * 1024)
    try:
        from idmtest import Gateway, idm_section
        gw = Gateway(tmp_path / "gw", idm_section(fake, pki))
        env.gateways.append(gw)
        gw.start()
        rec = gw.msg("idm_jwks_failed", timeout=15)
        assert "too large" in rec["error"]
    finally:
        fake.close()


def test_corrupt_state_file_is_kept_aside(env, pki, tmp_path):
    fake = FakeIdms(pki)
    try:
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        (state / "idm-login.json").write_text('{"version": 1, "issuer": tru')
        from idmtest import Gateway, idm_section
        gw = Gateway(tmp_path / "gw", idm_section(fake, pki), state_dir=state)
        env.gateways.append(gw)
        gw.start()
        rec = gw.msg("idm_state_corrupt")
        assert "kept as" in rec["error"] and ".corrupt-" in rec["error"]
        kept = [p for p in state.iterdir() if ".corrupt-" in p.name]
        assert len(kept) == 1 and kept[0].read_text() == '{"version": 1, "issuer": tru'
        st = gw.wait_state("unauthorized")
        assert "stored login unusable" in st["last_error"]
    finally:
        fake.close()
