"""Kernel release parsing and the kernel-guard verdict.

Threaded NAPI on WireGuard has unrecovered permanent-stall reports
(CVE-2026-52945) on kernels before 6.10, the first mainline release with the
threaded-NAPI wakeup rework (56364c910691); see KERNEL-FACTS.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

CVE = "CVE-2026-52945"
FIRST_SAFE = (6, 10)
NATIVE_SINCE = (6, 16)  # db9ae3b6b43c: wg_newlink() makes every WireGuard device threaded
OPT_IN_LINE = 'kernel_guard = "warn"'

_RELEASE_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
# Debian hides the sublevel in the release ("6.1.0-50-amd64") but /proc/version
# carries the real one: "... Debian 6.1.176-1 ...".
_DEBIAN_VERSION_RE = re.compile(r"Debian (\d+\.\d+\.\d+)")


@dataclass(frozen=True, slots=True)
class Verdict:
    release: str
    version: tuple[int, int, int] | None
    verdict: str  # "safe" | "risky" | "unknown"
    reason: str

    @property
    def version_text(self) -> str | None:
        return ".".join(map(str, self.version)) if self.version else None


def parse_release(release: str, proc_version: str = "") -> tuple[int, int, int] | None:
    m = _RELEASE_RE.match(release.strip())
    if not m:
        return None
    major, minor, sub = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    # The compiler's "Debian 12.2.0" comes first: take the match of this kernel.
    for d in _DEBIAN_VERSION_RE.finditer(proc_version):
        dmaj, dmin, dsub = (int(x) for x in d.group(1).split("."))
        if (dmaj, dmin) == (major, minor):
            sub = dsub
    return (major, minor, sub)


def verdict_for(release: str, proc_version: str = "") -> Verdict:
    version = parse_release(release, proc_version)
    if version is None:
        return Verdict(
            release,
            None,
            "unknown",
            f"cannot parse kernel release {release!r}; treated as risky: threaded NAPI "
            f"on WireGuard stalls permanently on kernels before 6.10 ({CVE})",
        )
    shown = release
    if version != parse_release(release):  # the real sublevel came from /proc/version
        shown = f"{release} ({'.'.join(map(str, version))})"  # "6.1.0-50-amd64 (6.1.176)"
    if version[:2] < FIRST_SAFE:
        return Verdict(
            release,
            version,
            "risky",
            f"kernel {shown} is older than 6.10: threaded NAPI on WireGuard has known "
            f"permanent receive stalls there ({CVE})",
        )
    return Verdict(
        release, version, "safe", f"kernel {shown} has the threaded-NAPI wakeup rework (6.10+)"
    )


def running_verdict() -> Verdict:
    release = os.uname().release
    try:
        with open("/proc/version") as f:
            proc_version = f.read()
    except OSError:
        proc_version = ""
    return verdict_for(release, proc_version)


def guard_holds(guard: str, verdict: Verdict, kind: str) -> bool:
    """Whether the guard keeps wgnapid from enabling threaded NAPI on this link."""
    return guard == "strict" and kind == "wireguard" and verdict.verdict != "safe"


def guard_warning(guard: str, verdict: Verdict) -> str | None:
    """The one start-up warning, or None when there is nothing to warn about."""
    if guard == "off" or verdict.verdict == "safe":
        return None
    if guard == "strict":
        return (
            f"kernel guard: not enabling threaded NAPI on WireGuard links: {verdict.reason}. "
            f"WireGuard links stay in softirq mode (state held). To enable it anyway, knowing "
            f'the risk, set {OPT_IN_LINE} under [daemon] in the policy'
        )
    return (
        f"kernel guard: enabling threaded NAPI on WireGuard links although {verdict.reason}; "
        f'chosen by {OPT_IN_LINE}'
    )
