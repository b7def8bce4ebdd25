"""machine.py itself: the guest is private, and nothing of it outlives close()."""

from __future__ import annotations

import os
import secrets

import pytest

from machine import Machine

pytestmark = pytest.mark.systemd


def test_guest_is_private_and_close_leaves_nothing():
    marker = f"/etc/wgnapid-ci-machine-{secrets.token_hex(4)}"
    m = Machine(name="selftest")
    try:
        m.boot()
        assert m.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
        # Its own network namespace: only lo.
        assert m.run("ls", "/sys/class/net").stdout.split() == ["lo"]
        # cgroup2 at its own root, and only cgroup2 mounted (systemd's unified mode).
        assert "0::/init.scope" in m.run("cat", "/proc/1/cgroup").stdout.splitlines()
        assert m.run("stat", "-f", "-c", "%T", "/sys/fs/cgroup").stdout.strip() == "cgroup2fs"
        # Files written inside stay inside (the overlay's upper layer).
        m.install(marker, "x")
        assert m.run("cat", marker).stdout == "x"
        assert not os.path.exists(marker)
        r = m.run("systemd-run", "--unit", "selftest-sleeper", "sleep", "infinity")
        assert r.returncode == 0, r.stderr
        cgroup, work = m.cgroup, m.work
        assert os.path.isdir(cgroup) and os.path.isdir(work)
    finally:
        m.close()
    assert not os.path.exists(cgroup), "the delegated cgroup outlived close()"
    assert not os.path.exists(work), "the work directory outlived close()"
    assert m.proc is None
    m.close()  # twice is harmless
