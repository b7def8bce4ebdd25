"""Helpers for the unit tests: policies, a fake sysfs tree, a recording log.

Nothing here touches the real /sys, /proc or netlink: every test runs as an
ordinary process in well under a second.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from wgnapid.config import DaemonConfig, Policy, Rule
from wgnapid.links import Link
from wgnapid.log import Log
from wgnapid.netns import NetNamespace, NsId
from wgnapid.sysfs import Outcome, Result, ThreadedAttr


def rule(name, threaded="on", kinds=("*",), interfaces=("*",), netns=("*",)):
    return Rule(name=name, kinds=list(kinds), interfaces=list(interfaces), netns=list(netns),
                threaded=threaded)


def policy(*rules, **daemon):
    return Policy(daemon=DaemonConfig(**daemon), rules=tuple(rules), files=("<test>",))


class FakeSysfs:
    """A directory laid out like /sys/class/net: <root>/<dev>/{threaded,ifindex}.

    ``ifindex``: the link's `ifindex` attribute (wgnapid.netns proves a link by
    it); None leaves it out, so no link is ever proven there."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.kinds: dict[str, str] = {}

    def add(self, name: str, content: str = "0\n", ifindex: int | None = None,
            kind: str = "wireguard") -> Path:
        d = self.root / name
        d.mkdir(exist_ok=True)
        f = d / "threaded"
        f.write_text(content)
        if ifindex is not None:
            (d / "ifindex").write_text(f"{ifindex}\n")
        self.kinds[name] = kind
        return f

    def rename(self, old: str, new: str) -> None:
        os.rename(self.root / old, self.root / new)
        self.kinds[new] = self.kinds.pop(old, "wireguard")

    def links(self) -> list[Link]:
        out = []
        for d in sorted(self.root.iterdir()):
            try:
                ifindex = int((d / "ifindex").read_text())
            except (OSError, ValueError):
                continue
            out.append(Link(ifindex, d.name, self.kinds.get(d.name, "wireguard")))
        return out

    def set(self, name: str, content: str) -> None:
        (self.root / name / "threaded").write_text(content)

    def get(self, name: str) -> str:
        return (self.root / name / "threaded").read_text()

    def remove(self, name: str) -> None:
        for f in (self.root / name).iterdir():
            f.unlink()
        (self.root / name).rmdir()


class FakeRtnl:
    """rtnetlink as the fake sysfs tree says (what the kernel would answer), with
    the lookups by ifindex recorded."""

    def __init__(self, sysfs: FakeSysfs):
        self.sysfs = sysfs
        self.gets: list[int] = []
        self.override: dict[int, Link | None] = {}  # answers that differ from the tree

    def get(self, ifindex: int) -> Link | None:
        self.gets.append(ifindex)
        if ifindex in self.override:
            return self.override[ifindex]
        return next((l for l in self.sysfs.links() if l.ifindex == ifindex), None)

    def dump_consistent(self, attempts: int = 5):
        return self.sysfs.links(), True

    def close(self) -> None:
        pass


def fake_ns(sysfs: FakeSysfs, attr=None, ino: int = 4026531999, name: str = "self") -> NetNamespace:
    """A NetNamespace whose sysfs view is the fake tree and whose rtnetlink is FakeRtnl."""
    dirfd = os.open(sysfs.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return NetNamespace(NsId(0, ino), name, FakeRtnl(sysfs), dirfd, str(sysfs.root), attr)


class RecordingLog(Log):
    """A Log whose events are kept, with their journal fields, instead of printed."""

    def __init__(self, level: str = "debug"):
        super().__init__("stderr", level)
        self.events: list[tuple[str, int, str, dict]] = []

    def event(self, kind, priority, message, **fields):
        if priority > self.threshold:
            return
        self.events.append((kind, priority, message, fields))

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    def of(self, kind: str) -> list[tuple[str, int, str, dict]]:
        return [e for e in self.events if e[0] == kind]


def tree(root: Path) -> set[str]:
    """Every path under root, relative, for 'nothing was created' checks."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Attr(ThreadedAttr):
    """The real ThreadedAttr on a fake root, recording writes; names in
    `unsettable` answer EOPNOTSUPP (no NAPI instance yet); `forced` results
    replace a write's outcome; names in `ignore_writes` accept the write but
    the kernel keeps its value."""

    def __init__(self, fakesys):
        super().__init__()
        self.fakesys = fakesys
        self.writes: list[tuple[str, int]] = []
        self.unsettable: set[str] = set()
        self.forced: dict[str, Result] = {}
        self.ignore_writes: set[str] = set()
        self.gate: threading.Event | None = None  # when set: writes wait for it
        self.raising: set[str] = set()

    def pwrite(self, op, value):
        # Every write (write_opened's and a retry's) is this one pwrite.
        ifname = op.ifname
        self.writes.append((ifname, value))
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        if ifname in self.raising:
            raise RuntimeError("writer bug")
        if ifname in self.unsettable:
            return None  # EOPNOTSUPP: no NAPI instance yet
        if ifname in self.forced:
            forced = self.forced[ifname]
            return None if forced.outcome is Outcome.NOT_SETTABLE else forced
        if ifname in self.ignore_writes:
            return Result(Outcome.OK, value=value)
        return super().pwrite(op, value)

    def retry_each(self, ops, value, max_written):
        # The retry batch with each write through pwrite() above (the fake
        # kernel); the real batch runs on real files in
        # tests/unit/test_hotpath.py and tests/integration/test_waiting.py.
        answers, written, tried = [], 0, 0
        for i, op in enumerate(ops):
            if written >= max_written:
                break
            tried = i + 1
            result = self.pwrite(op, value)
            if result is not None:
                answers.append((i, result))
                written += result.outcome is Outcome.OK
        return answers, tried


def write(path: Path, text: str | bytes) -> str:
    """A policy file (text, or bytes for encoding tests) at ``path``; its path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


def stat_line(pid, comm, ppid, *, utime=0, stime=0, nice=0, cpu=0, rtprio=0, policy=0):
    """A /proc/PID/stat line: fields 3..52, the ones wgnapid reads set."""
    f = ["0"] * 50  # f[i] is field i + 3
    f[0], f[1] = "S", str(ppid)
    f[11], f[12] = str(utime), str(stime)
    f[16] = str(nice)
    f[36], f[37], f[38] = str(cpu), str(rtprio), str(policy)
    return f"{pid} ({comm}) {' '.join(f)}\n".encode()
