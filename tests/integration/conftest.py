"""Fixtures for the host-kernel integration tests; helpers are in wgtest.py."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from wgtest import (HERE, JOURNAL_SOCKET, JOURNALD, NS_PREFIX, Daemon, Netns, connectable,
                    environment_problem, journald_running, wait_until)


# -- skipping, always with a printed reason ----------------------------------------


def pytest_configure(config):
    # Skips must show their reason in the summary (-rs), also under -q.
    chars = config.option.reportchars or ""
    if "s" not in chars and "a" not in chars and "A" not in chars:
        config.option.reportchars = chars + "s"


def pytest_collection_modifyitems(config, items):
    problem = environment_problem()
    if problem is None:
        return
    mark = pytest.mark.skip(reason=problem)
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(mark)


@pytest.fixture
def netns():
    name = f"{NS_PREFIX}{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name)
    try:
        ns.ip("link", "set", "lo", "up")
        yield ns
    finally:
        ns.close()
        # Only our own processes can be in a namespace we just made; the daemon
        # fixture has already stopped its daemons. Links inside go with it.
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def netns_factory():
    """More namespaces for one test (the first is the `netns` fixture)."""
    made: list[Netns] = []

    def make() -> Netns:
        name = f"{NS_PREFIX}{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        ns = Netns(name)
        made.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    try:
        yield make
    finally:
        for ns in made:
            ns.close()
            subprocess.run(["ip", "netns", "del", ns.name], check=False)


@pytest.fixture
def daemon_factory(netns, tmp_path):
    made: list[Daemon] = []

    def make(policy: Path, ns: Netns | None = None, **kw) -> Daemon:
        d = Daemon(ns or netns, policy, tmp_path / f"daemon{len(made)}", **kw)
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            d.close()


# -- journald ------------------------------------------------------------


@pytest.fixture(scope="session")
def journald():
    """A journald for the tests: the running one, or one started here (and stopped
    at the end only then)."""
    if os.path.exists(JOURNAL_SOCKET) and journald_running():
        yield None
        return
    if not os.path.exists(JOURNALD):
        pytest.skip(f"no journald running and {JOURNALD} is missing")
    os.makedirs(os.path.dirname(JOURNAL_SOCKET), exist_ok=True)
    proc = subprocess.Popen([JOURNALD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: os.path.exists(JOURNAL_SOCKET) and connectable(JOURNAL_SOCKET), 15,
                   "journald's socket")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


