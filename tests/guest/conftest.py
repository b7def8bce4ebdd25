"""Fixtures for the scenarios that run inside the qemu guest.

These tests need a kernel with wireguard.ko and a journald of their own: they
run only inside the guest booted by tests/test_kernel_tier.py (which sets
WGNAPID_GUEST=1). Anywhere else they are skipped, so a plain `pytest` on the
host never touches the host's links.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

import guestlib

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if guestlib.IN_GUEST:
        return
    skip = pytest.mark.skip(reason="guest scenario: runs only inside the qemu guest "
                                   "(run `./dev test-kernel`)")
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


# -- results for the host ---------------------------------------------------------
# The host harness maps each guest test to a host test. junit XML is written
# too (for people), but this line-per-report file survives a guest that dies
# half-way, and carries the captured output and user properties verbatim.

# Every wait in these scenarios has its own deadline; this is the backstop
# against anything else hanging, so one stuck scenario cannot eat the boot's
# whole time budget (the host kills the guest after WGNAPID_KERNEL_TIER_TIMEOUT).
SCENARIO_TIMEOUT = int(os.environ.get("WGNAPID_SCENARIO_TIMEOUT", "240"))


class ScenarioTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise ScenarioTimeout(f"scenario still running after {SCENARIO_TIMEOUT} s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if not guestlib.IN_GUEST:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SCENARIO_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, add what the daemon said: its stderr and its journal entries."""
    outcome = yield
    report = outcome.get_result()
    if not (report.failed and guestlib.IN_GUEST):
        return
    pool = item.funcargs.get("daemons")
    if isinstance(pool, guestlib.DaemonPool):
        daemon = pool.current or (pool.stopped[-1] if pool.stopped else None)
        if daemon is not None:
            report.sections.append((f"wgnapid stderr (pid {daemon.proc and daemon.pid})",
                                    daemon.stderr() or "(empty)"))
    try:
        journal = guestlib.run("journalctl", "-o", "short-monotonic", "--no-pager", "-n", "80",
                               "SYSLOG_IDENTIFIER=wgnapid", check=False, timeout=30).stdout
    except Exception as e:  # diagnostics must not hide the failure
        journal = f"(journalctl failed: {e})"
    report.sections.append(("wgnapid journal (last 80 entries)", journal))


def _results_file() -> str | None:
    return os.environ.get("WGNAPID_GUEST_RESULTS")


def pytest_runtest_logreport(report):
    path = _results_file()
    if not path:
        return
    record = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "duration": report.duration,
        "longrepr": str(report.longrepr) if report.longrepr else "",
        "sections": [[title, text] for title, text in report.sections],
        "properties": [[k, v] for k, v in getattr(report, "user_properties", [])],
    }
    if report.skipped and isinstance(report.longrepr, tuple):
        record["longrepr"] = report.longrepr[2]
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


# -- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wgnapid")


@pytest.fixture(scope="session")
def guest_ready():
    """The guest entry point loaded wireguard.ko and started journald."""
    assert Path("/sys/module/wireguard").exists(), "wireguard.ko is not loaded"
    assert Path("/run/systemd/journal/socket").exists(), "journald is not running"
    assert guestlib.WGNAPID.exists(), f"{guestlib.WGNAPID} missing: is the venv set up?"


@pytest.fixture(scope="session")
def keys(guest_ready) -> guestlib.Keys:
    return guestlib.Keys(4)


@pytest.fixture(scope="session")
def daemons(workdir, guest_ready):
    pool = guestlib.DaemonPool(workdir)
    yield pool
    pool.stop()


@pytest.fixture
def links(guest_ready):
    links = guestlib.LinkSet()
    yield links
    links.cleanup()


@pytest.fixture(scope="session")
def risky() -> bool:
    return guestlib.kernel_is_risky()


@pytest.fixture(scope="session")
def enforcing_policy(risky) -> str:
    """The policy of scenarios 1-8: enforces on both kernels.

    On a risky kernel (6.1) the default guard holds WireGuard links, so
    kernel_guard = "warn"; elsewhere the default (no kernel_guard line) is kept,
    which scenario 9 relies on to show 6.12 enforces by default.
    Three rules: wgoff* kept off, wgign* left alone, everything else on.
    resync_interval = 30: longer than any wait here, so scenario 2 measures the
    pending retry timer, not a resync (scenario 6 switches to 1).
    """
    return guestlib.policy_toml(
        source="netlink", resync_interval=30, pending_max_delay=2,
        kernel_guard="warn" if risky else None,
        rules=[
            {"name": "keep-off", "interfaces": ["wgoff*"], "threaded": "off"},
            {"name": "hands-off", "interfaces": ["wgign*"], "threaded": "ignore"},
            {"name": "tunnels", "interfaces": ["*"], "threaded": "on"},
        ])


@pytest.fixture(scope="session")
def udev_policy(risky) -> str:
    return guestlib.policy_toml(source="udev", resync_interval=30, pending_max_delay=2,
                                kernel_guard="warn" if risky else None)


@pytest.fixture(scope="session")
def default_guard_policy() -> str:
    """No kernel_guard line: the default ("strict")."""
    return guestlib.policy_toml(source="netlink", resync_interval=1, pending_max_delay=2)
