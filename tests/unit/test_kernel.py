"""wgnapid.kernel: release parsing, the CVE-2026-52945 verdict and the guard."""

import io

import pytest

from wgnapid import kernel
from wgnapid.kernel import CVE, guard_holds, guard_warning, parse_release, verdict_for

# What Debian 12's 6.1 kernel really puts in /proc/version (taken from
# vmlinuz-6.1.0-56-amd64, sublevel changed): the compiler's Debian version
# comes *before* the kernel's.
DEBIAN_PROC_VERSION = (
    "Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian "
    "12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP "
    "PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-05-01)\n"
)


@pytest.mark.parametrize(
    "release, version, verdict",
    [
        ("6.1.0-50-amd64", (6, 1, 0), "risky"),
        ("6.12.117+deb12-amd64", (6, 12, 117), "safe"),
        ("6.8.0-117-generic", (6, 8, 0), "risky"),
        ("5.14.0-503.el9.x86_64", (5, 14, 0), "risky"),
        ("6.6.87.2-microsoft-standard-WSL2", (6, 6, 87), "risky"),
        ("7.0.1-arch1-1", (7, 0, 1), "safe"),
        ("6.18.44-fc-v669", (6, 18, 44), "safe"),
        ("6.9.12", (6, 9, 12), "risky"),
        ("6.10", (6, 10, 0), "safe"),
        ("6.10.0-rc1", (6, 10, 0), "safe"),
        ("5.15.186-generic", (5, 15, 186), "risky"),
        ("4.19.0-27-amd64", (4, 19, 0), "risky"),
        ("10.0.0", (10, 0, 0), "safe"),  # numeric, not lexical, comparison
        ("6.100.0", (6, 100, 0), "safe"),
        ("5.99.0", (5, 99, 0), "risky"),
    ],
)
def test_release_verdicts(release, version, verdict):
    v = verdict_for(release)
    assert v.release == release
    assert v.version == version
    assert v.verdict == verdict
    assert v.version_text == ".".join(map(str, version))


@pytest.mark.parametrize("release", ["", "garbage", "v6.1", "6", "6.", "-6.1", "six.one"])
def test_unparsable_release_is_unknown(release):
    v = verdict_for(release)
    assert parse_release(release) is None
    assert v.verdict == "unknown"
    assert v.version is None and v.version_text is None
    assert CVE in v.reason
    assert "risky" in v.reason


def test_debian_hidden_sublevel_from_a_short_proc_version():
    v = verdict_for("6.1.0-50-amd64", "Linux version 6.1.0-50-amd64 ... Debian 6.1.176-1 ...")
    assert v.version == (6, 1, 176)
    assert v.version_text == "6.1.176"
    assert v.verdict == "risky"
    assert "6.1.176" in v.reason


def test_debian_hidden_sublevel_from_the_real_proc_version():
    # "Debian 12.2.0" (gcc) comes first and must not hide "Debian 6.1.176".
    assert parse_release("6.1.0-50-amd64", DEBIAN_PROC_VERSION) == (6, 1, 176)


def test_debian_version_of_another_kernel_line_is_not_taken():
    # /proc/version naming a different major.minor does not change the release.
    assert parse_release("6.1.0-50-amd64", "... Debian 6.12.117-1 ...") == (6, 1, 0)


def test_no_proc_version_keeps_the_release_sublevel():
    assert parse_release("6.1.0-50-amd64", "") == (6, 1, 0)
    assert parse_release("6.12.117+deb12-amd64", "") == (6, 12, 117)


def test_first_safe_is_6_10():
    assert verdict_for("6.9.999").verdict == "risky"
    assert verdict_for("6.10.0").verdict == "safe"


def test_risky_reason_mentions_cve_and_version():
    v = verdict_for("6.8.0-117-generic")
    assert CVE in v.reason and "6.8.0" in v.reason and "6.10" in v.reason


def test_running_verdict_reads_uname_and_proc_version(monkeypatch):
    class U:
        release = "6.1.0-50-amd64"

    monkeypatch.setattr(kernel.os, "uname", lambda: U)

    def fake_open(path, *a, **k):
        if path == "/proc/version_signature":  # Ubuntu only
            raise FileNotFoundError(path)
        assert path == "/proc/version"
        # Without the gcc line: this test is about the wiring, not the regex.
        return io.StringIO("Linux version 6.1.0-50-amd64 #1 SMP Debian 6.1.99-1\n")

    monkeypatch.setattr(kernel, "open", fake_open, raising=False)
    v = kernel.running_verdict()
    assert v.release == "6.1.0-50-amd64"
    assert v.version == (6, 1, 99)


# -- guard ------------------------------------------------------------------------

RISKY = verdict_for("6.1.0-50-amd64", "Debian 6.1.176-1")
UNKNOWN = verdict_for("garbage")
SAFE = verdict_for("6.12.117+deb12-amd64")


@pytest.mark.parametrize(
    "guard, verdict, kind, holds",
    [
        ("strict", RISKY, "wireguard", True),
        ("strict", UNKNOWN, "wireguard", True),
        ("strict", SAFE, "wireguard", False),
        ("strict", RISKY, "veth", False),
        ("strict", UNKNOWN, "veth", False),
        ("strict", SAFE, "veth", False),
        ("strict", RISKY, "", False),
        ("warn", RISKY, "wireguard", False),
        ("warn", UNKNOWN, "wireguard", False),
        ("warn", SAFE, "wireguard", False),
        ("warn", RISKY, "veth", False),
        ("off", RISKY, "wireguard", False),
        ("off", UNKNOWN, "wireguard", False),
        ("off", SAFE, "wireguard", False),
        ("off", UNKNOWN, "veth", False),
    ],
)
def test_guard_holds(guard, verdict, kind, holds):
    assert guard_holds(guard, verdict, kind) is holds


@pytest.mark.parametrize("verdict", [RISKY, UNKNOWN], ids=["risky", "unknown"])
def test_strict_warning_explains_and_gives_the_opt_in_line(verdict):
    w = guard_warning("strict", verdict)
    assert w is not None
    assert CVE in w
    assert 'kernel_guard = "warn"' in w
    assert "[daemon]" in w
    assert "held" in w
    # The kernel it is about: the release or, when known, its full version.
    assert verdict.release in w or verdict.version_text in w


def test_strict_warning_shows_the_debian_sublevel():
    assert "6.1.176" in guard_warning("strict", RISKY)


def test_unknown_warning_shows_the_unparsable_release():
    w = guard_warning("strict", verdict_for("weird-kernel"))
    assert "weird-kernel" in w


@pytest.mark.parametrize("verdict", [RISKY, UNKNOWN], ids=["risky", "unknown"])
def test_warn_warning_says_it_enables_anyway(verdict):
    w = guard_warning("warn", verdict)
    assert w is not None
    assert CVE in w
    assert "enabling" in w
    assert 'kernel_guard = "warn"' in w
    assert "not enabling" not in w


@pytest.mark.parametrize("guard", ["strict", "warn", "off"])
def test_no_warning_when_safe(guard):
    assert guard_warning(guard, SAFE) is None


@pytest.mark.parametrize("verdict", [RISKY, UNKNOWN, SAFE])
def test_no_warning_when_off(verdict):
    assert guard_warning("off", verdict) is None
