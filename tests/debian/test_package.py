"""The Debian package tier: build, lint, install and run wgnapid as a Debian 13 user would.

1. From a clean tree (a fresh clone's files), in a Debian 13 root made by
   debootstrap with only Debian's packages: the source and binary packages
   (dpkg-buildpackage, which also runs the unit tests and generates the man
   pages), lintian on the result, and the sdist + wheel (python -m build,
   twine check).
2. `apt install ./wgnapid_*.deb` into a fresh Debian 13 root: only Debian's
   packages come in.
3. That root's own systemd (257) booted as PID 1 (tests/systemd/machine.py):
   the unit the package enabled is up through READY=1, threads a link created
   after start, reloads (Type=notify-reload) a good policy and refuses a broken
   one, the commands and man pages work, an upgrade restarts it, a purge stops
   it and leaves nothing behind, and a new install starts it.

Roots are cached under /var/cache/wgnapid-ci/debian13 (tests/debian/mkroot);
run alone with `./dev test-deb`.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "systemd"))

import debroot  # noqa: E402
import machine  # noqa: E402

from wgnapid import __version__  # noqa: E402

pytestmark = [
    pytest.mark.deb,
    pytest.mark.skipif(debroot.problem() is not None, reason=str(debroot.problem())),
]

BUILD_EXTRA = "lintian python3-build twine"
# What ${python3:Depends} must resolve to (besides python3 itself).
RUNTIME = {"python3-pydantic", "python3-pyroute2", "python3-pyudev"}
# Loaded with ctypes (wgnapid/log.py: sd_journal_sendv), so declared by hand;
# libc6 comes from ${shlibs:Depends} (the compiled hot path, wgnapid/_hotpath.c).
LIBS = {"libsystemd0", "libc6"}
TIMES: dict[str, float] = {}


def report(request, line: str) -> None:
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(line)
    else:
        print(line)


@pytest.fixture(scope="module")
def work(request):
    path = Path(f"/var/tmp/wgnapid-ci-i12deb-{secrets.token_hex(4)}")
    path.mkdir()
    t0 = time.monotonic()
    yield path
    TIMES["total"] = time.monotonic() - t0
    report(request, "package tier timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in TIMES.items()))
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def roots():
    t0 = time.monotonic()
    base = debroot.mkroot("base")
    build = debroot.mkroot("build", packages=BUILD_EXTRA, build_deps=debroot.REPO / "debian" / "control")
    TIMES["roots"] = time.monotonic() - t0
    return {"base": base, "build": build}


@pytest.fixture(scope="module")
def built(work, roots, request):
    """Source + binary packages, lintian and the Python dists, from a clean tree."""
    t0 = time.monotonic()
    ov = debroot.Overlay(work, "build", roots["build"])
    debroot.clean_tree(ov.upper / "root" / "build" / f"wgnapid-{__version__}")
    debroot.clean_tree(ov.upper / "root" / "pysrc")
    r = ov.sh(f"""
cd /root/build/wgnapid-{__version__}
dpkg-buildpackage -us -uc
cd /root/build
ls -l
# Every tag is shown, down to info, pedantic and experimental; errors and warnings fail.
lintian --display-info --display-experimental --pedantic --fail-on error,warning wgnapid_{__version__}_*.changes > /root/lintian.txt 2>&1 \\
    && echo 0 > /root/lintian.rc || echo $? > /root/lintian.rc
cd /root/pysrc
python3 -m build --no-isolation --sdist --wheel --outdir /root/dist . > /root/pybuild.txt 2>&1
twine check --strict /root/dist/* > /root/twine.txt 2>&1 && echo 0 > /root/twine.rc || echo $? > /root/twine.rc
""", log=work / "build.log", timeout=3600)
    TIMES["build+lintian"] = time.monotonic() - t0
    assert r.returncode == 0, f"build failed:\n{r.stdout[-6000:]}"
    out = ov.host_path("/root/build")
    debs = sorted(out.glob("wgnapid_*.deb"))
    assert len(debs) == 1, sorted(p.name for p in out.iterdir())
    lintian = ov.host_path("/root/lintian.txt").read_text()
    report(request, f"lintian ({len(lintian.splitlines())} lines):\n{lintian}".rstrip())
    return {
        "dir": out,
        "deb": debs[0],
        "build_log": r.stdout,
        "lintian": lintian,
        "lintian_rc": int(ov.host_path("/root/lintian.rc").read_text()),
        "dist": ov.host_path("/root/dist"),
        "pybuild": ov.host_path("/root/pybuild.txt").read_text(),
        "twine": ov.host_path("/root/twine.txt").read_text(),
        "twine_rc": int(ov.host_path("/root/twine.rc").read_text()),
    }


def test_source_and_binary_packages_built(built):
    names = sorted(p.name for p in built["dir"].iterdir() if p.is_file())
    assert f"wgnapid_{__version__}.dsc" in names, names
    assert f"wgnapid_{__version__}.tar.xz" in names, names
    # dh_auto_test ran the unit tests (pybuild, pytest) during the build.
    assert re.search(r"\d+ passed", built["build_log"]), "the unit tests did not run in the build"


def test_lintian_no_errors_no_warnings(built):
    tags = [l for l in built["lintian"].splitlines() if re.match(r"[EW]: ", l)]
    assert tags == [] and built["lintian_rc"] == 0, built["lintian"]


def test_deb_contents(built):
    deb = str(built["deb"])
    fields = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True, text=True,
                            check=True).stdout
    deps = {d.strip().split()[0] for d in fields.replace("|", ",").split(",") if d.strip()}
    assert RUNTIME | LIBS <= deps, fields
    assert deps <= RUNTIME | LIBS | {"python3", "python3:any"}, f"unexpected dependencies: {fields}"
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
    paths = {line.split()[-1].lstrip(".") for line in listing.splitlines()}
    for want in ("/usr/bin/wgnapid", "/usr/lib/systemd/system/wgnapid.service",
                 "/etc/wgnapid/wgnapid.toml", "/usr/share/man/man8/wgnapid.8.gz",
                 "/usr/share/man/man5/wgnapid.toml.5.gz", "/usr/share/doc/wgnapid/copyright",
                 *(f"/usr/share/doc/wgnapid/examples/{n}.conf"
                   for n in ("namespaces-all", "placement", "realtime", "metrics"))):
        assert want in paths, f"{want} not in the package:\n{listing}"
    assert not any("/tests/" in p for p in paths), "the test suite was installed"
    # The compiled hot path, built for Debian's Python; its C source stays out.
    assert any(re.fullmatch(r"/usr/lib/python3/dist-packages/wgnapid/_hotpath\.cpython-3\d+-[\w-]+\.so", p)
               for p in paths), listing
    assert not any(p.endswith(".c") for p in paths), listing
    control = subprocess.run(["dpkg-deb", "-I", deb, "conffiles"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert control == ["/etc/wgnapid/wgnapid.toml"]
    unit = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], capture_output=True, check=True).stdout
    import io
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(unit)) as tar:
        text = tar.extractfile("./usr/lib/systemd/system/wgnapid.service").read().decode()
    assert re.search(r"(?m)^Type=notify-reload$", text), text
    assert re.search(r"(?m)^ExecStart=/usr/bin/wgnapid run$", text), text
    assert re.search(r"(?m)^ExecReload=/usr/bin/wgnapid check-config$", text), text
    # Documentation= names pages the package installs.
    for page in re.findall(r"man:([\w.]+)\((\d)\)", text):
        assert f"/usr/share/man/man{page[1]}/{page[0]}.{page[1]}.gz" in paths, page


def test_sdist_and_wheel_pass_twine_check(built):
    dists = sorted(p.name for p in built["dist"].iterdir())
    assert any(n.endswith(".tar.gz") for n in dists) and any(n.endswith(".whl") for n in dists), \
        built["pybuild"]
    assert built["twine_rc"] == 0 and "PASSED" in built["twine"], built["twine"]
    assert "FAILED" not in built["twine"] and "WARNING" not in built["twine"], built["twine"]
    # The sdist carries what the README's install from source uses: the unit,
    # every drop-in, the default policy.
    sdist = next(p for p in built["dist"].iterdir() if p.name.endswith(".tar.gz"))
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    want = {"systemd/wgnapid.service", "config/wgnapid.toml",
            *(f"systemd/drop-ins/{n}.conf" for n in ("venv", "namespaces-all", "placement", "realtime", "metrics"))}
    assert want <= names, sorted(want - names)


@pytest.fixture(scope="module")
def installed(work, roots, built):
    """`apt install ./wgnapid_*.deb` into a fresh Debian 13 root (chrooted, no systemd running)."""
    t0 = time.monotonic()
    ov = debroot.Overlay(work, "inst", roots["base"])
    deb = built["deb"].name
    ov.put(f"/root/debs/{deb}", built["deb"])
    r = ov.sh(f"""
dpkg-query -W -f '${{Package}}\\n' | sort > /root/before
chown _apt /var/cache/apt/archives/partial   # the shared cache: apt downloads as _apt
apt-get -q update
apt install -y -o APT::Keep-Downloaded-Packages=true /root/debs/{deb}
dpkg-query -W -f '${{Package}}\\n' | sort > /root/after
comm -13 /root/before /root/after > /root/new
apt-cache policy $(grep -vx wgnapid /root/new) > /root/policy
""", log=work / "install.log", timeout=1800, rw_binds={str(debroot.apt_archives()): "/var/cache/apt/archives"})
    TIMES["install"] = time.monotonic() - t0
    assert r.returncode == 0, f"apt install failed:\n{r.stdout[-6000:]}"
    return {"overlay": ov, "log": r.stdout, "new": ov.host_path("/root/new").read_text().split(),
            "policy": ov.host_path("/root/policy").read_text(), "debs": ov.host_path("/root/debs")}


def test_apt_install_pulls_in_only_debian_packages(installed):
    new = set(installed["new"])
    assert "wgnapid" in new
    assert RUNTIME <= new, f"{RUNTIME - new} not installed"
    # Each new package's installed version comes from the Debian archive (trixie,
    # trixie-updates or trixie-security main), not only from the local .deb or dpkg.
    blocks = re.split(r"(?m)^(?=\S+:$)", installed["policy"])
    seen = set()
    for block in blocks:
        m = re.match(r"(\S+):\n", block)
        if not m:
            continue
        pkg = m.group(1).split(":")[0]
        seen.add(pkg)
        inst = re.search(r"\*\*\* (\S+) \d+\n((?:\s{8}.*\n?)*)", block)
        assert inst, f"{pkg}: no installed version in apt-cache policy:\n{block}"
        sources = inst.group(2)
        assert re.search(r" trixie(-updates|-security)?/main ", sources), \
            f"{pkg} {inst.group(1)} is not from Debian's archive:\n{block}"
    assert seen == new - {"wgnapid"}, (seen, new)
    # Nothing from PyPI: no pip at all, nothing under /usr/local.
    assert "python3-pip" not in new
    upper = installed["overlay"].upper
    local = [str(p) for p in (upper / "usr" / "local").rglob("*") if p.is_file()] \
        if (upper / "usr" / "local").exists() else []
    assert local == [], local


@pytest.fixture(scope="module")
def guest(installed, roots, request):
    """The installed root's own systemd as PID 1."""
    problem = machine.problem(roots["base"])
    if problem:
        pytest.skip(problem)
    t0 = time.monotonic()
    m = machine.Machine(lower=installed["overlay"].as_lower, name="i12deb",
                        binds={str(installed["debs"]): "/root/debs"})
    with m:
        TIMES["boot"] = time.monotonic() - t0
        yield m
    TIMES["machine"] = time.monotonic() - t0


def threaded(m, dev: str) -> str | None:
    try:
        return m.read(f"/sys/class/net/{dev}/threaded").strip()
    except OSError:
        return None


def make_settable_veth(m, name: str, peer: str) -> None:
    """A veth in the guest's network namespace, made settable (up with GRO on).
    The host's ip/ethtool run in the guest's netns only."""
    ns = ["nsenter", "-t", str(m.pid), "-n"]
    for argv in (["ip", "link", "add", name, "type", "veth", "peer", "name", peer],
                 ["ip", "link", "set", name, "up"], ["ip", "link", "set", peer, "up"],
                 ["ethtool", "-K", name, "gro", "on"]):
        subprocess.run(ns + argv, check=True, capture_output=True, timeout=30)


VETH_POLICY = """
[[rules]]
name = "test-veths"
kinds = ["veth"]
interfaces = ["i12v*"]
threaded = "on"
"""


def test_packaged_unit_enabled_and_active_through_ready(guest):
    assert guest.systemctl("is-enabled", "wgnapid").stdout.strip() == "enabled"
    props = {p: guest.unit_property("wgnapid", p) for p in
             ("ActiveState", "SubState", "Type", "FragmentPath", "StatusText", "NRestarts")}
    assert props["ActiveState"] == "active", props
    assert props["Type"] == "notify-reload", props
    assert props["FragmentPath"] == "/usr/lib/systemd/system/wgnapid.service", props
    assert props["StatusText"], f"no STATUS= from the daemon: {props}"
    assert props["NRestarts"] == "0", props
    # systemd's own log: Type=notify-reload units become active only on READY=1.
    version = guest.run("systemctl", "--version").stdout.split()[1]
    assert int(version) >= 253, version
    # The machine's own journal (its own machine-id): everything since its boot.
    started = [e for e in guest.journal("-u", "wgnapid", since="2000-01-01") if e.get("MESSAGE_ID") ==
               "6b3fd9a2c6a44a3c9a3f2d8e5a1c7701"]
    assert started, "no 'started' journal entry from wgnapid"
    # The live exposure score of the packaged unit (the project's bound: 2.5).
    r = guest.run("systemd-analyze", "security", "--no-pager", "wgnapid.service")
    m = re.search(r"Overall exposure level for wgnapid.service: (\d+(?:\.\d+)?)", r.stdout)
    assert m and float(m.group(1)) <= 2.5, r.stdout[-2000:] + r.stderr
    print(f"packaged unit, live systemd-analyze security (systemd {version}): {m.group(1)}")


def test_reload_applies_a_good_policy_and_threads_a_new_link(guest):
    pid = guest.unit_property("wgnapid", "MainPID")
    guest.install("/etc/wgnapid/conf.d/50-test.toml", VETH_POLICY)
    r = guest.systemctl("reload", "wgnapid")
    assert r.returncode == 0, r.stderr
    assert guest.unit_property("wgnapid", "MainPID") == pid, "reload restarted the daemon"
    reloaded = [e for e in guest.journal("-u", "wgnapid")
                if e.get("MESSAGE_ID") == "6b3fd9a2c6a44a3c9a3f2d8e5a1c7703"]
    assert reloaded, "no 'reloaded' journal entry"
    make_settable_veth(guest, "i12va0", "i12vb0")
    machine.wait_until(lambda: threaded(guest, "i12va0") == "1", 30, "i12va0 threaded by the packaged daemon")
    entries = [e for e in guest.journal("INTERFACE=i12va0")
               if e.get("MESSAGE_ID") == "6b3fd9a2c6a44a3c9a3f2d8e5a1c7710"]
    assert entries and entries[-1].get("WGNAPID_RULE") == "test-veths", entries


def test_reload_refuses_a_broken_policy_and_keeps_the_running_one(guest):
    pid = guest.unit_property("wgnapid", "MainPID")
    guest.install("/etc/wgnapid/conf.d/60-broken.toml", '[daemon]\nresync_interval = "soon"\n')
    r = guest.systemctl("reload", "wgnapid")
    assert r.returncode != 0, "systemctl reload reported success for a broken policy"
    assert guest.unit_property("wgnapid", "ActiveState") == "active"
    assert guest.unit_property("wgnapid", "MainPID") == pid
    # The running policy still threads links that appear now.
    make_settable_veth(guest, "i12va1", "i12vb1")
    machine.wait_until(lambda: threaded(guest, "i12va1") == "1", 30, "i12va1 threaded under the kept policy")
    guest.run("rm", "/etc/wgnapid/conf.d/60-broken.toml", check=True)


def test_commands_and_man_pages(guest):
    r = guest.run("wgnapid", "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"wgnapid {__version__}", r
    r = guest.run("wgnapid", "doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    # The installed package runs the compiled hot path (Debian's Python 3.13 imports it).
    assert re.search(r"^hot path: +compiled \(wgnapid\._hotpath\)$", r.stdout, re.M), r.stdout
    r = guest.run("wgnapid", "status", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["daemon"] is not None, "wgnapid status does not see the packaged daemon"
    assert {l["name"]: l["state"] for l in doc["links"]}.get("i12va0") == "threaded", doc["links"]
    env = {"MANPAGER": "cat", "MANWIDTH": "80", "LC_ALL": "C.UTF-8"}
    page = guest.run("man", "wgnapid", env=env)
    assert page.returncode == 0, page.stderr
    text = re.sub(r".\x08", "", page.stdout)
    for section in ("SYNOPSIS", "EXIT STATUS", "SIGNALS", "FILES", "JOURNAL FIELDS", "check-config"):
        assert section in text, f"{section} missing from man wgnapid:\n{text}"
    page = guest.run("man", "5", "wgnapid.toml", env=env)
    assert page.returncode == 0, page.stderr
    text = re.sub(r".\x08", "", page.stdout)
    for key in ("resync_interval", "pending_max_delay", "kernel_guard", "interfaces", "threaded"):
        assert key in text, f"{key} missing from wgnapid.toml(5)"


def test_upgrade_restarts_the_service(guest):
    pid = guest.unit_property("wgnapid", "MainPID")
    r = guest.sh("dpkg -i /root/debs/wgnapid_*.deb")
    assert r.returncode == 0, r.stdout + r.stderr
    assert guest.unit_property("wgnapid", "ActiveState") == "active"
    assert guest.unit_property("wgnapid", "MainPID") not in (pid, "0"), "not restarted on upgrade"


def leftovers(m, roots) -> list[str]:
    """Paths named *wgnapid* in the guest that the pristine root did not have. Not
    counted: man-db's cache of formatted pages (/var/cache/man, made by `man` as
    root; man-db's own, expired by mandb, never the package's)."""
    find = ("find / -xdev \\( -path /proc -o -path /sys -o -path /root/debs -o -path /dev "
            "-o -path /var/cache/man \\) -prune -o -iname '*wgnapid*' -print")
    before = subprocess.run(["chroot", roots["base"], "sh", "-c", find], capture_output=True,
                            text=True, check=True).stdout.split()
    return sorted(set(m.sh(find).stdout.split()) - set(before))


def test_purge_stops_the_service_and_leaves_nothing(guest, roots):
    r = guest.run("apt-get", "purge", "-y", "wgnapid", env={"DEBIAN_FRONTEND": "noninteractive"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert guest.unit_property("wgnapid", "ActiveState") == "inactive"
    assert guest.unit_property("wgnapid", "LoadState") == "not-found"
    procs = guest.sh("grep -ls '[w]gnapid run' /proc/[0-9]*/cmdline || true").stdout.split()
    assert procs == [], f"the daemon still runs: {procs}"
    for path in ("/etc/wgnapid/wgnapid.toml", "/run/wgnapid", "/usr/lib/systemd/system/wgnapid.service",
                 "/etc/systemd/system/multi-user.target.wants/wgnapid.service", "/usr/bin/wgnapid"):
        assert guest.run("test", "-e", path).returncode == 1, f"{path} left after purge"
    # What Debian policy keeps: the admin's own file (the test's conf.d snippet), which
    # dpkg never owned, and so the directories holding it. Nothing else.
    kept = guest.run("find", "/etc/wgnapid").stdout.split()
    assert sorted(kept) == ["/etc/wgnapid", "/etc/wgnapid/conf.d", "/etc/wgnapid/conf.d/50-test.toml"]
    assert leftovers(guest, roots) == ["/etc/wgnapid"]
    guest.run("rm", "-r", "/etc/wgnapid", check=True)
    assert leftovers(guest, roots) == []
    assert guest.run("dpkg-query", "-W", "wgnapid").returncode != 0


def test_install_starts_the_service(guest):
    r = guest.sh("dpkg -i /root/debs/wgnapid_*.deb")
    assert r.returncode == 0, r.stdout + r.stderr
    assert guest.systemctl("is-enabled", "wgnapid").stdout.strip() == "enabled"
    assert guest.unit_property("wgnapid", "ActiveState") == "active"
    # The daemon's status document: one per network namespace (status-<netns inode>.json).
    r = guest.sh("ls /run/wgnapid/status-*.json")
    assert r.returncode == 0 and r.stdout.strip(), r.stdout + r.stderr
