"""wgnapid.reconciler.Reconciler against a fake sysfs root, a fake clock and a
fake WireGuard peer count."""

from __future__ import annotations

import select
import syslog
import threading
import time

import pytest

from wgnapid import kernel
from wgnapid.links import Link
from wgnapid.log import Log
from wgnapid.reconciler import RETRY_CAP_SHARE, RETRY_FIRST, Reconciler
from wgnapid.retries import SLOTS_PER_CAP
from wgnapid.sysfs import Outcome, Result  # noqa: F401

from .helpers import fake_ns, policy, rule

SAFE = kernel.verdict_for("6.12.117+deb12-amd64")
RISKY = kernel.verdict_for("6.1.0-50-amd64", "Debian 6.1.176-1")
UNKNOWN = kernel.verdict_for("garbage")

WG = Link(5, "wg0", "wireguard")
VETH = Link(6, "veth0", "veth")


def make(attr, log, clock, *rules, verdict=SAFE, dry_run=False, one_shot=False, peers=None,
         **daemon):
    pol = policy(*(rules or (rule("all", "on"),)), **daemon)
    peer_calls = []

    def peer_count(st):
        peer_calls.append(st.name)
        return (peers or {}).get(st.name, 1)

    rec = Reconciler(pol, log, fake_ns(attr.fakesys, attr), verdict=verdict, dry_run=dry_run, one_shot=one_shot,
                     clock=clock, peer_count=peer_count)
    rec.peer_calls = peer_calls
    return rec


def state_logs(log, link_name=None):
    """Per-link state-change entries (not notices such as drift re-asserts)."""
    return [e for e in log.events if e[0].startswith("link-") and e[1] != syslog.LOG_NOTICE
            and (link_name is None or e[3].get("interface") == (link_name and link_name.encode()))]


# -- the plain path -------------------------------------------------------------------


def test_wanted_on_reading_0_is_written_1_and_threaded(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock)
    st = rec.observe(WG)
    assert st.state == "threaded"
    assert fakesys.get("wg0") == "1\n"
    assert attr.writes == [("wg0", 1)]
    assert (st.before, st.current, st.changed, st.written) == (0, 1, True, True)
    assert rec.stats.writes == 1
    assert rec.summary() == {"threaded": 1}
    (entry,) = rlog.events
    kind, prio, msg, fields = entry
    assert kind == "link-threaded" and prio == syslog.LOG_INFO
    assert msg.startswith("wg0: ")
    assert fields == {"interface": b"wg0", "ifindex": 5, "wgnapid_rule": "all",
                      "wgnapid_state": "threaded", "wgnapid_netns": rec.netns,
                      "wgnapid_netns_name": "self"}


def test_already_as_wanted_is_not_written(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock)
    st = rec.observe(WG)
    assert st.state == "threaded" and not st.changed
    assert attr.writes == []


def test_wanted_off_reading_1_is_written_0(fakesys, attr, rlog, clock):
    fakesys.add("veth0", "1\n", 6, "veth")
    rec = make(attr, rlog, clock, rule("v", "off", kinds=["veth"]))
    assert rec.observe(VETH).state == "off"
    assert fakesys.get("veth0") == "0\n"


def test_re_observing_a_settled_link_logs_nothing_new(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock)
    for _ in range(5):
        rec.observe(WG)
    assert len(rlog.events) == 1
    assert attr.writes == [("wg0", 1)]


def test_unmatched_and_ignored_links_are_not_read_or_written(fakesys, attr, rlog, clock):
    # No file at all: a read would make them "gone".
    rec = make(attr, rlog, clock, rule("v", "ignore", kinds=["veth"]),
               rule("wg", "on", kinds=["wireguard"]))
    assert rec.observe(VETH).state == "ignored"
    assert rec.observe(Link(7, "eth0", "")).state == "unmatched"
    assert attr.writes == []
    assert rlog.kinds() == ["link-ignored", "link-unmatched"]
    assert all(e[1] == syslog.LOG_DEBUG for e in rlog.events)
    assert set(rec.links) == {6, 7}


def test_stderr_log_line(fakesys, attr, clock, capsys):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, Log("stderr", "debug"), clock)
    rec.observe(WG)
    err = capsys.readouterr().err
    assert err.startswith("wgnapid: info: wg0: threaded NAPI on")
    assert err.endswith("[rule all]\n")
    assert err.count("\n") == 1


# -- waiting: EOPNOTSUPP, retries ------------------------------------------------------


def test_not_settable_waits_and_backs_off_to_the_cap(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    attr.unsettable.add("wg0")
    rec = make(attr, rlog, clock, pending_max_delay=1.5)
    cap = 1.5 * RETRY_CAP_SHARE
    slot = cap / SLOTS_PER_CAP
    st = rec.observe(WG)
    assert st.state == "waiting"
    assert "peer" in st.reason
    # The first retry: RETRY_FIRST rounded to the slot grid, never later than one slot.
    assert clock.t < rec.next_retry() <= clock.t + max(RETRY_FIRST, slot) + 1e-9

    delays = []
    for _ in range(9):
        due = rec.next_retry()
        clock.t = due
        rec.retry_due()
        delays.append(rec.next_retry() - clock.t)
    # Doubling, each rounded down to the grid (never above what was asked), up
    # to the cap; a link retried on its slot keeps its phase: exactly the cap.
    asked = [0.2, 0.4, 0.8, cap, cap, cap, cap, cap, cap]
    for d, a in zip(delays, asked):
        assert a - slot - 1e-9 <= d <= a + 1e-9
    assert delays[4:] == pytest.approx([cap] * 5)
    assert len(attr.writes) == 10
    assert fakesys.get("wg0") == "0\n"
    # One state change logged, however many retries.
    assert state_logs(rlog) == [rlog.events[0]]
    assert rlog.events[0][0] == "link-waiting"
    assert rec.summary() == {"waiting": 1}


def test_retry_is_not_made_before_it_is_due(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    attr.unsettable.add("wg0")
    rec = make(attr, rlog, clock)
    rec.observe(WG)
    due = rec.next_retry()
    clock.t = due - 0.01
    rec.retry_due()
    assert len(attr.writes) == 1
    assert rec.next_retry() == due


def test_cap_below_the_first_delay(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    attr.unsettable.add("wg0")
    # 0.1 s is the lowest pending_max_delay the policy accepts; its cap (0.09 s)
    # is below the first retry delay (0.1 s).
    rec = make(attr, rlog, clock, pending_max_delay=0.1)
    rec.observe(WG)
    assert rec.next_retry() - clock.t == pytest.approx(0.09)
    clock.t = rec.next_retry()
    rec.retry_due()
    assert rec.next_retry() - clock.t == pytest.approx(0.09)


def test_becoming_settable_is_threaded_on_the_next_retry(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    attr.unsettable.add("wg0")
    rec = make(attr, rlog, clock)
    rec.observe(WG)
    for _ in range(3):
        clock.t = rec.next_retry()
        rec.retry_due()
    attr.unsettable.clear()  # the first peer was added: no event for that
    clock.t = rec.next_retry()
    rec.retry_due()
    assert rec.links[5].state == "threaded"
    assert fakesys.get("wg0") == "1\n"
    assert rec.next_retry() is None
    assert [e[0] for e in state_logs(rlog)] == ["link-waiting", "link-threaded"]
    assert rec.summary() == {"threaded": 1}


def test_several_waiting_links_are_retried_in_due_order(fakesys, attr, rlog, clock):
    for i, name in enumerate(("wg0", "wg1"), 1):
        fakesys.add(name, "0\n", i)
        attr.unsettable.add(name)
    rec = make(attr, rlog, clock)
    slot = 2 * RETRY_CAP_SHARE / SLOTS_PER_CAP
    clock.t = 1000.0 + slot * 0.1  # just after a grid point
    rec.observe(Link(1, "wg0", "wireguard"))
    clock.t += slot  # a slot later: wg1's first retry falls in a later slot
    rec.observe(Link(2, "wg1", "wireguard"))
    clock.t = rec.next_retry()  # wg0's
    rec.retry_due()
    assert [w[0] for w in attr.writes] == ["wg0", "wg1", "wg0"]
    clock.t += 1
    rec.retry_due()
    assert sorted(w[0] for w in attr.writes[3:]) == ["wg0", "wg1"]


def test_a_waiting_link_that_goes_away_has_no_retry(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    attr.unsettable.add("wg0")
    rec = make(attr, rlog, clock)
    rec.observe(WG)
    rec.remove(5)
    assert rec.next_retry() is None
    clock.t += 100
    rec.retry_due()
    assert len(attr.writes) == 1


def test_a_waiting_veth_explains_link_down_or_gro(fakesys, attr, rlog, clock):
    fakesys.add("veth0", "0\n", 6, "veth")
    attr.unsettable.add("veth0")
    rec = make(attr, rlog, clock)
    assert "GRO" in rec.observe(VETH).reason


# -- failures ---------------------------------------------------------------------------


def test_permission_failure(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    attr.forced["wg0"] = Result(Outcome.PERMISSION, detail="write: Operation not permitted; "
                                "needs CAP_NET_ADMIN")
    rec = make(attr, rlog, clock)
    st = rec.observe(WG)
    assert st.state == "failed"
    assert "CAP_NET_ADMIN" in st.reason
    assert rec.next_retry() is None
    (entry,) = rlog.events
    assert entry[0] == "link-failed" and entry[1] == syslog.LOG_ERR


def test_written_but_the_kernel_still_reads_the_old_value(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    attr.ignore_writes.add("wg0")
    rec = make(attr, rlog, clock)
    st = rec.observe(WG)
    assert st.state == "failed"
    assert st.reason == "wrote 1 but reads 0"


def test_short_write_means_gone(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    attr.forced["wg0"] = Result(Outcome.GONE, detail="short write (0 of 2 bytes)")
    rec = make(attr, rlog, clock)
    assert rec.observe(WG).state == "gone"
    assert 5 not in rec.links


# -- kernel guard ----------------------------------------------------------------------------


@pytest.mark.parametrize("verdict", [RISKY, UNKNOWN], ids=["risky", "unknown"])
def test_strict_guard_holds_wireguard_and_writes_nothing(fakesys, attr, rlog, clock, verdict):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock, verdict=verdict, kernel_guard="strict")
    st = rec.observe(WG)
    assert st.state == "held"
    assert kernel.CVE in st.reason
    assert attr.writes == []
    assert fakesys.get("wg0") == "0\n"
    assert rlog.events[0][0] == "link-held" and rlog.events[0][1] == syslog.LOG_NOTICE


def test_strict_guard_leaves_other_kinds_alone(fakesys, attr, rlog, clock):
    fakesys.add("veth0", "0\n", 6, "veth")
    rec = make(attr, rlog, clock, verdict=RISKY, kernel_guard="strict")
    assert rec.observe(VETH).state == "threaded"


def test_strict_guard_does_not_stop_turning_wireguard_off(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, rule("wg", "off", kinds=["wireguard"]), verdict=RISKY,
               kernel_guard="strict")
    assert rec.observe(WG).state == "off"
    assert fakesys.get("wg0") == "0\n"


@pytest.mark.parametrize("guard", ["warn", "off"])
def test_warn_and_off_guard_write(fakesys, attr, rlog, clock, guard):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock, verdict=RISKY, kernel_guard=guard)
    assert rec.observe(WG).state == "threaded"
    assert fakesys.get("wg0") == "1\n"


def test_strict_guard_on_a_safe_kernel_writes(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock, verdict=SAFE, kernel_guard="strict")
    assert rec.observe(WG).state == "threaded"


# -- kernel-native detection ----------------------------------------------------------------


def test_new_peerless_wireguard_reading_1_is_native_and_never_written(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, peers={"wg0": 0})
    st = rec.observe(WG, new=True)
    assert st.state == "native"
    assert rec.native is True
    assert rlog.kinds() == ["kernel-native", "link-native"]
    # Later the link reads 0: still native, still not written.
    fakesys.set("wg0", "0\n")
    st = rec.observe(WG)
    assert st.state == "native"
    assert "not written" in st.reason
    assert attr.writes == []
    assert fakesys.get("wg0") == "0\n"
    # Another new WireGuard link reading 0 is not written either.
    fakesys.add("wg1", "0\n", 9)
    assert rec.observe(Link(9, "wg1", "wireguard"), new=True).state == "native"
    assert attr.writes == []
    assert rlog.kinds().count("kernel-native") == 1


def test_native_does_not_apply_to_other_kinds(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "1\n", 5)
    fakesys.add("veth0", "0\n", 6, "veth")
    rec = make(attr, rlog, clock, peers={"wg0": 0})
    rec.observe(WG, new=True)
    assert rec.observe(VETH).state == "threaded"
    assert attr.writes == [("veth0", 1)]


@pytest.mark.parametrize("peers", [1, None], ids=["has-a-peer", "cannot-ask"])
def test_not_native_when_it_has_peers_or_peers_are_unknown(fakesys, attr, rlog, clock, peers):
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, peers={"wg0": peers})
    assert rec.observe(WG, new=True).state == "threaded"
    assert rec.native is False


def test_not_native_when_seen_at_start_up_before_6_16(fakesys, attr, rlog, clock):
    # Not new: wgnapid (an earlier run) or an admin may have set it.
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, peers={"wg0": 0})
    assert rec.observe(WG).state == "threaded"
    assert rec.native is False
    assert rec.peer_calls == []


def test_native_at_start_up_on_6_16_and_later(fakesys, attr, rlog, clock):
    # Where mainline threads WireGuard from birth, a peerless link that was
    # there before wgnapid started is evidence too.
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, peers={"wg0": 0}, verdict=kernel.verdict_for("6.16.3-arch1-1"))
    assert rec.observe(WG).state == "native"
    assert rec.native is True
    assert attr.writes == []


def test_not_native_when_wgnapid_wrote_it(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock, peers={"wg0": 0})
    rec.observe(WG)
    assert rec.observe(WG, new=True).state == "threaded"
    assert rec.native is False


def test_strict_guard_takes_precedence_over_native_on_an_unknown_kernel(fakesys, attr, rlog,
                                                                       clock):
    # Issue 13: a kernel the guard does not call safe is never "safely native";
    # under strict its own threaded=1 is turned back off (tests/unit/test_cve_window.py).
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock, verdict=UNKNOWN, kernel_guard="strict", peers={"wg0": 0})
    assert rec.observe(WG, new=True).state == "held"
    assert rec.native is True
    assert fakesys.get("wg0") == "0\n"


# -- gone ------------------------------------------------------------------------------------


def test_a_removed_link_is_gone_and_logged_once(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock)
    rec.observe(WG)
    fakesys.remove("wg0")
    st = rec.observe(WG)
    assert st.state == "gone"
    assert 5 not in rec.links
    # The RTM_DELLINK that follows, and the next resync, say nothing more.
    rec.remove(5)
    rec.sync([])
    assert rlog.kinds() == ["link-threaded", "link-gone"]
    gone = rlog.of("link-gone")[0]
    assert gone[3]["interface"] == b"wg0" and gone[3]["wgnapid_state"] == "gone"
    assert rec.summary() == {}


def test_removal_event_first_then_resync(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "1\n", 5)
    rec = make(attr, rlog, clock)
    rec.observe(WG)
    fakesys.remove("wg0")
    rec.remove(5, "RTM_DELLINK")
    rec.sync([])
    assert [e[0] for e in rlog.events] == ["link-threaded", "link-gone"]
    assert "RTM_DELLINK" in rlog.events[1][2]


def test_removing_an_unmatched_link_logs_nothing(attr, rlog, clock):
    rec = make(attr, rlog, clock, rule("wg", "on", kinds=["wireguard"]))
    rec.observe(VETH)
    rec.remove(6)
    assert rlog.kinds() == ["link-unmatched"]


# -- drift -----------------------------------------------------------------------------------


def test_drift_is_re_asserted_with_a_notice(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock)
    rec.observe(WG)
    fakesys.set("wg0", "0\n")  # an admin, or the kernel after a kthread failure
    st = rec.observe(WG)
    assert st.state == "threaded" and st.changed
    assert fakesys.get("wg0") == "1\n"
    notices = [e for e in rlog.events if e[1] == syslog.LOG_NOTICE]
    assert len(notices) == 1
    assert "re-asserted" in notices[0][2]
    assert notices[0][3]["interface"] == b"wg0"
    assert len(state_logs(rlog)) == 1  # no second "threaded" state change


def test_drift_of_an_off_link(fakesys, attr, rlog, clock):
    fakesys.add("veth0", "0\n", 6, "veth")
    rec = make(attr, rlog, clock, rule("v", "off"))
    rec.observe(VETH)
    fakesys.set("veth0", "1\n")
    assert rec.observe(VETH).state == "off"
    assert fakesys.get("veth0") == "0\n"
    assert sum(e[1] == syslog.LOG_NOTICE for e in rlog.events) == 1


def test_first_write_is_not_called_drift(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock)
    rec.observe(WG)
    assert not any("re-asserted" in e[2] for e in rlog.events)


# -- dry run -----------------------------------------------------------------------------------


def test_dry_run_is_pending_and_writes_nothing(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    fakesys.add("veth0", "1\n", 6, "veth")
    rec = make(attr, rlog, clock, dry_run=True)
    st = rec.observe(WG)
    assert st.state == "pending"
    assert st.reason == "reads 0, wanted 1"
    assert rec.observe(VETH).state == "threaded"
    assert attr.writes == []
    assert fakesys.get("wg0") == "0\n"
    assert rlog.events == []
    assert rec.next_retry() is None
    assert rec.summary() == {"pending": 1, "threaded": 1}


def test_dry_run_still_reports_held(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock, verdict=RISKY, dry_run=True)
    assert rec.observe(WG).state == "held"


# -- sync ---------------------------------------------------------------------------------------


def test_complete_sync_forgets_unlisted_links(fakesys, attr, rlog, clock):
    for i, name in enumerate(("wg0", "wg1", "wg2"), 1):
        fakesys.add(name, "0\n", i)
    links = [Link(1, "wg0", "wireguard"), Link(2, "wg1", "wireguard"), Link(3, "wg2", "wireguard")]
    rec = make(attr, rlog, clock)
    rec.sync(links)
    assert set(rec.links) == {1, 2, 3}
    rec.sync([links[0], links[2]])
    assert set(rec.links) == {1, 3}
    gone = rlog.of("link-gone")
    assert [e[3]["interface"] for e in gone] == [b"wg1"]
    assert rec.summary() == {"threaded": 2}


def test_incomplete_sync_forgets_nothing(fakesys, attr, rlog, clock):
    for i, name in enumerate(("wg0", "wg1"), 1):
        fakesys.add(name, "0\n", i)
    rec = make(attr, rlog, clock)
    rec.sync([Link(1, "wg0", "wireguard"), Link(2, "wg1", "wireguard")])
    rec.sync([Link(1, "wg0", "wireguard")], complete=False)
    assert set(rec.links) == {1, 2}
    assert rlog.of("link-gone") == []


def test_sync_re_asserts_drift(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock)
    rec.sync([WG])
    fakesys.set("wg0", "0\n")
    rec.sync([WG])
    assert fakesys.get("wg0") == "1\n"


def test_a_renamed_link_is_followed_by_ifindex(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock)
    rec.observe(WG)
    fakesys.rename("wg0", "wg-new")
    fakesys.set("wg-new", "0\n")
    st = rec.observe(Link(5, "wg-new", "wireguard"))
    assert st.name == "wg-new" and st.state == "threaded"
    assert fakesys.get("wg-new") == "1\n"
    assert set(rec.links) == {5}


def test_policy_change_takes_effect_on_the_next_observation(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock)
    rec.observe(WG)
    rec.set_policy(policy(rule("off", "off")))
    assert rec.observe(WG).state == "off"
    assert fakesys.get("wg0") == "0\n"
    assert rec.summary() == {"off": 1}


# -- one-shot (apply) logging -----------------------------------------------------------


def test_one_shot_logs_only_what_it_changed_or_failed_at(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)  # will be changed: logged
    fakesys.add("wg1", "1\n", 6)  # already as wanted: a repeated `apply` must not log it
    rec = make(attr, rlog, clock, one_shot=True)
    assert rec.observe(Link(5, "wg0", "wireguard")).state == "threaded"
    assert rec.observe(Link(6, "wg1", "wireguard")).state == "threaded"
    logged = [e[3].get("interface") for e in state_logs(rlog)]
    assert logged == [b"wg0"]


# -- writes in flight: the loop does not wait for them ------------------------------------


def test_a_batch_writes_every_link_once_and_settles_each(fakesys, attr, rlog, clock):
    names = [f"wg{i}" for i in range(20)]
    for i, name in enumerate(names):
        fakesys.add(name, "0\n", i + 1)
    attr.unsettable.add("wg7")  # one of them is not settable yet
    rec = make(attr, rlog, clock)
    rec.observe_many([(Link(i + 1, name, "wireguard"), True) for i, name in enumerate(names)])
    rec.close()
    assert sorted(name for name, _ in attr.writes) == sorted(names)
    assert {st.name: st.state for st in rec.links.values()} == {
        name: "waiting" if name == "wg7" else "threaded" for name in names
    }
    assert all(fakesys.get(name) == ("0\n" if name == "wg7" else "1\n") for name in names)
    assert rec.summary() == {"threaded": 19, "waiting": 1}
    assert len(state_logs(rlog)) == 20


def readable(fd, timeout=5.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def until(cond, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def start_held_write(fakesys, attr, rlog, clock):
    """A reconciler with wg0's write handed to a writer and held there until attr.gate is set."""
    fakesys.add("wg0", "0\n", 5)
    attr.gate = threading.Event()
    rec = make(attr, rlog, clock)
    rec.inline = False  # a lone write would be made inline: this is the writer path
    rec.observe_many([(WG, True)], wait=False)
    return rec


def test_without_wait_the_writes_finish_in_collect(fakesys, attr, rlog, clock):
    rec = start_held_write(fakesys, attr, rlog, clock)
    st = rec.links[WG.ifindex]
    assert rec.in_flight == 1 and st.writing and st.state == ""
    assert not readable(rec.completions, 0.05)
    attr.gate.set()
    assert readable(rec.completions)
    rec.collect()
    assert rec.in_flight == 0 and not st.writing
    assert st.state == "threaded" and fakesys.get("wg0") == "1\n"
    assert not readable(rec.completions, 0)  # read empty: no busy loop in the selector
    rec.close()


def test_an_event_during_the_write_is_looked_at_once_after_it(fakesys, attr, rlog, clock):
    rec = start_held_write(fakesys, attr, rlog, clock)
    assert until(lambda: len(attr.writes) == 1)  # the writer is in the "kernel"
    # Two more events while the write is in the kernel: no second write meanwhile.
    rec.observe_many([(WG, False)], wait=False)
    rec.observe_many([(WG, False)], wait=False)
    assert rec.in_flight == 1 and len(attr.writes) == 1
    # Someone resets it before the read-back is evaluated: the second look re-asserts.
    attr.ignore_writes.add("wg0")
    attr.gate.set()
    rec.drain()
    assert attr.writes == [("wg0", 1), ("wg0", 1)]
    assert rec.links[WG.ifindex].state == "failed"  # wrote 1, reads 0 (the kernel kept 0)
    rec.close()


def test_a_link_removed_during_its_write_stays_removed(fakesys, attr, rlog, clock):
    rec = start_held_write(fakesys, attr, rlog, clock)
    rec.remove(WG.ifindex)
    attr.gate.set()
    rec.drain()
    assert WG.ifindex not in rec.links
    assert rec.summary() == {} and state_logs(rlog) == []
    rec.close()


def test_a_writer_that_raises_fails_the_link_and_keeps_working(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    fakesys.add("wg1", "0\n", 6)
    attr.raising.add("wg0")
    rec = make(attr, rlog, clock)
    rec.observe_many([(WG, True), (Link(6, "wg1", "wireguard"), True)])
    assert rec.links[WG.ifindex].state == "failed"
    assert "writer bug" in rec.links[WG.ifindex].reason
    assert rec.links[6].state == "threaded"
    attr.raising.clear()
    rec.observe_many([(WG, False)])  # the same threads serve the next write
    assert rec.links[WG.ifindex].state == "threaded"
    rec.close()


def test_close_ends_the_writer_threads(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = make(attr, rlog, clock)
    rec.inline = False
    rec.observe_many([(WG, True)])
    threads = list(rec._writers.threads)
    assert threads and all(t.is_alive() for t in threads)
    rec.close()
    assert not any(t.is_alive() for t in threads)


def test_every_evaluation_closes_what_it_opened(fakesys, attr, rlog, clock, monkeypatch):
    opened, closed = [], []
    real_open, real_close = attr.open, attr.close

    def open_(dirfd, name, **kw):
        op = real_open(dirfd, name, **kw)
        if not isinstance(op, Result):
            opened.append(op.fd)
        return op

    def close(op):
        closed.append(op.fd)
        real_close(op)

    monkeypatch.setattr(attr, "open", open_)
    monkeypatch.setattr(attr, "close", close)
    for i in range(6):
        fakesys.add(f"wg{i}", "1\n" if i % 2 else "0\n", i + 1)
    attr.unsettable.add("wg2")
    rec = make(attr, rlog, clock)
    rec.observe_many([(Link(i + 1, f"wg{i}", "wireguard"), True) for i in range(6)]
                     + [(Link(9, "gone0", "wireguard"), True)])
    rec.close()
    assert sorted(opened) == sorted(closed) and len(opened) == 6


def test_close_drops_writes_not_begun(fakesys, attr, rlog, clock):
    names = [f"wg{i}" for i in range(10)]
    for i, name in enumerate(names):
        fakesys.add(name, "0\n", i + 1)
    attr.gate = threading.Event()
    rec = make(attr, rlog, clock)
    rec.observe_many([(Link(i + 1, n, "wireguard"), True) for i, n in enumerate(names)], wait=False)
    assert until(lambda: len(attr.writes) == 4)  # one per writer thread, the rest queued
    closing = threading.Thread(target=rec.close)
    closing.start()
    assert until(lambda: rec._writers.jobs.qsize() <= 4)  # the queued six dropped (stop markers left)
    attr.gate.set()
    closing.join(10)
    assert not closing.is_alive()
    assert len(attr.writes) == 4


# -- namespaces (issue 10) ------------------------------------------------------------


def _in_ns(attr, rlog, clock, name, *rules, ino=4026532001, writers=None):
    pol = policy(*rules)
    return Reconciler(pol, rlog, fake_ns(attr.fakesys, attr, ino=ino, name=name), verdict=SAFE,
                      clock=clock, peer_count=lambda n: 1, writers=writers)


def test_rules_see_the_namespace_name_and_entries_name_it(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rules = (rule("tenants", "on", kinds=["wireguard"], netns=["tenant-*"]),
             rule("rest", "off", kinds=["wireguard"]))
    st = _in_ns(attr, rlog, clock, "tenant-a", *rules).observe(WG)
    assert (st.rule, st.state, st.netns_name) == ("tenants", "threaded", "tenant-a")
    (entry,) = rlog.events
    assert entry[3]["wgnapid_netns_name"] == "tenant-a" and entry[3]["wgnapid_netns"] == 4026532001
    assert entry[2].endswith("[netns tenant-a 4026532001]"), entry[2]
    assert st.as_dict()["netns_name"] == "tenant-a"
    # The same link in a namespace the first rule does not cover.
    st = _in_ns(attr, rlog, clock, "pid:77", *rules).observe(WG)
    assert (st.rule, st.state) == ("rest", "off")


def test_renamed_namespace_is_shown_and_decided_again(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    rec = _in_ns(attr, rlog, clock, "pid:77", rule("named", "on", netns=["tenant-*"]))
    assert rec.observe(WG).state == "unmatched"
    generation = rec.generation
    rec.ns.name = "tenant-b"  # got a /run/netns name
    rec.renamed()
    assert rec.generation > generation and rec.links[5].netns_name == "tenant-b"
    assert rec.observe(WG).state == "threaded"


def test_reconcilers_share_writer_threads_and_each_gets_its_own_results(fakesys, attr, rlog, clock):
    from wgnapid.reconciler import shared_writers

    pool = shared_writers(2)
    fakesys.add("wg0", "0\n", 5)
    fakesys.add("veth0", "0\n", 6)
    a = _in_ns(attr, rlog, clock, "a", rule("all", "on"), ino=11, writers=pool)
    b = _in_ns(attr, rlog, clock, "b", rule("all", "on"), ino=12, writers=pool)
    assert a.completions == b.completions == pool.fd
    a.inline = b.inline = False
    a.observe_many([(WG, True)], wait=False)
    b.observe_many([(VETH, True)], wait=False)
    while a.in_flight or b.in_flight:
        select.select([pool.fd], [], [], 10)
        a.collect()  # one collect serves both: results go to their own reconciler
    assert a.links[5].state == "threaded" and 6 not in a.links
    assert b.links[6].state == "threaded" and 5 not in b.links
    a.close()
    b.close()
    assert pool.threads, "a reconciler must not stop a pool it does not own"
    pool.close()


def test_forget_drops_every_link_without_a_word(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    attr.unsettable.add("wg0")
    rec = _in_ns(attr, rlog, clock, "gone-soon", rule("all", "on"))
    assert rec.observe(WG).state == "waiting"
    rlog.events.clear()
    rec.forget()
    assert rec.links == {} and rec.summary() == {} and rec.next_retry() is None
    assert rlog.events == []


# -- changed rows, for followers such as placement -------------------------------------


def test_take_changed_names_each_link_whose_row_changed(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    fakesys.add("veth0", "1\n", 6, "veth")
    rec = make(attr, rlog, clock)
    assert rec.take_changed() == set()
    rec.observe(WG)
    rec.observe(VETH)
    assert rec.take_changed() == {5, 6}
    rec.observe(WG)  # nothing changed
    assert rec.take_changed() == set()
    fakesys.rename("wg0", "wg1")
    rec.observe(Link(5, "wg1", "wireguard"))
    assert rec.take_changed() == {5}
    rec.remove(6)
    assert rec.take_changed() == {6} and 6 not in rec.links
    rec.forget()
    assert rec.take_changed() is None  # anything may have
    assert rec.take_changed() == set()
