"""Real WireGuard, inside the qemu guest: a link's peer threads listed and placed (issue 15).

Every WireGuard peer has its own NAPI instance, and on 6.1 and 6.12 every
peer's NAPI id is 0, so a link with two peers has two kthreads both named
`napi/<dev>-0` (KERNEL-FACTS.md, "NAPI kernel threads"): status lists both,
and a rule's `cpus` and `sched` reach both, and the thread of a peer
removed and added again. The daemon runs in the guest's initial network
namespace, so the process-events connector is there to notice new threads;
resync_interval = 3600 leaves nothing else to do it in time.
"""

from __future__ import annotations

import os
import select
import threading
import time

import pytest

import guestlib
from guestlib import cli_json, links_by_name, napi_threads, run, wait_until, wg_quick_up

pytestmark = pytest.mark.guest

DEV = "wgp15"
CPU = max(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def placing_policy(risky) -> str:
    text = guestlib.policy_toml(source="netlink", resync_interval=3600, pending_max_delay=2,
                                kernel_guard="warn" if risky else None,
                                rules=[{"name": "placed", "interfaces": ["wgp*"], "threaded": "on"}])
    return text + f'cpus = "{CPU}"\nsched = "rr:5"\n'


def _pids() -> set[int]:
    return set(napi_threads(DEV).get(f"napi/{DEV}-0", []))


def _placed(pid: int) -> bool:
    try:
        return (os.sched_getaffinity(pid) == {CPU} and os.sched_getscheduler(pid) == os.SCHED_RR
                and os.sched_getparam(pid).sched_priority == 5)
    except ProcessLookupError:
        return False


def test_s15_two_peers_two_threads_both_placed(daemons, links, keys, placing_policy, record_property):
    daemon = daemons.get(placing_policy)
    wg_quick_up(links, DEV, keys, peers=2, net=150)
    pids, took = wait_until(f"two napi/{DEV}-0 kthreads", lambda: len(_pids()) == 2 and _pids(), 30)
    assert set(napi_threads(DEV)) == {f"napi/{DEV}-0"}, napi_threads(DEV)
    _, took = wait_until("both threads placed", lambda: all(_placed(p) for p in pids), 15)
    record_property("threaded_to_placed_s", round(took, 3))

    # status --json: both threads, both under the same name, as /proc has them.
    row = links_by_name(cli_json("status", "--json", config=daemon.config, env=daemon.env))[DEV]
    assert row["state"] == "threaded" and row["napi_threads"] == 2
    assert {(t["pid"], t["name"]) for t in row["threads"]} == {(p, f"napi/{DEV}-0") for p in pids}
    for t in row["threads"]:
        assert (t["policy"], t["priority"], t["cpus"]) == ("rr", 5, str(CPU)), t
        assert t["cpu"] == int(open(f"/proc/{t['pid']}/stat").read().rsplit(")", 1)[1].split()[36])
    placed = {"cpus": str(CPU), "sched": "rr:5", "state": "placed", "reason": ""}
    wait_until("the daemon to publish the placement", lambda: any(
        l["name"] == DEV and l.get("placement") == placed for l in (daemon.status_file() or {}).get("links", [])), 15)

    # A peer removed and added again: its new thread starts with the defaults
    # and is placed at once (the connector; no resync within this test).
    run("wg", "set", DEV, "peer", keys.public[1], "remove")
    wait_until("one thread left", lambda: len(_pids()) == 1, 30)
    run("wg", "set", DEV, "peer", keys.public[1], "allowed-ips", "10.150.0.2/32")
    new, _ = wait_until("a new thread for the re-added peer",
                        lambda: len(_pids()) == 2 and (_pids() - pids), 30)
    wait_until("the new thread placed", lambda: all(_placed(p) for p in _pids()), 15)
    guestlib.journal_sync()
    failed = daemon.journal(MESSAGE_ID="6b3fd9a2c6a44a3c9a3f2d8e5a1c7771")
    assert failed == [], failed
    assert daemon.alive()


class ForkWatch:
    """A process-events listener of the test's own (wgnapid.procevents) that
    looks at each new kthread at once, from a thread of its own, as the
    daemon does: which PIDs it saw, and which of them were still unnamed
    then (napithreads.unnamed_fork)."""

    def __init__(self):
        from wgnapid import procevents

        self.overflow = procevents.Overflow
        self.events = procevents.ProcEvents(None)
        self.seen: set[int] = set()
        self.unnamed: set[int] = set()
        self.overflows = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if select.select([self.events.fileno()], [], [], 0.1)[0]:
                    self._take()
        except BaseException as exc:  # noqa: BLE001 - raised again in close()
            self.error = exc

    def _take(self) -> None:
        from wgnapid.napithreads import read_fork

        try:
            pids = self.events.read()
        except self.overflow:  # events lost: the counts are then inconclusive
            self.overflows += 1
            return
        for pid in pids:
            _, unnamed = read_fork(pid)
            self.seen.add(pid)
            if unnamed:
                self.unnamed.add(pid)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            if self.error is None:
                self._take()  # what came after the thread's last read
        finally:
            self.events.close()
        if self.error is not None:
            raise self.error


DEV16 = "wgp16"
READDS = 12


def test_s16_a_peer_readded_again_and_again_is_placed_each_time(daemons, links, keys, placing_policy,
                                                                 record_property):
    # Before 6.4 a kthread is named after its fork event (napithreads.unnamed_fork):
    # the daemon's first look may find it unnamed, or named between two reads.
    # A look that lost the thread left it to the resync, an hour away here
    # (s15 failed so on 6.1 in two clean-clone runs of .ci/run).
    daemon = daemons.get(placing_policy)
    wg_quick_up(links, DEV16, keys, peers=2, net=160)
    pids = lambda: set(napi_threads(DEV16).get(f"napi/{DEV16}-0", []))  # noqa: E731
    wait_until("both threads placed", lambda: len(pids()) == 2 and all(_placed(p) for p in pids()), 30)
    watch = ForkWatch()
    took, new_threads = [], []
    try:
        for _ in range(READDS):
            run("wg", "set", DEV16, "peer", keys.public[1], "remove")
            wait_until("one thread left", lambda: len(pids()) == 1, 30)
            before = pids()
            start = time.monotonic()
            run("wg", "set", DEV16, "peer", keys.public[1], "allowed-ips", "10.160.0.2/32")
            new, _ = wait_until("a new thread", lambda: len(pids()) == 2 and pids() - before, 30)
            wait_until("the new thread placed", lambda: all(_placed(p) for p in pids()), 15)
            took.append(time.monotonic() - start)
            new_threads.extend(new)
    finally:
        watch.close()
    record_property("readds", READDS)
    record_property("readd_to_placed_max_s", round(max(took), 3))
    unnamed = len(watch.unnamed & set(new_threads))
    record_property("new_threads_unnamed_at_first_look", f"{unnamed}/{len(new_threads)}")
    guestlib.journal_sync()
    assert daemon.journal(MESSAGE_ID="6b3fd9a2c6a44a3c9a3f2d8e5a1c7771") == []  # no placement failed
    assert daemon.alive()
    if watch.overflows:
        record_property("listener_overflows", watch.overflows)
        print(f"the test's own listener overflowed {watch.overflows} time(s): the counts are not asserted")
        return
    assert set(new_threads) <= watch.seen, sorted(set(new_threads) - watch.seen)
    if guestlib.kernel_version() >= (6, 4):
        # copy_process names a kthread before its fork event (6.4, cf587db2ee02).
        assert unnamed == 0, unnamed
