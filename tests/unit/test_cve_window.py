"""Issue 13: kernels that thread WireGuard by themselves.

Release strings of the CVE-2026-52945 window kernels (Debian, Ubuntu, Red Hat
styles), and the real Reconciler over a fake sysfs for each window, verdict
and kernel_guard mode. The Debian mirror keeps only current kernels, so the
window's kernels cannot be booted here (KERNEL-FACTS.md): what differs between
them is only the release string and what a fresh WireGuard link reads, both
of which are given here.
"""

from __future__ import annotations

import syslog

import pytest

from wgnapid import cli, kernel
from wgnapid.kernel import CVE, creation_default, parse_release_full, verdict_for
from wgnapid.links import Link
from wgnapid.reconciler import HELD_OFF, HELD_WAITING

from .helpers import rule
from .test_reconciler import make

WG = Link(5, "wg0", "wireguard")
WG2 = Link(9, "wg1", "wireguard")


# -- release strings ------------------------------------------------------------------------

def debian(sub: str) -> str:
    """/proc/version of a Debian kernel, gcc's "Debian 12.2.0" first as in the real one."""
    return ("Linux version 6.1.0-37-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian "
            "12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP "
            f"PREEMPT_DYNAMIC Debian {sub} (2025-05-22)\n")


# (release, /proc/version, /proc/version_signature,
#  version, sublevel known, creation default, verdict)
RELEASES = [
    # Debian: the ABI number is in the release, the sublevel in /proc/version.
    ("6.1.0-37-amd64", debian("6.1.140-1"), "", (6, 1, 140), True, False, "risky"),
    ("6.1.0-38-amd64", debian("6.1.142-1"), "", (6, 1, 142), True, True, "risky"),
    ("6.1.0-41-amd64", debian("6.1.158-1"), "", (6, 1, 158), True, True, "risky"),
    ("6.1.0-42-amd64", debian("6.1.163-1"), "", (6, 1, 163), True, True, "risky"),
    ("6.1.0-43-amd64", debian("6.1.164-1"), "", (6, 1, 164), True, False, "risky"),
    ("6.1.0-37-amd64", "", "", (6, 1, 0), False, None, "risky"),  # no /proc/version
    ("5.10.0-35-amd64", debian("5.10.237-1"), "", (5, 10, 237), True, False, "risky"),
    ("6.12.38+deb13-amd64", "Debian 6.12.38-1", "", (6, 12, 38), True, True, "safe"),
    ("6.12.117+deb12-amd64", "Debian 6.12.117-1~deb12u1", "", (6, 12, 117), True, False, "safe"),
    ("7.3.4+deb13-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 7.3.4-1~bpo13+1 (2026-11-15)", "",
     (7, 3, 4), True, True, "safe"),
    # Ubuntu: "5.15.0-140" is an ABI number, not the stable sublevel; only
    # /proc/version_signature names the upstream base.
    ("5.15.0-140-generic", "#150-Ubuntu SMP", "", (5, 15, 0), False, None, "risky"),
    ("5.15.0-150-generic", "#160-Ubuntu SMP", "Ubuntu 5.15.0-150.160-generic 5.15.190\n",
     (5, 15, 190), True, True, "risky"),
    ("5.15.0-130-generic", "#140-Ubuntu SMP", "Ubuntu 5.15.0-130.140-generic 5.15.170\n",
     (5, 15, 170), True, False, "risky"),
    ("6.8.0-117-generic", "#117-Ubuntu SMP", "", (6, 8, 0), False, None, "risky"),
    ("6.8.0-60-generic", "", "Ubuntu 6.8.0-60.63-generic 6.8.12\n", (6, 8, 12), True, False,
     "risky"),
    # a signature of another series does not lend its sublevel
    ("5.15.0-150-generic", "", "Ubuntu 6.8.0-60.63-generic 6.8.12", (5, 15, 0), False, None,
     "risky"),
    # Red Hat: a backport set of its own; the build number says nothing of it.
    ("5.14.0-503.el9.x86_64", "Linux version 5.14.0-503.el9.x86_64 (mockbuild@...)", "",
     (5, 14, 0), False, None, "risky"),
    ("6.12.0-55.el10.x86_64", "", "", (6, 12, 0), False, None, "safe"),
    # Upstream-numbered releases (Arch, Fedora, stable tarballs).
    ("6.6.94-1-lts", "", "", (6, 6, 94), True, True, "risky"),
    ("6.6.93-1-lts", "", "", (6, 6, 93), True, False, "risky"),
    ("6.6.126", "", "", (6, 6, 126), True, True, "risky"),
    ("6.6.127", "", "", (6, 6, 127), True, False, "risky"),
    ("5.15.186", "", "", (5, 15, 186), True, True, "risky"),
    ("5.15.200", "", "", (5, 15, 200), True, True, "risky"),
    ("5.15.201", "", "", (5, 15, 201), True, False, "risky"),
    ("5.15.185", "", "", (5, 15, 185), True, False, "risky"),
    ("6.12.33", "", "", (6, 12, 33), True, False, "safe"),
    ("6.12.34", "", "", (6, 12, 34), True, True, "safe"),
    ("6.12.73", "", "", (6, 12, 73), True, True, "safe"),
    ("6.12.74", "", "", (6, 12, 74), True, False, "safe"),
    ("6.15.2-300.fc42.x86_64", "", "", (6, 15, 2), True, False, "safe"),
    ("6.15.3-200.fc42.x86_64", "", "", (6, 15, 3), True, True, "safe"),
    ("6.15.11", "", "", (6, 15, 11), True, True, "safe"),
    ("6.14.11", "", "", (6, 14, 11), True, False, "safe"),
    ("6.16.0", "", "", (6, 16, 0), True, True, "safe"),
    ("6.18.44-fc-v657", "", "", (6, 18, 44), True, True, "safe"),
    ("6.10.0-rc1", "", "", (6, 10, 0), True, False, "safe"),
    ("6.9.12", "", "", (6, 9, 12), True, False, "risky"),
]


@pytest.mark.parametrize("release, proc, sig, version, known, sets, verdict", RELEASES)
def test_release_strings(release, proc, sig, version, known, sets, verdict):
    assert parse_release_full(release, proc, sig) == (version, known)
    v = verdict_for(release, proc, sig)
    assert (v.version, v.sublevel_known, v.creation_default, v.verdict) == (
        version, known, sets, verdict)
    if sets and verdict == "risky":
        # The reason names the window and says the kernel does it itself.
        assert v.window in v.reason and "itself" in v.reason and CVE in v.reason


@pytest.mark.parametrize("series, first, last", [
    ((5, 15), 186, 200), ((6, 1), 142, 163), ((6, 6), 94, 126), ((6, 12), 34, 73)])
def test_window_edges(series, first, last):
    assert creation_default((*series, first - 1)) is False
    assert creation_default((*series, first)) is True
    assert creation_default((*series, last)) is True
    assert creation_default((*series, last + 1)) is False
    # Without the sublevel (ABI-numbered release) nothing can be concluded.
    assert creation_default((*series, 0), sublevel_known=False) is None


def test_mainline_from_6_16_whatever_the_sublevel():
    assert creation_default((6, 16, 0), sublevel_known=False) is True
    assert creation_default((7, 3, 4)) is True
    assert creation_default((6, 15, 2)) is False and creation_default((6, 15, 3)) is True
    assert creation_default(None) is None


def test_window_text():
    assert kernel.window_text((6, 1)) == "6.1.142-163"
    assert kernel.window_text((6, 15)) == "6.15.3+"
    assert kernel.window_text((6, 8)) is None


@pytest.mark.parametrize("guard, verdict, handling", [
    ("strict", "risky", "mitigate"), ("strict", "unknown", "mitigate"), ("strict", "safe", "verify"),
    ("warn", "risky", "leave"), ("warn", "unknown", "leave"), ("warn", "safe", "verify"),
    ("off", "risky", "verify"), ("off", "unknown", "verify"), ("off", "safe", "verify"),
])
def test_native_handling(guard, verdict, handling):
    v = {"risky": verdict_for("6.1.150"), "unknown": verdict_for("x"),
         "safe": verdict_for("7.3.4")}[verdict]
    assert kernel.native_handling(guard, v) == handling


# -- the reconciler over a fake sysfs: each window, verdict and guard --------------------------

# One kernel per window (and after it), as the reconciler gets it.
RISKY_WINDOW = {
    "5.15.190": verdict_for("5.15.190"),
    "6.1.150 (Debian)": verdict_for("6.1.0-40-amd64", debian("6.1.150-1")),
    "6.6.100": verdict_for("6.6.100"),
    "5.15.0-150 (Ubuntu)": verdict_for("5.15.0-150-generic", "",
                                       "Ubuntu 5.15.0-150.160-generic 5.15.190"),
}
SAFE_NATIVE = {
    "6.12.50": verdict_for("6.12.50"),
    "6.15.3": verdict_for("6.15.3"),
    "6.16.1": verdict_for("6.16.1"),
    "7.3.4 (Debian)": verdict_for("7.3.4+deb13-amd64", "Debian 7.3.4-1~bpo13+1"),
}


def held_logs(rlog, name):
    return [e for e in rlog.events if e[0] == "link-held" and e[3].get("interface") == name.encode()]


def warnings(rlog):
    return [e for e in rlog.events if e[1] <= syslog.LOG_WARNING]


@pytest.mark.parametrize("name", list(RISKY_WINDOW))
def test_strict_turns_the_kernels_own_default_off(fakesys, attr, rlog, clock, name):
    """A fresh peerless link reads 1 (the kernel set it): held, written 0 once it
    has a peer (EOPNOTSUPP before: retried like waiting), one warning per run."""
    verdict = RISKY_WINDOW[name]
    assert verdict.verdict == "risky" and verdict.creation_default is True
    fakesys.add("wg0", "1\n", 5)
    attr.unsettable.add("wg0")  # no peer yet: no NAPI instance
    peers = {"wg0": 0, "wg1": 0}
    rec = make(attr, rlog, clock, verdict=verdict, peers=peers, pending_max_delay=2)
    st = rec.observe(WG, new=True)
    assert st.state == "held" and st.reason == HELD_WAITING
    assert rec.native is True
    assert attr.writes == [("wg0", 0)] and fakesys.get("wg0") == "1\n"
    assert rec.next_retry() is not None, "a held link waiting for its peer is retried"
    (warning,) = warnings(rlog)
    kind, _prio, text, fields = warning
    assert kind == "kernel-native-risky"
    assert CVE in text and "kernel itself enabled" in text and "without a reboot" in text
    assert fields["wgnapid_kernel_verdict"] == "risky" and fields["wgnapid_guard"] == "strict"

    # Retries while peerless change nothing that is said.
    for _ in range(3):
        clock.t = rec.next_retry()
        rec.retry_due()
    assert rec.links[5].state == "held" and fakesys.get("wg0") == "1\n"
    assert [e[2] for e in held_logs(rlog, "wg0")] == [
        f"wg0: held by the kernel guard: {HELD_WAITING} [rule all]"]

    # The first peer: the next retry turns it off (within pending_max_delay).
    peers["wg0"] = 1
    attr.unsettable.discard("wg0")
    due = rec.next_retry()
    assert due - clock.t <= 2
    clock.t = due
    rec.retry_due()
    st = rec.links[5]
    assert fakesys.get("wg0") == "0\n"
    assert (st.state, st.reason, st.current) == ("held", HELD_OFF, 0)
    assert rec.next_retry() is None
    assert [e[2] for e in held_logs(rlog, "wg0")][1:] == [
        f"wg0: held by the kernel guard: {HELD_OFF} [rule all]"]

    # A second link: no second warning; the kernel's 1 on a link that has a peer
    # already is turned off at once.
    fakesys.add("wg1", "1\n", 9)
    peers["wg1"] = 2
    assert rec.observe(WG2, new=True).state == "held"
    assert fakesys.get("wg1") == "0\n"
    assert len(warnings(rlog)) == 1
    assert rec.stats.writes_by_kind == {"wireguard": len(attr.writes)}
    assert rec.summary() == {"held": 2}


@pytest.mark.parametrize("name", list(RISKY_WINDOW))
def test_strict_re_asserts_0_when_1_comes_back(fakesys, attr, rlog, clock, name):
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, verdict=RISKY_WINDOW[name], peers={"wg0": 0})
    assert rec.observe(WG, new=True).state == "held"
    assert fakesys.get("wg0") == "0\n"
    fakesys.set("wg0", "1\n")  # by hand, or the kernel re-created it
    assert rec.observe(WG).state == "held"
    assert fakesys.get("wg0") == "0\n"
    notices = [e for e in rlog.events if e[1] == syslog.LOG_NOTICE and "re-asserted" in e[2]]
    assert len(notices) == 1 and "threaded=0" in notices[0][2]


@pytest.mark.parametrize("name", list(RISKY_WINDOW))
def test_warn_leaves_the_kernels_choice_and_says_so_once(fakesys, attr, rlog, clock, name):
    fakesys.add("wg0", "1\n", 5)
    fakesys.add("wg1", "1\n", 9)
    rec = make(attr, rlog, clock, verdict=RISKY_WINDOW[name], peers={"wg0": 0, "wg1": 0},
               kernel_guard="warn")
    st = rec.observe(WG, new=True)
    assert rec.observe(WG2, new=True).state == "native"
    assert st.state == "native" and "risky" in st.reason and CVE in st.reason
    assert attr.writes == [] and fakesys.get("wg0") == "1\n"
    (warning,) = warnings(rlog)
    assert warning[0] == "kernel-native-risky"
    assert "left in place" in warning[2] and CVE in warning[2]
    assert "kernel itself enabled" in warning[2]


@pytest.mark.parametrize("name", list(RISKY_WINDOW))
def test_off_guard_does_nothing_special_but_never_says_safe(fakesys, attr, rlog, clock, name):
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, verdict=RISKY_WINDOW[name], peers={"wg0": 0},
               kernel_guard="off")
    st = rec.observe(WG, new=True)
    assert st.state == "native" and attr.writes == []
    assert warnings(rlog) == []
    (info,) = rlog.of("kernel-native")
    assert "verdict risky" in info[2] and "safe" not in info[2]
    assert "risky" in st.reason


@pytest.mark.parametrize("guard", ["strict", "warn", "off"])
@pytest.mark.parametrize("name", list(SAFE_NATIVE))
def test_safe_kernels_that_thread_wireguard_are_native_and_never_written(
        fakesys, attr, rlog, clock, name, guard):
    verdict = SAFE_NATIVE[name]
    fakesys.add("wg0", "1\n", 5)
    attr.unsettable.add("wg0")
    rec = make(attr, rlog, clock, verdict=verdict, peers={"wg0": 0}, kernel_guard=guard)
    st = rec.observe(WG, new=True)
    assert (st.state, st.reason) == ("native", "")
    assert rec.native is True and attr.writes == []
    assert rec.next_retry() is None
    assert warnings(rlog) == []
    (info,) = rlog.of("kernel-native")
    assert "verdict safe" in info[2] and info[1] == syslog.LOG_INFO
    assert info[3]["wgnapid_kernel_verdict"] == "safe"
    # An "off" rule still writes 0 once settable: a peerless link is waiting, not failed.
    fakesys.add("wgoff0", "1\n", 11)
    off = make(attr, rlog, clock, rule("keep-off", "off", interfaces=["wgoff*"]),
               verdict=verdict, peers={"wgoff0": 0}, kernel_guard=guard)
    attr.unsettable.add("wgoff0")
    assert off.observe(Link(11, "wgoff0", "wireguard"), new=True).state == "waiting"
    attr.unsettable.discard("wgoff0")
    clock.t = off.next_retry()
    off.retry_due()
    assert off.links[11].state == "off" and fakesys.get("wgoff0") == "0\n"
    assert off.stats.writes_by_kind == {"wireguard": 2}


def test_links_present_at_start_up_count_in_a_window(fakesys, attr, rlog, clock):
    # Not new (start-up): on a window kernel the release vouches for the evidence.
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, verdict=RISKY_WINDOW["6.1.150 (Debian)"], peers={"wg0": 0})
    assert rec.observe(WG).state == "held"
    assert rec.native is True and fakesys.get("wg0") == "0\n"


def test_a_window_kernel_link_with_peers_at_start_up_is_turned_off(fakesys, attr, rlog, clock):
    # It has a peer, so it proves nothing by itself; the release says the kernel
    # set it (or an operator did: strict keeps softirq mode either way).
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, verdict=RISKY_WINDOW["6.6.100"], peers={"wg0": 3})
    assert rec.observe(WG).state == "held"
    assert rec.native is False and fakesys.get("wg0") == "0\n"
    (warning,) = warnings(rlog)
    assert "6.6.94-126 window" in warning[2] and CVE in warning[2]


def test_outside_the_window_a_risky_kernel_is_held_as_before(fakesys, attr, rlog, clock):
    # Debian 6.1.140 (before the window): the kernel does not set it; a 1 at
    # start-up may be an earlier wgnapid's under "warn": left, held, not written.
    v = verdict_for("6.1.0-37-amd64", debian("6.1.140-1"))
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, verdict=v, peers={"wg0": 0})
    st = rec.observe(WG)
    assert (st.state, st.reason) == ("held", v.reason)
    assert rec.native is False and attr.writes == []


def test_seeing_beats_the_release_table(fakesys, attr, rlog, clock):
    # Ubuntu's ABI release tells nothing; a fresh peerless link reading 1 does.
    v = verdict_for("5.15.0-140-generic")
    assert v.creation_default is None
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, verdict=v, peers={"wg0": 0})
    assert rec.observe(WG, new=True).state == "held"
    assert rec.native is True and fakesys.get("wg0") == "0\n"
    assert "kernel-native-risky" in rlog.kinds()


def test_dry_run_shows_pending_and_writes_nothing(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, verdict=RISKY_WINDOW["6.6.100"], peers={"wg0": 0},
               dry_run=True)
    st = rec.observe(WG, new=True)
    assert st.state == "pending" and HELD_OFF in st.reason
    assert attr.writes == [] and rlog.events == []


# -- status and doctor show the verdict beside native -------------------------------------------

@pytest.mark.parametrize("guard, verdict, native, expect, absent", [
    ("strict", RISKY_WINDOW["6.6.100"], True, ["RISKY", CVE, "held"], []),
    ("warn", RISKY_WINDOW["6.6.100"], True, ["RISKY", CVE, "left on"], []),
    ("off", RISKY_WINDOW["6.6.100"], True, ["risky", CVE], ["safe"]),
    ("strict", SAFE_NATIVE["7.3.4 (Debian)"], True, ["yes", "guard verdict safe"], [CVE]),
    ("strict", RISKY_WINDOW["6.6.100"], None, ["by its release", "RISKY"], []),
    ("strict", verdict_for("6.12.117"), False, ["not seen"], ["safe", "RISKY"]),
])
def test_native_text_carries_the_verdict(guard, verdict, native, expect, absent):
    doc = cli._kernel_doc(guard, verdict, native)
    assert doc["verdict"] == verdict.verdict and doc["native"] is native
    assert doc["creation_default"] is verdict.creation_default
    text = cli.kernel_native_text(doc)
    for word in expect:
        assert word in text, text
    for word in absent:
        assert word not in text, text


def test_kernel_doc_handling():
    doc = cli._kernel_doc("strict", RISKY_WINDOW["5.15.190"], True)
    assert doc["native_handling"] == "mitigate" and doc["verdict"] == "risky"
    assert cli._kernel_doc(None, RISKY_WINDOW["5.15.190"], None)["native_handling"] is None


def test_a_window_kernel_link_already_0_is_held_without_a_write_or_warning(fakesys, attr, rlog,
                                                                           clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock, verdict=RISKY_WINDOW["6.1.150 (Debian)"], peers={"wg0": 1})
    st = rec.observe(WG)
    assert (st.state, st.reason) == ("held", HELD_OFF)
    assert attr.writes == [] and warnings(rlog) == []
