"""The systemd tier: wgnapid installed as the README says, under a real systemd as PID 1.

One guest (machine.py: systemd 252 of the host, booted in private namespaces
over a throw-away overlay of /) serves every test of this module, in order:
the README's install, start through READY=1, a link created after start,
reload good and broken, journal fields, `wgnapid status`, the boot order,
the watchdog, a clean stop, a broken policy at start, a crash loop, and the
live hardening score. The guest has its own network namespace (test links
never touch the host's) and its own PID namespace (kernel threads invisible).

Times are measured and printed (start, stop, watchdog restart), never asserted.
Run alone: `./dev test-systemd`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tierlog import measure
from machine import Machine, wait_until
from wheelhouse import PROJECT, wheelhouse

UNIT = "wgnapid.service"
WGNAPID = "/opt/wgnapid/bin/wgnapid"
SRC = "/root/wgnapid-src"  # the source tree, as an operator would have it
WHEELS = "/srv/wgnapid-wheels"
DROPIN_DIR = "/etc/systemd/system/wgnapid.service.d"
MAX_EXPOSURE = 2.5

TIER_POLICY = """[daemon]
resync_interval = 2
pending_max_delay = 1

[[rules]]
name = "tier-veth"
kinds = ["veth"]
interfaces = ["va*"]
threaded = "{threaded}"
"""
CONF_D = "/etc/wgnapid/conf.d/50-tier.toml"

pytestmark = pytest.mark.systemd


def readme_install_lines() -> list[str]:
    """The shell lines of the README's Debian 12 (from source) install, in order:
    the first ```sh block of the "### Debian 12" part of "## Install" (the
    Debian 13 package path is the package tier's, tests/debian)."""
    text = (PROJECT / "README.md").read_text()
    section = text.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    assert "\n### Debian 12" in section, "README.md: no '### Debian 12' part in the Install section"
    part = section.split("\n### Debian 12", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", part, re.S)
    assert block, "README.md: no ```sh block in the Install section's Debian 12 part"
    return [l for l in block.group(1).splitlines() if l.strip() and not l.lstrip().startswith("#")]


@pytest.fixture(scope="module")
def m():
    wheels = wheelhouse()
    with Machine(name="tier", binds={str(wheels): WHEELS}) as machine:
        print(f"guest booted in {machine.boot_seconds:.2f} s")
        measure("guest boot (to running)", machine.boot_seconds)
        yield machine


def show(m: Machine, *props: str) -> dict[str, str]:
    out = m.systemctl("show", UNIT, *(f"-p{p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def threaded(m: Machine, dev: str):
    try:
        return int(m.read(f"/sys/class/net/{dev}/threaded").strip())
    except (OSError, ValueError) as exc:
        return repr(exc)


def set_threaded(m: Machine, dev: str, value: int) -> None:
    with open(m.path(f"/sys/class/net/{dev}/threaded"), "w") as f:
        f.write(f"{value}\n")


def main_pid(m: Machine) -> int:
    return int(m.unit_property(UNIT, "MainPID"))


def unit_log(m: Machine, since: str | None = None) -> list[dict]:
    return m.journal("-u", UNIT, since=since)


def now(m: Machine) -> str:
    return m.run("date", "+%Y-%m-%d %H:%M:%S.%N").stdout.strip()[:-3]


def dropin(m: Machine, name: str, text: str | None) -> None:
    path = f"{DROPIN_DIR}/{name}"
    if text is None:
        Path(m.path(path)).unlink(missing_ok=True)
    else:
        m.install(path, text)
    m.systemctl("daemon-reload", check=True)


def ensure_running(m: Machine) -> None:
    if m.unit_property(UNIT, "ActiveState") != "active":
        m.systemctl("reset-failed", UNIT)
        r = m.systemctl("start", UNIT)
        assert r.returncode == 0, (r.stderr, unit_log(m)[-10:])


# -- install and start --------------------------------------------------------------


def test_readme_install_starts_the_unit(m):
    # The operator's source tree: the files git knows (tracked and new), copied in.
    files = subprocess.run(["git", "-C", str(PROJECT), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = PROJECT / rel
        if src.is_file():
            dst = Path(m.path(f"{SRC}/{rel}"))
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    t0 = time.monotonic()
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": WHEELS, "DEBIAN_FRONTEND": "noninteractive",
           "HOME": "/root", "LC_ALL": "C.UTF-8"}
    for line in readme_install_lines():
        r = m.run("bash", "-euo", "pipefail", "-c", f"cd {SRC} && {line}", env=env, timeout=600)
        assert r.returncode == 0, f"README install line failed: {line}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    measure("README install (guest, offline wheels)", time.monotonic() - t0)
    st = show(m, "ActiveState", "SubState", "ExecMainPath", "Documentation", "UnitFileState")
    assert st["ActiveState"] == "active" and st["SubState"] == "running", (st, unit_log(m)[-10:])
    assert st["UnitFileState"] == "enabled"
    exec_start = m.unit_property(UNIT, "ExecStart")
    assert "path=/opt/wgnapid/bin/wgnapid" in exec_start, exec_start
    # Every Documentation= the unit names for this install exists.
    docs = st["Documentation"].split()
    assert docs, st
    for doc in docs:
        assert doc.startswith("file://"), docs
        assert Path(m.path(doc[len("file://"):])).is_file(), doc


def test_start_reaches_active_through_ready_with_status(m):
    m.systemctl("stop", UNIT, check=True)
    t0 = time.monotonic()
    r = m.systemctl("start", UNIT)  # Type=notify: returns once READY=1 came
    measure("start (systemctl start until READY=1)", time.monotonic() - t0)
    assert r.returncode == 0, r.stderr
    st = show(m, "ActiveState", "SubState", "Type", "StatusText", "NotifyAccess")
    assert st["Type"] == "notify" and st["ActiveState"] == "active", st
    assert re.fullmatch(r"\d+ threaded, \d+ waiting for a peer.*", st["StatusText"]), st


def test_sandboxed_daemon_threads_a_link_created_after_start(m):
    m.install(CONF_D, TIER_POLICY.format(threaded="on"))
    r = m.systemctl("reload", UNIT)
    assert r.returncode == 0, r.stderr
    pid = main_pid(m)
    m.run("ip", "link", "add", "va0", "type", "veth", "peer", "name", "vb0", check=True)
    m.run("ip", "link", "set", "va0", "up", check=True)
    m.run("ethtool", "-K", "va0", "gro", "on", check=True)
    wait_until(lambda: threaded(m, "va0") == 1, 20, "va0 threaded by the sandboxed daemon")
    assert main_pid(m) == pid


def test_reload_good_applies_broken_fails_and_keeps_the_policy(m):
    ensure_running(m)
    pid = main_pid(m)
    m.install(CONF_D, TIER_POLICY.format(threaded="off"))
    r = m.systemctl("reload", UNIT)
    assert r.returncode == 0, r.stderr
    # `systemctl reload` returned only once the daemon had reloaded: no waiting here.
    assert threaded(m, "va0") == 0

    since = now(m)
    m.install(CONF_D, TIER_POLICY.format(threaded="sometimes"))
    r = m.systemctl("reload", UNIT)
    assert r.returncode != 0, "a reload with a broken policy must fail"
    st = show(m, "ActiveState", "MainPID")
    assert st["ActiveState"] == "active" and int(st["MainPID"]) == pid, st
    text = " ".join(e.get("MESSAGE", "") for e in unit_log(m, since) if isinstance(e.get("MESSAGE"), str))
    assert "rules[0].threaded" in text and CONF_D in text, text
    # The running policy (off) still holds: drift is undone by the next resync.
    set_threaded(m, "va0", 1)
    wait_until(lambda: threaded(m, "va0") == 0, 20, "va0 back to 0 under the kept policy")

    m.install(CONF_D, TIER_POLICY.format(threaded="on"))
    assert m.systemctl("reload", UNIT).returncode == 0
    assert threaded(m, "va0") == 1


def test_journal_entries_carry_the_per_link_fields(m):
    entries = [e for e in unit_log(m) if e.get("INTERFACE") == "va0"]
    assert entries, "no per-link journal entry for va0"
    for e in entries:
        assert e["SYSLOG_IDENTIFIER"] == "wgnapid" and e["_SYSTEMD_UNIT"] == UNIT, e
        assert e["IFINDEX"].isdigit() and e["WGNAPID_RULE"] == "tier-veth", e
        assert re.fullmatch(r"6b3fd9a2c6a44a3c9a3f2d8e5a1c77\d\d", e["MESSAGE_ID"]), e
    assert {"threaded", "off"} <= {e["WGNAPID_STATE"] for e in entries}


def test_wgnapid_status_sees_the_daemon(m):
    ensure_running(m)
    r = m.run(WGNAPID, "status", "--json", env={})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["daemon"] and doc["daemon"]["pid"] == main_pid(m), doc["daemon"]
    row = next(l for l in doc["links"] if l["name"] == "va0")
    assert row["state"] == "threaded" and row["rule"] == "tier-veth", row
    # The guest has a PID namespace of its own: no kernel thread is visible.
    assert row["napi_threads"] is None, row


def test_unit_starts_before_network_pre_target(m):
    # network-pre.target refuses manual start and stop: only a transaction that
    # pulls it in, as boot does, can start it. Isolating an empty target stops
    # both; isolating multi-user.target again starts wgnapid (enabled), which
    # pulls in network-pre.target (Wants=), in one transaction where the
    # ordering (Before=) decides who goes first.
    m.install("/etc/systemd/system/wgnapid-tier-empty.target",
              "[Unit]\nDescription=wgnapid tier: nothing\nAllowIsolate=yes\n")
    m.systemctl("daemon-reload", check=True)
    m.systemctl("isolate", "wgnapid-tier-empty.target", check=True)
    wait_until(lambda: m.systemctl("is-active", "network-pre.target").stdout.strip() == "inactive"
               and m.unit_property(UNIT, "ActiveState") == "inactive", 30, "both stopped")
    m.systemctl("isolate", "multi-user.target", check=True)
    ours = int(m.unit_property(UNIT, "ActiveEnterTimestampMonotonic"))
    target = int(m.systemctl("show", "-P", "ActiveEnterTimestampMonotonic", "network-pre.target").stdout)
    assert "network-pre.target" in m.unit_property(UNIT, "Before").split()
    assert 0 < ours <= target, (ours, target)


def test_watchdog_kills_a_stopped_daemon_and_the_restart_reconciles(m):
    dropin(m, "90-tier-watchdog.conf", "[Service]\nWatchdogSec=2s\n")
    try:
        m.systemctl("restart", UNIT, check=True)
        pid = main_pid(m)
        restarts = int(m.unit_property(UNIT, "NRestarts"))
        since = now(m)
        m.run("kill", "-STOP", str(pid), check=True)
        t0 = time.monotonic()
        # Drift while it hangs: the restarted daemon must undo it.
        set_threaded(m, "va0", 0)
        wait_until(lambda: main_pid(m) not in (0, pid) and m.unit_property(UNIT, "ActiveState") == "active",
                   90, "the watchdog restart")
        measure("watchdog: SIGSTOP until the restarted daemon is active (WatchdogSec=2s)", time.monotonic() - t0)
        assert int(m.unit_property(UNIT, "NRestarts")) == restarts + 1
        texts = [e.get("MESSAGE", "") for e in unit_log(m, since)]
        assert any("Watchdog timeout" in t for t in texts if isinstance(t, str)), texts
        wait_until(lambda: threaded(m, "va0") == 1, 20, "va0 threaded again after the restart")
    finally:
        dropin(m, "90-tier-watchdog.conf", None)
    m.systemctl("restart", UNIT, check=True)


def test_stop_is_clean(m):
    ensure_running(m)
    since = now(m)
    t0 = time.monotonic()
    m.systemctl("stop", UNIT, check=True)
    measure("stop (systemctl stop)", time.monotonic() - t0)
    st = show(m, "ActiveState", "Result", "ExecMainStatus")
    # No SIGKILL, no timeout, exit status 0.
    assert st == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, st
    # The daemon handled SIGTERM itself (death by SIGTERM also counts as success).
    stopping = [e for e in unit_log(m, since) if e.get("MESSAGE_ID") == "6b3fd9a2c6a44a3c9a3f2d8e5a1c7702"]
    assert len(stopping) == 1, unit_log(m, since)
    assert not list(Path(m.path("/run")).glob("wgnapid/status-*.json"))


def test_broken_policy_at_start_fails_at_once_with_ex_config(m):
    main = "/etc/wgnapid/wgnapid.toml"
    good = m.read(main)
    since = now(m)
    m.install(main, good.replace('threaded = "on"', 'threaded = "sometimes"'))
    try:
        m.systemctl("reset-failed", UNIT)
        r = m.systemctl("start", UNIT)
        assert r.returncode != 0
        wait_until(lambda: m.unit_property(UNIT, "ActiveState") == "failed", 30, "the unit failed")
        st = show(m, "ExecMainStatus", "NRestarts", "Result")
        # RestartPreventExitStatus=78: no restart loop for a policy error.
        assert st["ExecMainStatus"] == "78" and st["NRestarts"] == "0", st
        errors = [e for e in unit_log(m, since) if e.get("MESSAGE_ID") == "6b3fd9a2c6a44a3c9a3f2d8e5a1c7740"]
        assert errors and all(e["PRIORITY"] == "3" for e in errors), errors
        assert main in errors[0]["MESSAGE"] and "rules[0].threaded" in errors[0]["MESSAGE"], errors[0]
    finally:
        m.install(main, good)
        m.systemctl("reset-failed", UNIT)


def test_a_crash_loop_ends_in_failed_after_the_start_limit(m):
    # Any failure that is not a policy error restarts (Restart=on-failure,
    # RestartSec=2s) until the start limit ends it in "failed".
    dropin(m, "90-tier-crash.conf", "[Service]\nExecStartPre=/bin/false\n")
    try:
        m.systemctl("reset-failed", UNIT)
        t0 = time.monotonic()
        m.systemctl("start", UNIT)
        since = now(m)
        wait_until(lambda: m.unit_property(UNIT, "ActiveState") == "failed", 120, "the start limit")
        measure("crash loop until failed (start limit)", time.monotonic() - t0)
        # systemd 252 keeps Result=exit-code; the start limit says so in the journal.
        assert int(m.unit_property(UNIT, "NRestarts")) == 5
        texts = [e.get("MESSAGE") for e in unit_log(m, since)]
        assert any(isinstance(t, str) and "Start request repeated too quickly" in t for t in texts), texts
    finally:
        dropin(m, "90-tier-crash.conf", None)
        m.systemctl("reset-failed", UNIT)
    ensure_running(m)


def test_live_security_score(m):
    ensure_running(m)
    r = m.run("systemd-analyze", "security", "--no-pager", UNIT, env={"SYSTEMD_COLORS": "0"})
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout + r.stderr)
    assert found, r.stdout + r.stderr
    score = float(found.group(1))
    measure("systemd-analyze security (live), exposure", score, "")
    assert score <= MAX_EXPOSURE, r.stdout
