#!/usr/bin/python3
"""`make demo`: the whole story of mcgw in one command, on loopback.

An MC device logs in to its identity management server (IdMS) *through* the
gateway, over a TLS tunnel the gateway relays but cannot read (TS 33.180
5.1.2.1). Along the way: the gateway's own login, limited service, and the
status an operator sees.

Environment: BUILD (default ./build: mcgw, mcx-login and mcx-media), DEMO_DIR
(default $BUILD/demo: configuration, PKI, logs), DEMO_SECONDS (stop after N
seconds; default: run until Ctrl-C), DEMO_VOICE_SECONDS (the voice stream's
length, default 10).

The test IdMS, PKI and operator's browser are the integration tests' own
(tests/integration/idmtest.py), so the demo shows exactly what is tested.
"""

import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(SRC / "tests" / "integration"))
import idmtest  # noqa: E402

BUILD = Path(os.environ.get("BUILD", SRC / "build")).resolve()
DEMO_DIR = Path(os.environ.get("DEMO_DIR", BUILD / "demo")).resolve()
MCGW = BUILD / "mcgw"
MCX_LOGIN = BUILD / "mcx-login"
MCX_MEDIA = BUILD / "mcx-media"
VOICE_SECONDS = os.environ.get("DEMO_VOICE_SECONDS", "10")
DEVICE_CLIENT = "mcx-device-1"
SCOPE = "openid 3gpp:mc:ptt_service 3gpp:mc:data_service"
GATEWAY_USER = "vehicle-17"
DEVICE_USER = "officer-7"


def rel(p):
    """A path as a newcomer would type it from the source tree."""
    try:
        return str(Path(p).relative_to(SRC))
    except ValueError:
        return str(p)


def step(n, text):
    print(f"\n{n}. {text}", flush=True)


def line(text=""):
    print(f"   {text}", flush=True)


class DemoFailed(Exception):
    pass


PROCS = []  # what to stop at exit, in start order


class Mcgw:
    """mcgw run, its JSON log to a file, read as it grows."""

    def __init__(self, config, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([str(MCGW), "run", "-c", str(config)],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def records(self):
        out = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                pass
        return out

    def wait(self, predicate, what, timeout=20):
        def check():
            if self.proc.poll() is not None:
                raise DemoFailed(f"mcgw exited ({self.proc.returncode}); see {rel(self.log_path)}")
            return next((r for r in self.records() if predicate(r)), None)
        try:
            return idmtest.wait_until(check, timeout, what, interval=0.1)
        except AssertionError as e:
            raise DemoFailed(f"{e}; see {rel(self.log_path)}") from None

    def port(self, kind):
        r = self.wait(lambda r: r.get("msg") == "listening" and r.get("kind") == kind,
                      f"the {kind} listener")
        return int(r["addr"].rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def connect_status(proxy_port, target):
    """The gateway's answer to CONNECT target (what a device would get)."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as s:
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            data = s.recv(1024)
            if not data:
                break
            head += data
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0


def make_device_pki(pki):
    """The gateway's TLS listener certificate and a device certificate."""
    d = pki.dir
    idmtest._leaf(d, "gateway", "IP:127.0.0.1")
    idmtest._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", "device.key", "-out", "device.csr",
                     "-subj", "/CN=mcx-device-1/O=Fire Brigade", cwd=d)
    (d / "device.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                  "extendedKeyUsage=clientAuth\n")
    idmtest._openssl("x509", "-req", "-in", "device.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                     "-CAcreateserial", "-out", "device.crt", "-days", "2", "-extfile",
                     "device.ext", cwd=d)
    for key in d.glob("*.key"):
        os.chmod(key, 0o600)


def mcx_login(args, pw_file):
    return subprocess.run([str(MCX_LOGIN), *args, "--user", DEVICE_USER, "--password-file",
                           str(pw_file), "--client-id", DEVICE_CLIENT, "--scope", SCOPE, "-v",
                           "--json"], capture_output=True, text=True, timeout=60)


def status_table(admin_url, mcgw_log):
    """`mcgw status` when this mcgw has it; else the same facts from /status."""
    p = subprocess.run([str(MCGW), "status", "--admin", admin_url], capture_output=True,
                       text=True, timeout=15)
    if p.returncode == 0 and p.stdout.strip():
        for text in p.stdout.rstrip().splitlines():
            line(text)
    else:
        st = get_json(admin_url + "/status")
        idm = st["idm"]
        ids = idm.get("mc_service_ids") or {}
        expires = idm.get("access_token_expires_in_s", 0)
        line(f"gateway login     {idm['state']} as {idm.get('subject')}")
        for k in ("mcptt_id", "mcdata_id", "mcvideo_id"):
            if ids.get(k):
                line(f"  {k:<15} {ids[k]}")
        line(f"  access token    expires in {expires} s (refreshed before it does)")
        t = st["tunnels"]
        line(f"tunnels           {t['active']} open, {t['total']} in all; by result: " +
             ", ".join(f"{k} {v}" for k, v in t["by_result"].items() if v))
        line(f"bytes relayed     {st['bytes']['upstream']} up, {st['bytes']['downstream']} down")
    # The device's tunnels, from mcgw's access log (one line per tunnel).
    closed = [r for r in mcgw_log.records() if r.get("msg") == "tunnel_closed"]
    line("")
    line("Tunnels, from mcgw's access log (the first: the demo's CONNECT probes to the MC server):")
    line(f"{'target':<22} {'proto':<6} {'result':<9} {'status':<6} "
         f"{'bytes up':>9} {'bytes down':>10}")
    for r in closed:
        line(f"{r['target']:<22} {r['proto']:<6} {r['result']:<9} {r['status']:<6} "
             f"{r['bytes_up']:>9} {r['bytes_down']:>10}")


def run():
    for b in (MCGW, MCX_LOGIN, MCX_MEDIA):
        if not b.exists():
            raise DemoFailed(f"{rel(b)} is missing: run `make demo` (it builds first)")
    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    (DEMO_DIR / "pki").mkdir(parents=True)
    procs = PROCS
    print("mcgw demo: an MC device logs in to its identity management server (IdMS)\n"
          "through the MC gateway UE, end to end, as TS 33.180 5.1.2.1 describes.")

    step(1, f"Installed what was missing and built {rel(MCGW)} (the gateway) and "
            f"{rel(MCX_LOGIN)} (a reference MC device).")

    # 2. The IdMS.
    pki = idmtest.Pki(DEMO_DIR / "pki")
    make_device_pki(pki)
    clients = [idmtest.native_client(),
               idmtest.native_client(client_id=DEVICE_CLIENT, grant_types=["authorization_code"])]
    idms = idmtest.Idms(DEMO_DIR / "idms", pki, access_ttl=300, clients=clients)
    idms_log = DEMO_DIR / "idms.log"
    try:
        idms.start()
    except AssertionError as e:
        raise DemoFailed(f"the test IdMS did not start: {e}") from None
    procs.append(idms)
    threading.Thread(target=lambda: _copy_log(idms, idms_log), daemon=True).start()
    authz = f"127.0.0.2:{idms.authz_port}"
    token = f"127.0.0.3:{idms.token_port}"
    step(2, "Started the test IdMS (oidc-provider, set up like an MCX IdMS) on loopback:")
    line(f"authorization endpoint  https://{authz}   (the issuer; login and consent pages)")
    line(f"token endpoint          https://{token}   (a separate address, as 5.1.2.1 requires)")
    line(f"its log: {rel(idms_log)}")

    # 3. The gateway.
    mc_server = socket.socket()
    mc_server.bind(("127.0.0.4", 0))
    mc_server.listen(16)
    procs.append(mc_server)
    threading.Thread(target=_mc_server, args=(mc_server,), daemon=True).start()
    mc_target = f"127.0.0.4:{mc_server.getsockname()[1]}"
    # The stand-in MC media server: a UDP reflector.
    reflector = subprocess.Popen([str(MCX_MEDIA), "reflect", "--listen", "127.0.0.4:0"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.append(Reflector(reflector))
    media_target = reflector.stdout.readline().strip().rsplit(" ", 1)[-1]
    config = DEMO_DIR / "mcgw.ini"
    template = string.Template((SRC / "configs" / "demo.ini").read_text())
    config.write_text(template.substitute(DEMO_DIR=DEMO_DIR, IDMS_AUTHZ=authz, IDMS_TOKEN=token,
                                          MC_SERVER=mc_target, MEDIA_SERVER=media_target,
                                          ISSUER=idms.issuer))
    gw = Mcgw(config, DEMO_DIR / "mcgw.log")
    procs.append(gw)
    gw.wait(lambda r: r.get("msg") == "ready", "mcgw to be ready")
    plain, tls, admin = gw.port("proxy"), gw.port("proxy_tls"), gw.port("admin")
    admin_url = f"http://127.0.0.1:{admin}"
    step(3, f"Started mcgw with configs/demo.ini (filled in: {rel(config)}):")
    line(f"HTTP proxy    127.0.0.1:{plain}   HTTP/1.1 CONNECT, or HTTP/2 (h2c)")
    line(f"HTTPS proxy   127.0.0.1:{tls}   TLS; devices show a certificate from the demo CA")
    line(f"admin         {admin_url}/status")
    line(f"allowed: the IdMS's two addresses always; the MC server {mc_target} only while")
    line("the gateway itself is logged in. Everything else: 403.")
    line(f"its log: {rel(gw.log_path)} (one line per tunnel: who, where, bytes; never content)")
    gw.wait(lambda r: r.get("msg") == "idm_discovered", "the gateway to reach the IdMS")
    code = connect_status(plain, mc_target)
    if code != 403:
        raise DemoFailed(f"expected 403 for the MC server before the gateway's login, got {code}")
    line(f"The gateway is not logged in yet: a device asking for the MC server gets {code}")
    line("(\"limited service\").")

    # 4. The gateway's own login.
    status, _, page = idmtest.Browser(pki).login(admin_url + "/login", user=GATEWAY_USER)
    if status != 200:
        raise DemoFailed(f"the gateway's login ended with status {status}; see {rel(gw.log_path)}")
    idmtest.wait_until(lambda: get_json(admin_url + "/status")["idm"]["state"] == "authorized", 20,
                       "the gateway's login")
    idm = get_json(admin_url + "/status")["idm"]
    code = connect_status(plain, mc_target)
    step(4, f"Logged the gateway in as {GATEWAY_USER}, playing the operator's browser: "
            f"{admin_url}/login")
    line("-> the IdMS's login and consent pages -> back to the gateway with a code, which the")
    line("gateway redeemed at the token endpoint. It now holds its MC service IDs:")
    for k, v in (idm.get("mc_service_ids") or {}).items():
        line(f"  {k:<10} {v}")
    line(f"and an access token for {idm['access_token_expires_in_s']} s, refreshed before it "
         "expires.")
    line(f"Now the MC server is allowed: CONNECT {mc_target} -> {code}")
    if code != 200:
        raise DemoFailed("the MC server was not allowed after the gateway's login")

    # 5. The device.
    pw_file = DEMO_DIR / f"{DEVICE_USER}.password"
    pw_file.write_text("demo password\n")
    os.chmod(pw_file, 0o600)
    common = ["--issuer", idms.issuer, "--cacert", str(pki.ca)]
    p = mcx_login(["--proxy", f"http://127.0.0.1:{plain}", *common], pw_file)
    if p.returncode != 0:
        raise DemoFailed(f"the device's login failed:\n{p.stderr}")
    res = json.loads(p.stdout)
    step(5, f"The demo device (mcx-login) logged in as {DEVICE_USER}, doing its own CSC-1 login")
    line(f"through the gateway (HTTP proxy 127.0.0.1:{plain}). What it did:")
    for text in p.stderr.splitlines():  # its numbered steps; requests are in step 6
        text = text.removeprefix("mcx-login: ")
        if text[:1].isdigit():
            line("  " + text)
        elif "shows its" in text:
            line("     " + text.strip())
    line("It validated the ID token and got its own MC service IDs:")
    for k in ("mcptt_id", "mcdata_id"):
        line(f"  {k:<10} {res[k]}")
    # The device may exit before the gateway has logged its last tunnel's
    # close: wait (up to 10 s) for one tunnel_closed line per request.
    deadline = time.monotonic() + 10
    while True:
        closed = [r for r in gw.records() if r.get("msg") == "tunnel_closed"
                  and r["target"] in (authz, token)]
        if len(closed) >= res["tunnels"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    up = sum(r["bytes_up"] for r in closed)
    down = sum(r["bytes_down"] for r in closed)
    same = (up, down) == (res["tls_bytes_sent"], res["tls_bytes_received"])
    line(f"Each of its {res['tunnels']} requests (discovery, keys, pages, token) had its own "
         f"tunnel. mcgw relayed {up} bytes up and {down} down:")
    line("exactly what the device's TLS wrote and read" if same else
         "NOT what the device's TLS wrote and read (!)")
    line("- the TLS sessions ended at the IdMS; the gateway only passed their records on.")
    if not same:
        raise DemoFailed("byte counts differ")
    p = mcx_login(["--proxy", f"https://127.0.0.1:{tls}", "--h2", "--proxy-cacert", str(pki.ca),
                   "--proxy-cert", str(pki.dir / "device.crt"), "--proxy-key",
                   str(pki.dir / "device.key"), *common], pw_file)
    if p.returncode != 0:
        raise DemoFailed(f"the device's HTTP/2 login failed:\n{p.stderr}")
    line("The same device again over HTTP/2 on the HTTPS proxy, with its device certificate:")
    line(f"  logged in, {json.loads(p.stdout)['tunnels']} HTTP/2 CONNECT streams.")

    # 6. Voice.
    voice(plain, media_target, gw)

    # 7. Status.
    step(7, "What the operator sees (mcgw status):")
    status_table(admin_url, gw)

    # 8. Keep running.
    seconds = os.environ.get("DEMO_SECONDS")
    step(8, f"Running. Live status: {admin_url}/   (JSON: {admin_url}/status)")
    line(f"Try a device yourself: {rel(MCX_LOGIN)} --proxy http://127.0.0.1:{plain} "
         f"--issuer {idms.issuer} \\")
    line(f"  --cacert {rel(pki.ca)} --client-id {DEVICE_CLIENT} --scope '{SCOPE}'")
    line("(without --user it prints a URL for a browser that uses the gateway as its proxy)")
    if seconds:
        line(f"Stopping after DEMO_SECONDS={seconds} s.")
        time.sleep(float(seconds))
    else:
        line("Stop with Ctrl-C.")
        signal.pause()


class Reflector:
    """`mcx-media reflect`, stopped at exit."""

    def __init__(self, proc):
        self.proc = proc

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def voice(plain, media_target, gw):
    """A voice stream (RTP-shaped: 160 bytes every 20 ms) through the gateway
    over HTTP/2 CONNECT-UDP to the stand-in media server, and the figures."""
    p = subprocess.run([str(MCX_MEDIA), "--h2", "--json", "--proxy", f"http://127.0.0.1:{plain}",
                        "--target", media_target, "--seconds", VOICE_SECONDS],
                       capture_output=True, text=True, timeout=float(VOICE_SECONDS) + 60)
    if p.returncode != 0:
        raise DemoFailed(f"the voice stream failed: {p.stderr.strip()}")
    f = json.loads(p.stdout)
    step(6, f"Voice: a {VOICE_SECONDS}-second RTP-shaped stream (160 bytes every 20 ms) from "
            f"{rel(MCX_MEDIA)} through the gateway over HTTP/2 CONNECT-UDP (RFC 9298) to the "
            f"stand-in MC media server {media_target}, which echoes it:")
    line(f"sent {f['sent']}, received {f['received']}, lost {f['lost']}, "
         f"reordered {f['reordered']}")
    line(f"round trip p50 {f['rtt_p50_ms']:.2f} ms, p99 {f['rtt_p99_ms']:.2f} ms; "
         f"jitter {f['jitter_ms']:.2f} ms (RFC 3550)")
    rec = gw.wait(lambda r: r.get("msg") == "tunnel_closed" and r.get("type") == "udp",
                  "the voice tunnel's access log")
    line(f"the access log: type=udp, {rec['datagrams_up']} datagrams up, "
         f"{rec['datagrams_down']} down, {rec['dropped']} dropped; allowed by "
         "allow_udp_when_authorized (the gateway is logged in)")


def _mc_server(sock):
    """The stand-in MC server: accepts and hangs up (the demo only asks
    whether the gateway lets a device reach it)."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        conn.close()


def _copy_log(idms, path):
    """The IdMS's output (without the secrets it reports for the tests)."""
    idmtest.wait_until(lambda: idms.proc is not None, 5, "the IdMS process")
    last = 0
    with open(path, "ab") as f:
        while idms.proc.poll() is None:
            data = bytes(idms.log[last:])
            last += len(data)
            for raw in data.splitlines(keepends=True):
                if b'"event":"secret"' not in raw:
                    f.write(raw)
            f.flush()
            time.sleep(0.5)


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    code = 0
    try:
        run()
    except KeyboardInterrupt:
        print()
    except DemoFailed as e:
        print(f"\ndemo failed: {e}", file=sys.stderr)
        code = 1
    finally:
        for p in reversed(PROCS):
            try:
                if isinstance(p, socket.socket):
                    p.close()
                elif isinstance(p, Mcgw):
                    p.stop()
                else:
                    p.close()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
    if code == 0:
        print(f"\nStopped. Logs and configuration are kept in {rel(DEMO_DIR)}.")
    return code


if __name__ == "__main__":
    sys.exit(main())
