"""Helpers for the unit tests: policies, a fake sysfs tree, a recording log.

Nothing here touches the real /sys, /proc or netlink: every test runs as an
ordinary process in well under a second.
"""

from __future__ import annotations

import os
from pathlib import Path

from wgnapid.config import DaemonConfig, Policy, Rule
from wgnapid.log import Log


def rule(name, threaded="on", kinds=("*",), interfaces=("*",), netns=("*",)):
    return Rule(name=name, kinds=list(kinds), interfaces=list(interfaces), netns=list(netns),
                threaded=threaded)


def policy(*rules, **daemon):
    return Policy(daemon=DaemonConfig(**daemon), rules=tuple(rules), files=("<test>",))


class FakeSysfs:
    """A directory laid out like /sys/class/net: <root>/<dev>/threaded."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, content: str = "0\n") -> Path:
        d = self.root / name
        d.mkdir(exist_ok=True)
        f = d / "threaded"
        f.write_text(content)
        return f

    def set(self, name: str, content: str) -> None:
        (self.root / name / "threaded").write_text(content)

    def get(self, name: str) -> str:
        return (self.root / name / "threaded").read_text()

    def remove(self, name: str) -> None:
        (self.root / name / "threaded").unlink()
        (self.root / name).rmdir()


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
