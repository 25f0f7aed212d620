"""The Debian packages (debian/, scripts/deb.sh, `make deb`), built from this
tree and installed for real on this machine as root: the system user, the
state directory, the conffile kept across an upgrade to a newer build, the
unit verified, the packaged daemon run as the unit runs it (and the unit
itself started when systemd is PID 1), and a purge that leaves nothing
behind. Also: the version in debian/changelog is the one `mcgw --version`
prints, Depends comes from the shared libraries, and lintian is clean.

Two builds of the tree (the changelog's version, then the same tree as a
newer version), each in a copy, without the unit tests (nocheck: make test
runs them): about 20 s each on two cores.
"""

import fcntl
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest

from mcgwtest import BIN, SRC, free_port, wait_until

ARTIFACTS = Path(os.environ.get("MCGW_ARTIFACTS", SRC / "build" / "test-artifacts"))
# The tools scripts/deps.sh installs for this test (`deps.sh test`): missing
# means the machine was not prepared, a failure rather than a skip.
TOOLS = ("dpkg-buildpackage", "dh", "fakeroot", "lintian", "dpkg-parsechangelog",
         "systemd-analyze", "systemd-sysusers", "setpriv", "userdel")
PACKAGES = ("mcgw", "mcx-tools")
CONFFILE = Path("/etc/mcgw/mcgw.ini")
STATE = Path("/var/lib/mcgw")
UNIT = Path("/lib/systemd/system/mcgw.service")
# Compared before install and after purge. Left out: dpkg's and apt's own
# databases and caches, logs, and the backups systemd-sysusers keeps of the
# user database (/etc/passwd- ...: the user stays, see debian/mcgw.postrm).
SCAN = ("/etc", "/usr", "/var/lib", "/var/cache", "/opt", "/srv")
SCAN_SKIP = ("/var/lib/dpkg", "/var/lib/apt", "/var/cache/apt", "/var/cache/debconf",
             "/var/cache/man", "/var/lib/ucf", "/var/cache/fontconfig")
USERDB_BACKUPS = {"/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-"}


def run(*cmd, check=True, timeout=120, **kw):
    p = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=timeout, **kw)
    if check:
        assert p.returncode == 0, f"{' '.join(map(str, cmd))}: exit {p.returncode}\n{p.stdout}{p.stderr}"
    return p


def require_tools():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"not installed: {', '.join(missing)} (scripts/deps.sh test installs them)")


def changelog_version():
    return run("dpkg-parsechangelog", "-l", SRC / "debian" / "changelog", "-S", "Version").stdout.strip()


def build(outdir, version=None):
    """scripts/deb.sh into outdir; {package: path of its .deb}."""
    cmd = [SRC / "scripts" / "deb.sh", "-n", "-L", "-o", outdir]
    if version:
        cmd += ["-V", version]
    run(*cmd, timeout=400)
    arch = run("dpkg", "--print-architecture").stdout.strip()
    debs = {p: next(Path(outdir).glob(f"{p}_*_{arch}.deb")) for p in PACKAGES}
    changes = next(Path(outdir).glob(f"mcgw_*_{arch}.changes"))
    return debs, changes


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    require_tools()
    return build(tmp_path_factory.mktemp("deb-v1"))


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    """The same tree as a newer version: a changelog entry added in the copy."""
    require_tools()
    version = changelog_version() + "+debtest1"
    run("dpkg", "--compare-versions", version, "gt", changelog_version())
    return build(tmp_path_factory.mktemp("deb-v2"), version)


# ------------------------------------------------------------ no root needed


@pytest.mark.timeout(300)
def test_version_is_the_changelog_version(v1):
    """debian/changelog holds the version: the tree's build, the package and
    the packaged binary all say the same."""
    version = changelog_version()
    assert run(BIN, "--version").stdout == f"mcgw {version}\n"
    debs, _ = v1
    for deb in debs.values():
        assert run("dpkg-deb", "-f", deb, "Version").stdout.strip() == version
    root = debs["mcgw"].parent / "x"
    run("dpkg-deb", "-x", debs["mcgw"], root)
    assert run(root / "usr/sbin/mcgw", "--version").stdout == f"mcgw {version}\n"


@pytest.mark.timeout(300)
def test_lintian_clean(v1):
    """No error, no warning (the ones left are overridden with a reason)."""
    _, changes = v1
    r = run("lintian", changes, check=False, timeout=240)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "lintian.txt").write_text(r.stdout + r.stderr)
    tags = [line for line in r.stdout.splitlines() if re.match(r"[EW]: ", line)]
    assert not tags and r.returncode == 0, r.stdout + r.stderr


@pytest.mark.timeout(300)
def test_dependencies_come_from_shlibs(v1):
    """Depends is what dpkg-shlibdeps found in the binaries: the libraries
    mcgw links, nothing hand-written but the sysusers tool."""
    debs, _ = v1
    depends = run("dpkg-deb", "-f", debs["mcgw"], "Depends").stdout
    for lib in ("libssl3", "libuv1", "libnghttp2-14", "libjansson4", "libcjose0", "libinih1",
                "libsystemd0", "libc6"):
        assert re.search(rf"\b{re.escape(lib)} \(>= ", depends) or f"{lib}," in depends + ",", depends
    assert "systemd | systemd-standalone-sysusers" in depends, depends


# ------------------------------------------------------------ as root


def dpkg(*args):
    """dpkg with the frontend lock held, as apt holds it: waits for another
    apt or dpkg run on this machine instead of failing on its lock."""
    with open("/var/lib/dpkg/lock-frontend", "w") as lock:
        def locked():
            try:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError:
                return False
        wait_until(locked, timeout=600, what="the dpkg frontend lock", interval=0.5)
        return run("dpkg", *args, timeout=300, env={**os.environ, "DPKG_FRONTEND_LOCKED": "1",
                                                    "DEBIAN_FRONTEND": "noninteractive"})


def installed_version(package):
    r = run("dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Version}", package, check=False)
    return r.stdout.split()[1] if r.returncode == 0 and r.stdout.startswith("ii ") else None


def listed(package):
    r = run("dpkg-query", "-W", "-f", "${db:Status-Abbrev}", package, check=False)
    return r.returncode == 0 and r.stdout.strip() not in ("", "un", "pn")


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture
def machine():
    """A machine without mcgw installed, the same again afterwards whatever
    happens: packages purged, the user and group removed."""
    if os.geteuid() != 0:
        pytest.skip("installing packages needs root (CI runs as root)")
    require_tools()
    present = [p for p in PACKAGES if listed(p)]
    if present or user_exists("mcgw") or STATE.exists() or CONFFILE.parent.exists():
        pytest.fail(f"this machine already has mcgw ({present or 'user/state/config'}): the test "
                    "installs and purges the package; remove it first")
    # One run at a time on a machine (another worktree's suite).
    with open("/run/lock/mcgw-deb-test.lock" if os.path.isdir("/run/lock")
              else "/tmp/mcgw-deb-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if any(listed(p) for p in PACKAGES):
                dpkg("--purge", *PACKAGES)
            if user_exists("mcgw"):
                run("userdel", "mcgw", check=False)
            if group_exists("mcgw"):
                run("groupdel", "mcgw", check=False)
            shutil.rmtree(STATE, ignore_errors=True)
            shutil.rmtree(CONFFILE.parent, ignore_errors=True)


def snapshot():
    """Every path below SCAN (one file system each), but SCAN_SKIP."""
    found = set()
    for top in SCAN:
        if not os.path.isdir(top):
            continue
        prune = []
        for skip in SCAN_SKIP:
            prune += ["-path", skip, "-prune", "-o"]
        out = run("find", top, "-xdev", *prune, "-print0", timeout=120).stdout
        found.update(p for p in out.split("\0") if p)
    return found


def foreign(paths):
    """Those of paths that another package owns or that are Python byte-code
    caches: what other work on this machine may add meanwhile."""
    out = set(p for p in paths if "/__pycache__/" in p)
    rest = sorted(set(paths) - out)
    if rest:
        r = run("dpkg-query", "-S", *rest, check=False)
        for line in r.stdout.splitlines():
            owners, _, path = line.partition(": ")
            if not set(o.split(":")[0] for o in owners.split(", ")) & set(PACKAGES):
                out.add(path)
    return out


def safe_defaults(text):
    """(listen values per section, active allow rules) of an mcgw.ini."""
    section, listens, allows = None, {}, []
    for line in text.splitlines():
        line = line.split(";")[0].strip()
        if line.startswith("["):
            section = line
        elif "=" in line:
            key, value = (s.strip() for s in line.split("=", 1))
            if key == "listen":
                listens.setdefault(section, []).append(value)
            elif key.startswith("allow") and key != "allow_private":
                allows.append(line)
    return listens, allows


@pytest.mark.timeout(600)
def test_install_upgrade_purge(v1, v2, machine):
    debs1, _ = v1
    debs2, _ = v2
    version1 = changelog_version()
    version2 = run("dpkg-deb", "-f", debs2["mcgw"], "Version").stdout.strip()
    before = snapshot()

    # --- install
    dpkg("-i", *debs1.values())
    assert installed_version("mcgw") == installed_version("mcx-tools") == version1
    user = pwd.getpwnam("mcgw")
    assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin", user
    assert grp.getgrgid(user.pw_gid).gr_name == "mcgw"
    st = STATE.stat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
    assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid)
    assert run("/usr/sbin/mcgw", "--version").stdout == f"mcgw {version1}\n"
    assert "Usage: mcx-login" in run("/usr/bin/mcx-login", "--help").stdout
    for f in ("/usr/share/mcgw/mcgw-alerts.yml", "/usr/share/mcgw/grafana-mcgw.json",
              "/usr/lib/sysusers.d/mcgw.conf", "/usr/lib/tmpfiles.d/mcgw.conf"):
        assert os.path.isfile(f), f
    assert "/etc/mcgw/mcgw.ini" in run("dpkg-query", "-W", "-f", "${Conffiles}", "mcgw").stdout
    # Safe defaults: both listeners on loopback, no destination allowed.
    listens, allows = safe_defaults(CONFFILE.read_text())
    assert listens.get("[admin]") == ["127.0.0.1:9090"] and listens.get("[tunnel]") == [
        "127.0.0.1:3128"], listens
    assert allows == [], allows
    # The config passes `mcgw check`, read as the unit's user reads it.
    r = run("setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            "/usr/sbin/mcgw", "check", "-c", CONFFILE, check=False)
    assert r.returncode == 0 and r.stdout.strip() == f"{CONFFILE}: ok", r.stdout + r.stderr
    # --man=no: a machine may leave manual pages out (dpkg path-exclude);
    # that the package has the one the unit names is checked here instead.
    assert "/usr/share/man/man8/mcgw.8.gz" in run("dpkg", "-L", "mcgw").stdout
    r = run("systemd-analyze", "verify", "--man=no", UNIT, check=False, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if "mcgw.service" in line]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr
    assert os.path.islink("/etc/systemd/system/multi-user.target.wants/mcgw.service")

    # The gateway's state, as its login leaves it (token_store: 0600, mcgw's).
    login = STATE / "idm-login.json"
    login.write_text("{}\n")
    os.chown(login, user.pw_uid, user.pw_gid)
    os.chmod(login, 0o600)

    # --- the operator edits the conffile, then a newer build comes
    edited = CONFFILE.read_text().replace("log_level = info", "log_level = debug") + \
        "; edited on this gateway\n"
    CONFFILE.write_text(edited)
    dpkg("-i", *debs2.values())
    assert installed_version("mcgw") == installed_version("mcx-tools") == version2
    assert run("/usr/sbin/mcgw", "--version").stdout == f"mcgw {version2}\n"
    assert CONFFILE.read_text() == edited
    assert not Path(f"{CONFFILE}.dpkg-new").exists() and not Path(f"{CONFFILE}.dpkg-dist").exists()
    assert login.read_text() == "{}\n" and pwd.getpwnam("mcgw").pw_uid == user.pw_uid

    # --- purge: config (with the secrets put beside it), state and every
    # file of the package gone
    token = CONFFILE.parent / "admin.token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    os.chmod(token, 0o600)
    dpkg("--purge", *PACKAGES)
    assert not any(listed(p) for p in PACKAGES)
    assert not CONFFILE.parent.exists() and not STATE.exists()
    assert not os.path.lexists("/etc/systemd/system/multi-user.target.wants/mcgw.service")
    after = snapshot()
    left = sorted(after - before - USERDB_BACKUPS - foreign(after - before))
    assert left == [], f"left behind by install/upgrade/purge: {left}"
    owned = run("find", *[t for t in SCAN if os.path.isdir(t)], "-xdev", "-uid", str(user.pw_uid),
                check=False, timeout=120).stdout.split()
    assert owned == [], f"files of user mcgw after purge: {owned}"
    # The user stays, as Debian's system users do (debian/mcgw.postrm).
    assert pwd.getpwnam("mcgw").pw_uid == user.pw_uid


def packaged_config_on_free_ports():
    """Moves the packaged config's loopback listeners to free ports (the
    tests never use fixed ports); returns (admin port, proxy port)."""
    admin, proxy = free_port(), free_port()
    text = CONFFILE.read_text().replace("127.0.0.1:9090", f"127.0.0.1:{admin}")
    CONFFILE.write_text(text.replace("127.0.0.1:3128", f"127.0.0.1:{proxy}"))
    return admin, proxy


def get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except OSError:
        return None


@pytest.mark.timeout(300)
def test_packaged_daemon_runs_as_its_user(v1, machine, tmp_path):
    """Without systemd: the installed binary and config, run the way the unit
    runs them (user mcgw, only the unit's capabilities, no new privileges),
    serve /healthz and refuse every destination (no allow rule)."""
    debs, _ = v1
    dpkg("-i", *debs.values())
    admin, proxy = packaged_config_on_free_ports()
    # The unit's CAP_NET_BIND_SERVICE (10) and CAP_NET_RAW (13), as far as
    # this machine (a container may lack CAP_NET_RAW) has them.
    own = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("CapBnd:")).split()[1], 16)
    bits = {bit: name for bit, name in ((10, "net_bind_service"), (13, "net_raw"))
            if own & (1 << bit)}
    caps = ",".join(f"+{name}" for name in bits.values())
    log = open(tmp_path / "mcgw.log", "w+")
    proc = subprocess.Popen(["setpriv", "--reuid=mcgw", "--regid=mcgw", "--clear-groups",
                             f"--inh-caps={caps}", f"--ambient-caps={caps}",
                             f"--bounding-set=-all,{caps}", "--no-new-privs",
                             "/usr/sbin/mcgw", "run", "-c", str(CONFFILE)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/")
    try:
        assert wait_until(lambda: get(admin, "/healthz"), timeout=30,
                          what="GET /healthz") == (200, b"ok\n")
        status = dict(line.split(":", 1) for line in
                      Path(f"/proc/{proc.pid}/status").read_text().splitlines() if ":" in line)
        user = pwd.getpwnam("mcgw")
        assert status["Uid"].split() == [str(user.pw_uid)] * 4
        assert int(status["CapEff"], 16) == int(status["CapAmb"], 16) == sum(1 << b for b in bits)
        with socket.create_connection(("127.0.0.1", proxy), timeout=10) as s:
            s.sendall(b"CONNECT idms.example.org:443 HTTP/1.1\r\nHost: idms.example.org:443\r\n\r\n")
            s.settimeout(10)
            assert s.recv(4096).startswith(b"HTTP/1.1 403 "), "the packaged config allows nothing"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.seek(0)
        print(log.read())
        log.close()


@pytest.mark.timeout(600)
def test_unit_starts_and_serves_healthz(v1, machine):
    comm = Path("/proc/1/comm").read_text().strip()
    if not os.path.isdir("/run/systemd/system"):
        pytest.skip(f"systemd does not run this machine (PID 1 is {comm!r}, a container): the "
                    "unit is checked with systemd-analyze verify in test_install_upgrade_purge, "
                    "the daemon run as the unit runs it in test_packaged_daemon_runs_as_its_user")
    debs, _ = v1
    dpkg("-i", *debs.values())
    admin, _ = packaged_config_on_free_ports()
    run("systemctl", "restart", "mcgw.service", timeout=90)  # Type=notify: returns on READY=1
    assert run("systemctl", "is-active", "mcgw.service", check=False).stdout.strip() == "active"
    main_pid = run("systemctl", "show", "-P", "MainPID", "mcgw.service").stdout.strip()
    assert Path(f"/proc/{main_pid}").stat().st_uid == pwd.getpwnam("mcgw").pw_uid
    assert wait_until(lambda: get(admin, "/healthz"), timeout=30,
                      what="GET /healthz from the packaged unit") == (200, b"ok\n")
    run("systemctl", "stop", "mcgw.service", timeout=90)
