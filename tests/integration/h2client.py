"""An HTTP/2 CONNECT client on python3-h2 for the integration tests, and the
device-side PKI (device certificates valid, expired, or from another CA).

The client multiplexes many CONNECT streams on one connection and drives
them from one thread with explicit flow control, so tests can hold a
stream's window closed (a slow reader) while others run at full speed."""

import hashlib
import select
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings

import mcgwtest

RECV_WINDOW = 4 * 1024 * 1024  # what this client lets each stream have in flight


@dataclass
class Stream:
    sid: int
    status: int = None
    headers: dict = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    received: int = 0
    digest: object = field(default_factory=hashlib.sha256)
    keep_body: bool = True
    ended: bool = False          # END_STREAM received
    reset_code: int = None       # RST_STREAM received (or sent by us)
    to_send: bytearray = field(default_factory=bytearray)
    end_after_send: bool = False
    sent_end: bool = False
    hold_window: bool = False    # do not acknowledge received data (a slow reader)
    unacked: int = 0

    @property
    def sha256(self):
        return self.digest.hexdigest()

    @property
    def done_receiving(self):
        return self.ended or self.reset_code is not None


class H2Client:
    def __init__(self, port, context=None, server_hostname="localhost", timeout=60, source=None):
        """source: the local address to connect from (another client IP)."""
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                       source_address=(source, 0) if source else None)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            context.set_alpn_protocols(["h2"])
            raw = context.wrap_socket(raw, server_hostname=server_hostname)
            assert raw.selected_alpn_protocol() == "h2", raw.selected_alpn_protocol()
        self.sock = raw
        self.sock.setblocking(False)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                           validate_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECV_WINDOW})
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(256 * 1024 * 1024)
        self.streams = {}
        self.goaway = None
        self.closed = False
        self.remote_settings_seen = False
        self._out = bytearray()
        self.flush()

    # ---- requests

    def connect(self, authority, extra=(), end_stream=False, keep_body=True):
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", "CONNECT"), (":authority", authority), *extra]
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.streams[sid] = Stream(sid, keep_body=keep_body, sent_end=end_stream)
        self.flush()
        return self.streams[sid]

    def send(self, stream, data, end=False):
        stream.to_send += data
        stream.end_after_send = stream.end_after_send or end
        self.pump_once(0)

    def end(self, stream):
        self.send(stream, b"", end=True)

    def reset(self, stream, code=h2.errors.ErrorCodes.CANCEL):
        self.conn.reset_stream(stream.sid, code)
        stream.reset_code = code
        stream.to_send.clear()
        self.flush()

    def release(self, stream):
        """Let a held stream's window open again."""
        stream.hold_window = False
        if stream.unacked and not stream.done_receiving:
            self.conn.acknowledge_received_data(stream.unacked, stream.sid)
        stream.unacked = 0
        self.flush()

    # ---- I/O

    def flush(self):
        self._out += self.conn.data_to_send()
        while self._out:
            try:
                n = self.sock.send(self._out)
            except (BlockingIOError, ssl.SSLWantWriteError):
                return
            except (BrokenPipeError, ConnectionResetError):
                self.closed = True
                self._out.clear()
                return
            del self._out[:n]

    def _send_pending(self):
        for s in self.streams.values():
            if s.reset_code is not None or s.sent_end or s.status != 200:
                continue
            while s.to_send:
                window = min(self.conn.local_flow_control_window(s.sid),
                             self.conn.max_outbound_frame_size)
                if window <= 0 or len(self._out) > 1 << 20:
                    break
                chunk = bytes(s.to_send[:window])
                del s.to_send[:window]
                self.conn.send_data(s.sid, chunk)
                self._out += self.conn.data_to_send()
            if not s.to_send and s.end_after_send and not s.sent_end:
                self.conn.end_stream(s.sid)
                s.sent_end = True
        self.flush()

    def _recv(self):
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.conn.receive_data(data):
            self._on_event(event)
        self.flush()

    def _on_event(self, ev):
        s = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived):
            s.headers = dict(ev.headers)
            s.status = int(s.headers[":status"])
        elif isinstance(ev, h2.events.DataReceived):
            s.received += len(ev.data)
            s.digest.update(ev.data)
            if s.keep_body:
                s.body += ev.data
            if s.hold_window:
                s.unacked += ev.flow_controlled_length
            elif ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            s.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if s is not None:
                s.reset_code = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
            # python-h2 4.1 closes its state machine on GOAWAY, but RFC 9113
            # 6.8 lets streams up to last_stream_id finish: keep following
            # them, as a conforming client does.
            self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.remote_settings_seen = True

    def pump_once(self, wait):
        self._send_pending()
        want_write = bool(self._out)
        r, w, _ = select.select([self.sock], [self.sock] if want_write else [], [], wait)
        if r or (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            self._recv()
        self._send_pending()

    def pump(self, until, timeout=60, what="condition"):
        deadline = time.monotonic() + timeout
        while not until():
            if self.closed and not until():
                raise AssertionError(f"connection closed before {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.pump_once(0.05)

    def all_sent(self, streams):
        return all(not s.to_send and (s.sent_end or not s.end_after_send) or s.reset_code is not None
                   for s in streams)

    def finish(self, streams, timeout=120):
        """Pumps until every stream has sent what it was given and received
        END_STREAM (or was reset)."""
        self.pump(lambda: self.all_sent(streams) and all(s.done_receiving for s in streams),
                  timeout, f"{len(streams)} stream(s) to finish both ways")

    def wait_response(self, stream, timeout=30):
        self.pump(lambda: stream.status is not None or stream.reset_code is not None,
                  timeout, f"a response on stream {stream.sid}")
        return stream

    def close(self):
        try:
            self.conn.close_connection()
            self.flush()
        except Exception:
            pass
        self.sock.close()


# ---------------------------------------------------------------- device PKI


@dataclass
class DevicePki:
    ca_cert: Path          # devices' CA: what client_ca names
    cert: Path             # a valid device certificate
    key: Path
    expired_cert: Path
    expired_key: Path
    stranger_cert: Path    # signed by an unrelated CA
    stranger_key: Path
    subject: str

    def context(self, server_ca, cert=None, key=None):
        ctx = ssl.create_default_context(cafile=str(server_ca))
        if cert:
            ctx.load_cert_chain(str(cert), str(key))
        return ctx


def _device(directory, name, cn, ca, days):
    mcgwtest._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                      "-subj", f"/O=Fire Brigade/CN={cn}", cwd=directory)
    (directory / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n")
    # days=-1 makes a certificate that expired before it began.
    mcgwtest._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey",
                      f"{ca}.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", str(days),
                      "-extfile", f"{name}.ext", cwd=directory)
    return directory / f"{name}.crt", directory / f"{name}.key"


def make_device_pki(directory):
    directory = Path(directory)
    ca = mcgwtest._make_ca(directory, "devices-ca", "mcgw test device CA")
    mcgwtest._make_ca(directory, "stranger-ca", "some other CA")
    cert, key = _device(directory, "radio-17", "radio-17", "devices-ca", 2)
    exp_cert, exp_key = _device(directory, "expired", "radio-old", "devices-ca", -1)
    str_cert, str_key = _device(directory, "stranger", "radio-17", "stranger-ca", 2)
    return DevicePki(ca, cert, key, exp_cert, exp_key, str_cert, str_key,
                     "CN=radio-17,O=Fire Brigade")
