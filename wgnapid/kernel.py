"""Kernel release parsing and the kernel-guard verdict.

Threaded NAPI on WireGuard has unrecovered permanent-stall reports
(CVE-2026-52945) on kernels before 6.10, the first mainline release with the
threaded-NAPI wakeup rework (56364c910691); see KERNEL-FACTS.md.

Two questions are answered here, from the release string alone:

- the guard's verdict ("safe" | "risky" | "unknown"): it depends only on
  major.minor (the 6.10 line), which every distribution's release string
  carries honestly;
- whether the kernel itself makes every WireGuard device threaded at creation
  (``creation_default``): mainline 6.16+ (db9ae3b6b43c) and the stable
  releases that carried its backport until the CVE revert (``CREATION_WINDOWS``).
  That needs the real stable sublevel, which distributions that number their
  kernels by ABI (Debian "6.1.0-37-amd64", Ubuntu "5.15.0-140-generic", Red Hat
  "5.14.0-503.el9.x86_64") do not put in the release: Debian puts it in
  /proc/version ("Debian 6.1.140-1"), Ubuntu in /proc/version_signature
  ("... 5.15.178"), Red Hat nowhere (its kernels are a backport set of their
  own). Where the sublevel is unknown the answer is None: wgnapid then relies
  on what it sees (a peerless WireGuard link reading 1, reconciler.py), which
  is the truth on every kernel anyway.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

CVE = "CVE-2026-52945"
FIRST_SAFE = (6, 10)
NATIVE_SINCE = (6, 16)  # db9ae3b6b43c: wg_newlink() makes every WireGuard device threaded
OPT_IN_LINE = 'kernel_guard = "warn"'

# Stable series that carried the backport of db9ae3b6b43c (every WireGuard
# device threaded at creation): (major, minor) -> (first sublevel, last
# sublevel or None while the series never reverted it). KERNEL-FACTS.md.
# 5.15, 6.1 and 6.6 lack the 6.10 wakeup rework: those windows are the
# configuration of the stall reports. 6.12 and 6.15 contain it.
CREATION_WINDOWS: dict[tuple[int, int], tuple[int, int | None]] = {
    (5, 15): (186, 200),
    (6, 1): (142, 163),
    (6, 6): (94, 126),
    (6, 12): (34, 73),
    (6, 15): (3, None),
}

_RELEASE_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
# "X.Y.0-N...": the third number is 0 and an ABI/build number follows (Debian
# "6.1.0-37-amd64", Ubuntu "5.15.0-140-generic", Red Hat "5.14.0-503.el9.x86_64"):
# the stable sublevel is not in the release.
_ABI_RE = re.compile(r"^\d+\.\d+\.0-\d+")
# Debian hides the sublevel in the release ("6.1.0-50-amd64") but /proc/version
# carries the real one: "... Debian 6.1.176-1 ...", also "Debian 7.3.4-1~bpo13+1".
_DEBIAN_VERSION_RE = re.compile(r"Debian (\d+\.\d+\.\d+)")
# Ubuntu's /proc/version_signature: "Ubuntu 5.15.0-140.150-generic 5.15.178",
# the last field is the upstream stable release the kernel is based on.
_UBUNTU_SIGNATURE_RE = re.compile(r"^Ubuntu \S+ (\d+\.\d+\.\d+)\s*$")


def creation_default(version: tuple[int, int, int] | None, sublevel_known: bool = True
                     ) -> bool | None:
    """Whether a kernel of ``version`` (major, minor, sublevel) sets threaded NAPI on
    every WireGuard device at creation: True for mainline 6.16+ and the stable
    windows in CREATION_WINDOWS, False outside them, None when it cannot be told
    (no version, or an ABI-numbered release whose stable base is not known: a
    distribution that picks patches itself, such as Red Hat, may carry the
    backport in any series)."""
    if version is None:
        return None
    series = version[:2]
    if series >= NATIVE_SINCE:
        return True
    if not sublevel_known:
        return None
    window = CREATION_WINDOWS.get(series)
    if window is None:
        return False
    first, last = window
    return version[2] >= first and (last is None or version[2] <= last)


def window_text(series: tuple[int, int]) -> str | None:
    """The stable window of ``series`` as text ("6.1.142-163", "6.15.3+"), or None."""
    window = CREATION_WINDOWS.get(series)
    if window is None:
        return None
    first, last = window
    return f"{series[0]}.{series[1]}.{first}" + (f"-{last}" if last is not None else "+")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What wgnapid concludes about a kernel from its release strings.

    ``version``: (major, minor, sublevel), the sublevel 0 when it is not known
    (see ``sublevel_known``); None when the release cannot be parsed.
    ``verdict``: "safe" (6.10+), "risky" (older) or "unknown" (unparsable,
    treated as risky). ``creation_default``: the kernel threads every WireGuard
    device at creation, by its version (creation_default()); None when the
    version cannot tell.
    """

    release: str
    version: tuple[int, int, int] | None
    verdict: str  # "safe" | "risky" | "unknown"
    reason: str
    sublevel_known: bool = True
    creation_default: bool | None = None

    @property
    def version_text(self) -> str | None:
        return ".".join(map(str, self.version)) if self.version else None

    @property
    def window(self) -> str | None:
        """The stable window of this kernel's series ("6.1.142-163"), if it has one."""
        return window_text(self.version[:2]) if self.version else None


def parse_release_full(release: str, proc_version: str = "", version_signature: str = ""
                       ) -> tuple[tuple[int, int, int] | None, bool]:
    """(version, sublevel_known) from uname's release, /proc/version and Ubuntu's
    /proc/version_signature. The sublevel comes from the release unless it is an
    ABI-numbered "X.Y.0-N" release, then from "Debian X.Y.Z" in /proc/version or
    the signature's upstream version, when they name the same X.Y."""
    m = _RELEASE_RE.match(release.strip())
    if not m:
        return None, False
    major, minor, sub = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    known = not _ABI_RE.match(release.strip())
    found = [d.group(1) for d in _DEBIAN_VERSION_RE.finditer(proc_version)]
    sig = _UBUNTU_SIGNATURE_RE.match(version_signature.strip())
    if sig:
        found.append(sig.group(1))
    # The compiler's "Debian 12.2.0" comes first: take the match of this kernel.
    for text in found:
        dmaj, dmin, dsub = (int(x) for x in text.split("."))
        if (dmaj, dmin) == (major, minor):
            sub, known = dsub, True
    return (major, minor, sub), known


def parse_release(release: str, proc_version: str = "") -> tuple[int, int, int] | None:
    """(major, minor, sublevel) or None; the sublevel is 0 when not known."""
    return parse_release_full(release, proc_version)[0]


def verdict_for(release: str, proc_version: str = "", version_signature: str = "") -> Verdict:
    """The guard's verdict for a kernel release (uname -r), with /proc/version and
    /proc/version_signature when available for the hidden sublevel."""
    version, known = parse_release_full(release, proc_version, version_signature)
    if version is None:
        return Verdict(
            release,
            None,
            "unknown",
            f"cannot parse kernel release {release!r}; treated as risky: threaded NAPI "
            f"on WireGuard stalls permanently on kernels before 6.10 ({CVE})",
            sublevel_known=False,
        )
    sets = creation_default(version, known)
    shown = release
    if version != parse_release_full(release)[0]:  # the real sublevel came from elsewhere
        shown = f"{release} ({'.'.join(map(str, version))})"  # "6.1.0-50-amd64 (6.1.176)"
    window = window_text(version[:2])
    if version[:2] < FIRST_SAFE:
        reason = (f"kernel {shown} is older than 6.10: threaded NAPI on WireGuard has known "
                  f"permanent receive stalls there ({CVE})")
        if sets:
            reason += (f"; this kernel is in the {window} window that enables it on every "
                       "WireGuard device itself")
        return Verdict(release, version, "risky", reason, known, sets)
    reason = f"kernel {shown} has the threaded-NAPI wakeup rework (6.10+)"
    if sets and version[:2] < NATIVE_SINCE:
        reason += f"; it is in the {window} window that enables threaded NAPI on WireGuard itself"
    return Verdict(release, version, "safe", reason, known, sets)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def running_verdict() -> Verdict:
    """The verdict for the running kernel: uname, /proc/version, /proc/version_signature."""
    return verdict_for(os.uname().release, _read("/proc/version"),
                       _read("/proc/version_signature"))


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


# What wgnapid does once it sees the kernel thread WireGuard links itself.
VERIFY, MITIGATE, LEAVE = "verify", "mitigate", "leave"


def native_handling(guard: str, verdict: Verdict) -> str:
    """How WireGuard links the kernel itself made threaded are handled.

    "mitigate" (``strict`` on a kernel that is not safe: the CVE-2026-52945
    window of 5.15, 6.1 and 6.6): written back to 0 once settable, shown held.
    "leave" (``warn`` there): the kernel's choice stays, said once.
    "verify" (a safe kernel, or ``off``): read and reported, never written.
    """
    if verdict.verdict == "safe" or guard == "off":
        return VERIFY
    return MITIGATE if guard == "strict" else LEAVE


def native_message(guard: str, verdict: Verdict, ifname: str, *, seen: bool = True
                   ) -> tuple[bool, str]:
    """(is_warning, text) logged once per daemon run when wgnapid first finds that
    the kernel enables threaded NAPI on WireGuard links itself. ``seen``: a
    peerless link (``ifname``) read 1 before wgnapid wrote it; otherwise the
    release is in a window that does it (``ifname`` is the first such link)."""
    if seen:
        what = (f"the kernel itself enabled threaded NAPI on WireGuard links ({ifname} was "
                "threaded before it had a peer)")
    else:
        what = (f"the kernel itself enables threaded NAPI on every WireGuard link at "
                f"creation (release {verdict.version_text} is in the {verdict.window} window; "
                f"{ifname} reads 1)")
    handling = native_handling(guard, verdict)
    if handling == MITIGATE:
        return True, (
            f"{what}, on a kernel the guard calls {verdict.verdict}: {verdict.reason}. "
            f"kernel_guard = \"strict\": wgnapid turns it back off (softirq mode) on every "
            f"WireGuard link as soon as the link has a peer, mitigating {CVE} without a "
            f"reboot; those links are shown as held")
    if handling == LEAVE:
        return True, (
            f"{what}, on a kernel the guard calls {verdict.verdict}: {verdict.reason}. "
            f"{OPT_IN_LINE}: the kernel's choice is left in place ({CVE} risk accepted)")
    return False, (f"{what}; kernel guard verdict {verdict.verdict} (guard {guard}): "
                   f"{verdict.reason}. wgnapid only verifies them from now on")
