"""Fixtures for the unit tests (helpers are in helpers.py).

Nothing here touches the real /sys, /proc or netlink.
"""

import os

import pytest

from wgnapid import napithreads

from .helpers import Attr, Clock, FakeSysfs, RecordingLog, stat_line


@pytest.fixture
def fakesys(tmp_path):
    return FakeSysfs(tmp_path / "net")


@pytest.fixture
def rlog():
    return RecordingLog()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def attr(fakesys):
    """The real ThreadedAttr on the fake tree, recording writes (helpers.Attr)."""
    return Attr(fakesys)


@pytest.fixture
def fake_proc(tmp_path, monkeypatch):
    """Returns add(pid, comm, ppid=2, whole=None, **stat): writes <tmp>/proc/<pid>/stat
    (and /comm holding ``whole`` when given) and points napithreads at that
    /proc; adding a PID again renames it. Every task's affinity is CPUs 0-1."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "self").mkdir()  # non-numeric entries are skipped
    (proc / "77").mkdir()  # a task that exited: no stat file any more
    real_open, real_scandir = open, os.scandir

    def fake_open(path, *a, **k):
        if isinstance(path, str) and path.startswith("/proc/"):
            path = str(proc) + path[len("/proc"):]
        return real_open(path, *a, **k)

    monkeypatch.setattr(napithreads, "open", fake_open, raising=False)
    monkeypatch.setattr(napithreads.os, "scandir",
                        lambda p: real_scandir(proc) if p == "/proc" else real_scandir(p))
    monkeypatch.setattr(napithreads.os, "sched_getaffinity", lambda pid: {0, 1})

    def add(pid, comm, ppid=2, whole=None, **kw):
        (proc / str(pid)).mkdir(exist_ok=True)
        (proc / str(pid) / "stat").write_bytes(stat_line(pid, comm[:15], ppid, **kw))
        comm = proc / str(pid) / "comm"
        if whole is not None:
            comm.write_text(whole + "\n")
        else:
            comm.unlink(missing_ok=True)  # renamed: no stale whole name

    return add
