"""Waiting links at scale (issue 16): the coalesced retry schedule and the
`threaded` file kept open between retries, against the fake sysfs tree.

The fake tree behaves like kernfs where it matters here: a file kept open
stays bound to its inode through a rename of the directory, and once the
link's directory is removed (the device unregistered) a write on the old file
answers ENODEV (KernfsAttr below; the real kernel's answer is checked in
tests/integration/test_waiting.py)."""

from __future__ import annotations

import errno
import os
import random

import pytest

from wgnapid.links import Link
from wgnapid.reconciler import RETRY_CAP_SHARE, RETRY_INLINE_SUCCESSES
from wgnapid.retries import SLOTS_PER_CAP, KeptFds, RetrySchedule
from wgnapid.sysfs import _classify

from .helpers import Attr, rule
from .test_reconciler import make, state_logs


class KernfsAttr(Attr):
    """Attr whose writes, like kernfs, fail with ENODEV once the file's device
    is gone (its inode unlinked), and that records when each write was made."""

    def __init__(self, fakesys, clock):
        super().__init__(fakesys)
        self.clock = clock
        self.times: list[tuple[str, float]] = []
        self.opens = 0
        self.closed: list[int] = []

    def open(self, dirfd, ifname, *, write=True):
        self.opens += 1
        return super().open(dirfd, ifname, write=write)

    def close(self, op):
        self.closed.append(op.fd)
        super().close(op)

    def pwrite(self, op, value):
        if os.fstat(op.fd).st_nlink == 0:
            self.writes.append((op.ifname, value))
            return _classify(OSError(errno.ENODEV, os.strerror(errno.ENODEV)), "write")
        self.times.append((op.ifname, self.clock.t))
        return super().pwrite(op, value)


@pytest.fixture
def attr(fakesys, clock):
    return KernfsAttr(fakesys, clock)


def waiting(fakesys, attr, names, start=1):
    for i, name in enumerate(names, start):
        fakesys.add(name, "0\n", i)
        attr.unsettable.add(name)
    return [Link(i, name, "wireguard") for i, name in enumerate(names, start)]


def run_loop(rec, clock, until):
    """What the daemon's loop does about retries: wake at the next due time,
    retry; returns the wake-up times."""
    wakeups = []
    while (due := rec.next_retry()) is not None and due <= until:
        clock.t = max(clock.t, due)
        wakeups.append(clock.t)
        rec.retry_due()
    return wakeups


# -- the schedule -------------------------------------------------------------------


def test_a_slot_is_never_later_than_asked_nor_more_than_one_slot_earlier():
    rng = random.Random(16)
    for _ in range(5000):
        cap = rng.choice([0.045, 0.9, 1.8, 2.7, 27.0])
        now = rng.uniform(0, 1e6)
        delay = rng.choice([rng.uniform(0, cap), cap])
        width = cap / SLOTS_PER_CAP
        due = RetrySchedule.slot(now, delay, cap)
        assert due > now
        assert due <= now + max(delay, width) + 1e-6
        if delay >= width:
            assert due > now + delay - width - 1e-6


def test_the_schedule_takes_what_is_due_once_and_forgets_what_was_discarded():
    class E:
        retry_at = None

    sched = RetrySchedule()
    a, b, c = E(), E(), E()
    sched.add(a, 10.0)
    sched.add(b, 10.0)
    sched.add(c, 12.0)
    assert len(sched) == 3 and sched.next_due() == 10.0
    sched.discard(b)
    sched.add(b, 12.0)  # rescheduled: taken at 12, not at 10
    assert sched.take(9.9) == []
    assert sched.take(10.0) == [a] and a.retry_at is None
    sched.discard(c)
    assert sched.next_due() == 12.0
    assert sched.take(100.0) == [b]
    assert sched.next_due() is None and len(sched) == 0
    sched.add(a, 13.0)
    sched.discard(a)
    assert sched.next_due() is None  # an emptied slot costs no wake-up


def test_many_waiting_links_share_few_wakeups_and_each_is_retried_within_the_cap(fakesys, attr, rlog, clock):
    links = waiting(fakesys, attr, [f"wg{i}" for i in range(300)])
    rec = make(attr, rlog, clock, pending_max_delay=2)
    cap = 2 * RETRY_CAP_SHARE
    rng = random.Random(1)
    start = clock.t
    # Links appear at random moments over 5 s, the loop retrying meanwhile.
    for t, link in sorted((start + rng.uniform(0, 5), link) for link in links):
        run_loop(rec, clock, t)
        clock.t = t
        rec.observe(link, new=True)
    wakeups = run_loop(rec, clock, start + 30)
    late = [w for w in wakeups if w >= start + 10]  # back-off over: every link at the cap
    span = late[-1] - late[0]
    assert len(late) <= SLOTS_PER_CAP * (span / cap + 1)
    # Every link was tried within the cap of its previous try, all along.
    last: dict[str, float] = {}
    for name, t in attr.times:
        if name in last:
            assert t - last[name] <= cap + 1e-6, name
        last[name] = t
    assert len(last) == 300 and all(t >= start + 30 - cap - 1e-6 for t in last.values())
    assert rec.summary() == {"waiting": 300}
    assert state_logs(rlog) == rlog.events[:300]  # one line per link, none per retry


# -- the kept file ----------------------------------------------------------------


def test_a_retry_writes_on_the_kept_file_and_opens_nothing(fakesys, attr, rlog, clock):
    (wg,) = waiting(fakesys, attr, ["wg0"])
    rec = make(attr, rlog, clock)
    rec.observe(wg)
    assert attr.opens == 1 and rec.links[1].kept is not None and rec._kept.count == 1
    run_loop(rec, clock, clock.t + 20)
    assert attr.opens == 1  # no proof, no open: the file proven at first is kept
    assert len(attr.writes) > 5 and attr.closed == []
    attr.unsettable.clear()  # the first peer, no event
    run_loop(rec, clock, clock.t + 2)
    st = rec.links[1]
    assert st.state == "threaded" and fakesys.get("wg0") == "1\n"
    assert st.kept is None and rec._kept.count == 0 and len(attr.closed) == 1
    assert rec.next_retry() is None


def test_a_link_deleted_while_its_file_is_kept_is_gone_and_the_new_link_of_that_name_is_not_written(
        fakesys, attr, rlog, clock):
    (wg,) = waiting(fakesys, attr, ["wg0"])
    rec = make(attr, rlog, clock)
    rec.observe(wg)
    fakesys.remove("wg0")
    fakesys.add("wg0", "0\n", 7)  # a new link takes the name (no event seen yet)
    attr.unsettable.clear()  # and it would accept a write
    run_loop(rec, clock, clock.t + 2)
    assert fakesys.get("wg0") == "0\n"  # never written through the old link's file
    assert 1 not in rec.links and rec._kept.count == 0 and rec.next_retry() is None
    assert [e[0] for e in state_logs(rlog)] == ["link-waiting", "link-gone"]
    assert state_logs(rlog)[-1][3]["ifindex"] == 1
    # Its own event brings the new link: proven, decided, written as policy says.
    st = rec.observe(Link(7, "wg0", "wireguard"), new=True)
    assert st.state == "threaded" and fakesys.get("wg0") == "1\n"


def test_the_same_ifindex_reused_by_a_new_link_is_not_written_through_the_old_file(fakesys, attr, rlog, clock):
    (wg,) = waiting(fakesys, attr, ["wg0"])
    rec = make(attr, rlog, clock, rule("wg", "on", kinds=["wireguard"]))
    rec.observe(wg)
    fakesys.remove("wg0")
    fakesys.add("wg0", "0\n", 1, kind="veth")  # same name, same ifindex, another link (no rule)
    attr.unsettable.clear()
    run_loop(rec, clock, clock.t + 2)
    assert fakesys.get("wg0") == "0\n" and 1 not in rec.links
    st = rec.observe(Link(1, "wg0", "veth"), new=True)
    assert st.state == "unmatched" and fakesys.get("wg0") == "0\n"


def test_a_renamed_link_is_still_the_link_its_kept_file_writes(fakesys, attr, rlog, clock):
    (wg,) = waiting(fakesys, attr, ["wg0"])
    rec = make(attr, rlog, clock)
    rec.observe(wg)
    fakesys.rename("wg0", "r0")
    fakesys.add("wg0", "0\n", 9, kind="veth")  # another link takes the old name
    attr.unsettable.clear()  # (the fake decides by the name at open: the kept file's)
    run_loop(rec, clock, clock.t + 2)
    assert (fakesys.get("r0"), fakesys.get("wg0")) == ("1\n", "0\n")
    assert rec.links[1].state == "threaded" and 9 not in rec.links
    assert attr.opens == 1


def test_kept_files_are_capped_and_beyond_the_cap_every_retry_is_proven(fakesys, attr, rlog, clock):
    links = waiting(fakesys, attr, ["wg0", "wg1", "wg2"])
    rec = make(attr, rlog, clock)
    rec._kept = KeptFds(limit=1)
    for link in links:
        rec.observe(link)
    assert rec._kept.count == 1 and sum(st.kept is not None for st in rec.links.values()) == 1
    opens = attr.opens
    rec_writes = len(attr.writes)
    run_loop(rec, clock, clock.t + 20)
    retries = len(attr.writes) - rec_writes
    kept_one = next(st for st in rec.links.values() if st.kept is not None)
    kept_writes = sum(1 for name, _ in attr.times[3:] if name == kept_one.name)
    # Every retry but the kept link's opened (and proved) its file again.
    assert attr.opens - opens == retries - kept_writes
    assert rec._kept.count == 1 and rec.summary() == {"waiting": 3}


@pytest.mark.parametrize("how", ["remove", "forget", "close", "policy"])
def test_a_kept_file_is_closed_once_when_the_link_stops_waiting(fakesys, attr, rlog, clock, how):
    (wg,) = waiting(fakesys, attr, ["wg0"])
    rec = make(attr, rlog, clock)
    rec.observe(wg)
    fd = rec.links[1].kept.fd
    if how == "remove":
        rec.remove(1)
    elif how == "forget":
        rec.forget()
    elif how == "close":
        rec.close()
    else:
        rec.set_policy(make(attr, rlog, clock, rule("v", "on", kinds=["veth"])).policy)
        rec.sync(fakesys.links())
        assert rec.links[1].state == "unmatched"
    assert attr.closed.count(fd) == 1 and rec._kept.count == 0
    if how != "close":  # (a closed reconciler is not used again)
        assert rec.next_retry() is None


def test_an_event_for_a_waiting_link_replaces_its_kept_file(fakesys, attr, rlog, clock):
    (wg,) = waiting(fakesys, attr, ["wg0"])
    rec = make(attr, rlog, clock)
    rec.observe(wg)
    old = rec.links[1].kept.fd
    rec.observe(wg)  # an event: the full evaluation proves the link again
    st = rec.links[1]
    assert st.state == "waiting" and st.kept is not None
    assert attr.closed.count(old) == 1 and rec._kept.count == 1


def test_many_links_settable_at_once_are_written_inline_only_up_to_a_few(fakesys, attr, rlog, clock):
    links = waiting(fakesys, attr, [f"wg{i}" for i in range(8)])
    rec = make(attr, rlog, clock)
    rec.observe_many([(link, True) for link in links])
    assert rec.summary() == {"waiting": 8}
    attr.unsettable.clear()  # a control plane added a peer to every link
    clock.t = rec.next_retry()
    rec.retry_due(wait=False)
    assert rec.in_flight == 8 - RETRY_INLINE_SUCCESSES  # the rest went to the writer threads
    rec.drain()
    assert rec.summary() == {"threaded": 8}
    assert all(fakesys.get(link.name) == "1\n" for link in links)
    assert rec._kept.count == 0 and sorted(attr.closed) == sorted(set(attr.closed))
    rec.close()


def test_a_lone_write_is_made_inline_and_a_batch_on_the_writer_threads(fakesys, attr, rlog, clock):
    for i in range(4):
        fakesys.add(f"wg{i}", "0\n", i + 1)
    rec = make(attr, rlog, clock)
    rec.observe_many([(Link(1, "wg0", "wireguard"), True)], wait=False)
    assert rec.links[1].state == "threaded" and rec.in_flight == 0
    assert rec._writers.threads == []  # no hand-off at all
    rec.observe_many([(Link(i + 1, f"wg{i}", "wireguard"), True) for i in range(1, 4)], wait=False)
    assert rec.in_flight == 3 and rec._writers.threads
    rec.drain()
    assert rec.summary() == {"threaded": 4}
    rec.close()


def test_a_periodic_resync_leaves_a_kept_waiting_link_to_its_schedule_and_a_reload_does_not(
        fakesys, attr, rlog, clock):
    links = waiting(fakesys, attr, ["wg0", "wg1"])
    rec = make(attr, rlog, clock)
    rec.sync(links)
    opens, writes = attr.opens, len(attr.writes)
    rec.sync(fakesys.links(), recheck_waiting=False)  # the periodic resync
    assert (attr.opens, len(attr.writes)) == (opens, writes)
    fakesys.rename("wg1", "wg9")  # a changed name is evaluated (proven again)
    attr.unsettable.add("wg9")  # (the fake decides by the name at open)
    rec.sync(fakesys.links(), recheck_waiting=False)
    assert attr.opens == opens + 1 and rec.links[2].name == "wg9"
    rec.sync(fakesys.links())  # start-up, reload: every link again
    assert attr.opens == opens + 3
    assert rec.summary() == {"waiting": 2} and rec._kept.count == 2
