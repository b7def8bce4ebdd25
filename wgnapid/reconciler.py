"""Per-link state machine: what each link should get, what it has, what to do.

Level-triggered: every evaluation reads the kernel's value first; events only
say *when* to look. The same code serves the daemon, `apply` and `status`
(with ``dry_run``, nothing is written).
"""

from __future__ import annotations

import os
import queue
import select
import syslog
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

from wgnapid import ifname, kernel
from wgnapid.config import Policy
from wgnapid.links import Link
from wgnapid.log import Log
from wgnapid.netns import NetNamespace
from wgnapid.policy import decide
from wgnapid.retries import KeptFds, RetrySchedule
from wgnapid.sysfs import Opened, Outcome, Result

RETRY_FIRST = 0.1  # seconds; doubles up to RETRY_CAP_SHARE * pending_max_delay
# Retries of a waiting link are at most 90% of pending_max_delay apart: the other
# 10% is for the retry itself (a busy loop, a slow machine), so that a peer added
# at any moment, with no event, is enforced within pending_max_delay.
RETRY_CAP_SHARE = 0.9
# Writes run on this many threads. Nearly all of a `threaded` write is the
# kernel creating the NAPI kthread (waiting for kthreadd), which overlaps
# well: one writer fell 100+ ms behind a 1,000-link burst, four kept up
# (bench/README.md). The write releases the GIL; state stays on one thread.
WRITE_THREADS = 4
# How long close() waits for writes still in the kernel.
WRITER_JOIN_TIMEOUT = 5.0
# A batch of due retries writes on the loop thread (a failing write costs a few
# µs, less than a hand-off); once this many of them succeeded in one batch (a
# control plane added peers to many links at once: each success waits for a
# kthread), the rest of the batch goes to the writer threads.
RETRY_INLINE_SUCCESSES = 2

# Reasons of a WireGuard link held by the guard on a kernel that threads it
# itself (kernel.MITIGATE): turned back off, or waiting for its first peer to do so.
HELD_OFF = (f"the kernel itself enabled threaded NAPI ({kernel.CVE} window); "
            'kept in softirq mode (0) by kernel_guard = "strict"')
HELD_WAITING = (f"the kernel itself enabled threaded NAPI ({kernel.CVE} window); "
                "turned off as soon as the link has a peer (no NAPI instance yet)")

# Link states (docs/DESIGN.md).
THREADED, OFF, WAITING, HELD, NATIVE, FAILED = "threaded", "off", "waiting", "held", "native", "failed"
IGNORED, UNMATCHED, GONE, PENDING = "ignored", "unmatched", "gone", "pending"
# States that count as "as wanted" for `apply`'s exit code.
SATISFIED = {THREADED, OFF, WAITING, HELD, NATIVE, IGNORED, UNMATCHED, GONE}

_PRIORITY = {
    THREADED: syslog.LOG_INFO,
    OFF: syslog.LOG_INFO,
    WAITING: syslog.LOG_INFO,
    HELD: syslog.LOG_NOTICE,
    NATIVE: syslog.LOG_INFO,
    FAILED: syslog.LOG_ERR,
    GONE: syslog.LOG_INFO,
    IGNORED: syslog.LOG_DEBUG,
    UNMATCHED: syslog.LOG_DEBUG,
}


@dataclass(slots=True)
class LinkState:
    """One link: (netns, ifindex) is its identity; name and kind follow events."""

    netns: int  # the namespace's nsfs inode (NsId.ino)
    ifindex: int
    name: str  # wgnapid.ifname: the kernel's bytes, decoded losslessly
    kind: str
    rule: str | None = None
    wanted: str = "ignore"
    state: str = ""
    reason: str = ""
    before: int | None = None  # value read at the first look in this evaluation
    current: int | None = None
    written: bool = False  # wgnapid wrote this link's value since it appeared
    changed: bool = False  # the last evaluation wrote a new value
    writing: bool = False  # a write is with the writer threads
    again: bool = False  # an event came while writing: evaluate once more after it
    retry_delay: float = 0.0
    retry_at: float | None = None  # due time in the reconciler's RetrySchedule
    netns_name: str = "self"  # the namespace's name (wgnapid.discovery), shown beside the inode
    # A waiting link's `threaded`, opened under its proven directory and kept
    # open between retries (wgnapid.retries): bound to this device, never to
    # another link. None while a write holds it, or beyond the KeptFds cap.
    kept: Opened | None = None

    def shown(self) -> tuple:
        """Every field as_dict() shows, as a tuple to compare: wgnapid.status.LinkRows
        encodes a row again only when this changed."""
        return (self.name, self.netns, self.netns_name, self.ifindex, self.kind, self.rule,
                self.wanted, self.current, self.state, self.reason)

    def as_dict(self) -> dict:
        """The link's row in the status document (keep shown() in step)."""
        return {
            **ifname.json_fields(self.name),  # "name", "name_hex"
            "netns": self.netns,
            "netns_name": self.netns_name,
            "ifindex": self.ifindex,
            "kind": self.kind,
            "rule": self.rule,
            "wanted": self.wanted,
            "current": self.current,
            "state": self.state,
            "reason": self.reason,
        }


@dataclass(slots=True)
class _Write:
    """A write an evaluation needs: carried from _evaluate through _write to _finish."""

    st: LinkState
    rec: "Reconciler"  # whose link: writer threads may be shared by many reconcilers
    opened: Opened  # read at evaluation; the writer writes and reads back; the loop closes or keeps it
    want: int
    before: int
    drifted: bool
    held: bool = False  # the kernel guard turning the kernel's own threaded=1 off


@dataclass
class Stats:
    evaluations: int = 0
    writes: int = 0
    resyncs: int = 0
    overflows: int = 0
    failures: int = 0  # evaluations that ended with the link failed
    counts: Counter = field(default_factory=Counter)
    writes_by_kind: Counter = field(default_factory=Counter)  # IFLA_INFO_KIND -> writes tried


class _Writers:
    """Threads that make the writes, so that the loop never waits for one.

    Jobs go in through a queue; results come back in `done`, and the eventfd
    `fd` becomes readable, so the loop can select on it. Threads start with
    the first job: `status` and dry runs never write.
    """

    def __init__(self, work: Callable[[_Write], tuple[Result, Result | None]], n: int):
        self.work = work
        self.n = n
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.done: deque = deque()
        self.threads: list[threading.Thread] = []
        self.pending = 0  # submitted and not yet taken (loop thread only)

    def idle(self) -> bool:
        """No write is queued or in the kernel (a write may be made inline)."""
        return self.pending == 0

    def submit(self, job: _Write) -> None:
        if not self.threads:
            self.threads = [
                threading.Thread(target=self._run, name=f"wgnapid-write-{i}", daemon=True)
                for i in range(self.n)
            ]
            for t in self.threads:
                t.start()
        self.pending += 1
        self.jobs.put(job)

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                result = self.work(job)
            except Exception as exc:  # noqa: BLE001 - a result, never a dead writer
                result = (Result(Outcome.ERROR, detail=f"write: {exc!r}"), None)
            self.done.append((job, result))
            os.eventfd_write(self.fd, 1)

    def take(self) -> list:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass
        out = []
        while self.done:
            out.append(self.done.popleft())
        self.pending -= len(out)
        return out

    def wait(self) -> None:
        # poll, not select: with thousands of kept files or namespaces the
        # eventfd's number can be above select()'s FD_SETSIZE (1024).
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        p.poll()

    def close(self) -> None:
        # Stopping: writes not begun are dropped (their files close with the process).
        while True:
            try:
                self.jobs.get_nowait()
            except queue.Empty:
                break
        for _ in self.threads:
            self.jobs.put(None)
        deadline = time.monotonic() + WRITER_JOIN_TIMEOUT
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.threads = []
        os.close(self.fd)


def shared_writers(n: int = WRITE_THREADS) -> _Writers:
    """A pool of writer threads; one serves every reconciler of a daemon that
    covers many namespaces (threads start with the first write)."""
    return _Writers(lambda w: w.rec._write(w), n)


class Reconciler:
    """The links of one network namespace (``ns``, a wgnapid.netns.NetNamespace):
    every sysfs access goes through ns.open_threaded, which proves the link."""

    def __init__(
        self,
        policy: Policy,
        log: Log,
        ns: NetNamespace,
        *,
        verdict: kernel.Verdict | None = None,
        dry_run: bool = False,
        one_shot: bool = False,
        clock: Callable[[], float] = time.monotonic,
        peer_count: Callable[[LinkState], int | None] | None = None,
        writers: "_Writers | None" = None,
        kept: KeptFds | None = None,
    ):
        self.policy = policy
        self.log = log
        self.ns = ns
        self.attr = ns.attr
        self.verdict = verdict or kernel.running_verdict()
        self.dry_run = dry_run
        # `apply`, run by config management again and again: every link "becomes"
        # threaded in each run, so log only what the run changed or failed at.
        self.one_shot = one_shot
        self.clock = clock
        # WireGuard peers are asked inside the link's namespace, by ifindex
        # (ns.peer_count); tests pass their own.
        self.peer_count = peer_count or (lambda st: ns.peer_count(st.ifindex))
        # One reconciler per network namespace (each has its own sysfs view and
        # event sources): a link's identity is (netns, ifindex), with the
        # namespace held here and in every published record and journal entry.
        self.netns = ns.id.ino
        self.links: dict[int, LinkState] = {}  # by ifindex
        self.native = False  # seen: the kernel itself threads WireGuard links at creation
        self._kernel_enabled_said = False  # the once-per-run message about it
        self.generation = 0  # bumped on every state change: "is there news to publish?"
        # The ifindexes whose row changed since take_changed(); None: any may have.
        self.changed: set[int] | None = set()
        self.stats = Stats()
        self._retries = RetrySchedule()
        # Files of waiting links kept open between retries (a budget shared by
        # the reconcilers of one daemon). `apply` and dry runs keep none.
        self._kept = kept if kept is not None else KeptFds()
        self._keep = not (dry_run or one_shot)
        # ``writers``: a pool shared by the reconcilers of many namespaces
        # (shared_writers()); its results go back to each job's reconciler.
        self._own_writers = writers is None
        # A lone write with nothing queued is made on this thread (observe_many);
        # False always hands writes to the writer threads (tests of that path).
        self.inline = True
        self._writers = writers or shared_writers()
        self.in_flight = 0  # writes handed to the writers and not yet finished

    # -- evaluation -------------------------------------------------------

    def observe(self, link: Link, *, new: bool = False) -> LinkState:
        """Evaluate one link now, writing on this thread if needed. ``new``:
        first seen after start-up (an event)."""
        step = self._evaluate(link, new)
        if isinstance(step, _Write):
            return self._inline(step)
        return step

    def observe_many(self, links: list[tuple[Link, bool]], *, wait: bool = True) -> None:
        """Evaluate a batch of (link, new); the writes it needs go to the writer
        threads. ``wait``: return only once they are finished (start-up, reload:
        READY=1 means converged); the event path does not wait, and finishes them in
        collect() when `completions` becomes readable."""
        writes = []
        for link, new in links:
            step = self._evaluate(link, new)
            if isinstance(step, _Write):
                writes.append(step)
        if len(writes) == 1 and self.inline and self._writers.idle():
            # One link and nothing queued (links appearing one at a time): write
            # here. A hand-off to a writer and back costs more than the write
            # unless a batch builds up (bench/README.md, "One at a time").
            self._inline(writes[0])
        else:
            for step in writes:
                self._submit(step)
        if wait:
            self.drain()

    def _submit(self, w: _Write) -> None:
        w.st.writing = True
        self.in_flight += 1
        self._writers.submit(w)

    def _inline(self, w: _Write) -> LinkState:
        try:
            result = self._write(w)
        except Exception as exc:  # noqa: BLE001 - as a writer thread reports it
            result = (Result(Outcome.ERROR, detail=f"write: {exc!r}"), None)
        st = self._finish(w, *result)
        self._release(w)
        return st

    @property
    def completions(self) -> int:
        """A file descriptor that is readable when writes have finished."""
        return self._writers.fd

    def collect(self) -> None:
        """Finish the writes the writer threads are done with (of every
        reconciler sharing them: each goes back to its own)."""
        for w, (result, check) in self._writers.take():
            w.rec._collected(w, result, check)

    def _collected(self, w: _Write, result: Result, check: Result | None) -> None:
        self.in_flight -= 1
        st = w.st
        st.writing = False
        if self.links.get(st.ifindex) is not st:
            self.attr.close(w.opened)
            return  # removed while the write was in the kernel: nothing to say of it
        self._finish(w, result, check)
        self._release(w)
        if st.again:
            # An event (or resync) came during the write: the kernel may
            # have changed since the read-back began, so look once more.
            st.again = False
            self.observe_many([(Link(st.ifindex, st.name, st.kind), False)], wait=False)

    def drain(self) -> None:
        """Wait until no write is in flight."""
        while self.in_flight:
            self._writers.wait()
            self.collect()

    def close(self) -> None:
        for st in self.links.values():
            self._drop_kept(st)
        if self._own_writers:
            self._writers.close()

    def forget(self) -> None:
        """Drop every link without a word (the namespace went away: one entry for
        it says so). Writes in flight finish in the kernel and are ignored."""
        for st in self.links.values():
            self._drop_kept(st)
        self.links.clear()
        self.stats.counts.clear()
        self._retries.clear()
        self.generation += 1
        self.changed = None

    # -- kept files ---------------------------------------------------------

    def _release(self, w: _Write) -> None:
        """After a write's result was taken in: keep its file open while the link
        waits (and the cap allows), else close it. Loop thread only: the one
        place a write's file is closed or kept, so none is closed twice."""
        st = w.st
        if (self._keep and st.state == WAITING and self.links.get(st.ifindex) is st
                and w.opened.writable and (st.kept is not None or self._kept.take())):
            if st.kept is not None and st.kept is not w.opened:
                self.attr.close(st.kept)  # an older file of the same link: replaced
            st.kept = w.opened
            return
        if st.kept is w.opened:
            st.kept = None
            self._kept.give()
        self.attr.close(w.opened)

    def _drop_kept(self, st: LinkState) -> None:
        if st.kept is not None:
            self.attr.close(st.kept)
            st.kept = None
            self._kept.give()

    def _evaluate(self, link: Link, new: bool) -> LinkState | _Write:
        """Everything up to the write: settled states are returned, a needed
        write is returned as a _Write for _write and _finish."""
        st = self.links.get(link.ifindex)
        if st is None:
            st = self.links[link.ifindex] = LinkState(self.netns, link.ifindex, link.name, link.kind,
                                                      netns_name=self.ns.name)
        else:
            # Names and kinds follow every event, also while a write is in
            # flight: that write holds an fd under the proven directory, so it
            # still reaches this link, and what is logged of it uses this name.
            if st.name != link.name or st.kind != link.kind:
                st.name, st.kind = link.name, link.kind
                self._note(st)  # the published view follows renames
            if st.writing:
                st.again = True  # one write per link at a time; collect() looks again
                return st
        self.stats.evaluations += 1
        st.changed = False
        if not self._decide(st):
            return self._settle(st, IGNORED if st.rule else UNMATCHED)

        # The identity proof: the directory's ifindex is compared, and a stale
        # name corrected through rtnetlink (wgnapid.netns).
        opened, current = self.ns.open_threaded(st.ifindex, st.name, write=not self.dry_run)
        if current is not None and (current.name, current.kind) != (st.name, st.kind):
            st.name, st.kind = current.name, current.kind
            self._note(st)
            if not self._decide(st):  # renamed out of its rule
                if not isinstance(opened, Result):
                    self.attr.close(opened)
                return self._settle(st, IGNORED if st.rule else UNMATCHED)
        if isinstance(opened, Result):
            return self._fail_or_gone(st, opened)
        step = None
        try:
            step = self._evaluate_value(st, opened, new)
        finally:
            if not isinstance(step, _Write):  # a _Write takes the fd to the writer
                self.attr.close(opened)
        return step

    def _decide(self, st: LinkState) -> bool:
        """Apply the policy to the link's name and kind; True when it is to be read."""
        decision = decide(self.policy, st.name, st.kind, self.ns.name)
        st.rule, st.wanted = decision.rule, decision.wanted
        if st.wanted == "ignore":
            st.before = st.current = None
            return False
        return True

    def _evaluate_value(self, st: LinkState, opened: Opened, new: bool) -> LinkState | _Write:
        read = self.attr.read_opened(opened)
        if read.outcome is not Outcome.OK:
            return self._fail_or_gone(st, read)
        st.before = st.current = read.value
        want = 1 if st.wanted == "on" else 0

        if st.wanted == "on" and st.kind == "wireguard":
            # A link that existed before we started may have been written by an
            # earlier wgnapid (and lost its peers since): only trust it as
            # evidence where the release says the kernel threads WireGuard from
            # birth (mainline 6.16+, the stable windows of kernel.CREATION_WINDOWS).
            trusted = new or self.verdict.creation_default is True
            if not self.native and trusted and not st.written and read.value == 1:
                self._detect_native(st)
            handling = kernel.native_handling(self.policy.daemon.kernel_guard, self.verdict)
            if handling == kernel.MITIGATE and (self.native or self.verdict.creation_default):
                # strict on a risky kernel that enables threaded NAPI on WireGuard
                # itself (the CVE-2026-52945 window): turn it back off.
                return self._mitigate(st, opened, read.value)
            if self.native:
                reason = "" if read.value == 1 else "the kernel-native link reads 0; not written"
                if handling == kernel.LEAVE or (handling == kernel.VERIFY
                                                and self.verdict.verdict != "safe"):
                    reason = (reason + "; " if reason else "") + (
                        f"left as the kernel chose although the guard calls this kernel "
                        f"{self.verdict.verdict} ({kernel.CVE})")
                return self._settle(st, NATIVE, reason)
            if kernel.guard_holds(self.policy.daemon.kernel_guard, self.verdict, st.kind):
                return self._settle(st, HELD, self.verdict.reason)

        if read.value == want:
            return self._settle(st, THREADED if want else OFF)
        if self.dry_run:
            return self._settle(st, PENDING, f"reads {read.value}, wanted {want}")
        # Drift: the link had what is wanted now and lost it (a policy change is not drift).
        return _Write(st, self, opened, want, read.value, drifted=st.state == (THREADED if want else OFF))

    def _mitigate(self, st: LinkState, opened: Opened, value: int) -> LinkState | _Write:
        """The guard's answer to a kernel that threads WireGuard itself on a risky
        kernel: 0 is wanted and the state is held. The write fails with
        EOPNOTSUPP until the link's first peer (KERNEL-FACTS.md): then it is
        retried like a waiting link, still shown held."""
        if value == 0:
            return self._settle(st, HELD, HELD_OFF)
        self._say_kernel_enabled(st, seen=self.native)
        if self.dry_run:
            return self._settle(st, PENDING, f"reads {value}, wanted 0 ({HELD_OFF})")
        drifted = st.state == HELD and st.reason == HELD_OFF
        return _Write(st, self, opened, 0, value, drifted=drifted, held=True)

    def _write(self, w: _Write) -> tuple[Result, Result | None]:
        """The write and the read-back; runs on a writer thread or inline (no
        state here; the file stays open: _release closes or keeps it)."""
        result = self.attr.write_opened(w.opened, w.want)
        if result.outcome is not Outcome.OK:
            return result, None
        # The truth is what the kernel says afterwards, not what was written.
        return result, self.attr.read_opened(w.opened)

    def _finish(self, w: _Write, result: Result, check: Result | None) -> LinkState:
        st, want = w.st, w.want
        self.stats.writes += 1
        self.stats.writes_by_kind[st.kind] += 1
        if result.outcome is Outcome.NOT_SETTABLE and w.held:
            return self._settle(st, HELD, HELD_WAITING, retry=True)
        if result.outcome is Outcome.NOT_SETTABLE:
            reason = (
                "no NAPI instance yet: waiting for the first peer"
                if st.kind == "wireguard"
                else "no NAPI instance yet: link down, or GRO off"
            )
            return self._settle(st, WAITING, reason)
        if result.outcome is not Outcome.OK:
            return self._fail_or_gone(st, result)
        st.written = st.changed = True
        if check.outcome is not Outcome.OK:
            return self._fail_or_gone(st, check)
        st.current = check.value
        if check.value != want:
            return self._settle(st, FAILED, f"wrote {want} but reads {check.value}")
        if w.drifted:
            # Someone (or the kernel, on kthread failure) changed it: say so once.
            self.log.link(
                f"link-{st.state}",
                syslog.LOG_NOTICE,
                f"re-asserted threaded={want} (it had been changed to {w.before})",
                name=st.name, ifindex=st.ifindex, rule=st.rule, state=st.state, netns=self.netns, netns_name=self.ns.name,
            )
        if w.held:
            return self._settle(st, HELD, HELD_OFF)
        return self._settle(st, THREADED if want else OFF)

    def _detect_native(self, st: LinkState) -> None:
        # Threaded while peerless and never written by us: only the kernel can
        # do that (6.16+ and the stable CVE window set it in wg_newlink), see
        # KERNEL-FACTS.md.
        if self.peer_count(st) == 0:
            self.native = True
            self._say_kernel_enabled(st, seen=True)

    def _say_kernel_enabled(self, st: LinkState, *, seen: bool) -> None:
        """Once per reconciler (daemon run): the kernel enables threaded NAPI on
        WireGuard itself, with the guard's verdict beside it. ``seen``: a peerless
        link proved it; otherwise the release is in a window that does it."""
        if self._kernel_enabled_said or self.dry_run:
            return
        self._kernel_enabled_said = True
        guard = self.policy.daemon.kernel_guard
        warn, text = kernel.native_message(guard, self.verdict, ifname.printable(st.name), seen=seen)
        fields = {"wgnapid_kernel": self.verdict.release,
                  "wgnapid_kernel_verdict": self.verdict.verdict, "wgnapid_guard": guard}
        if warn:
            self.log.warning("kernel-native-risky", text, **fields)
        else:
            self.log.info("kernel-native", text, **fields)

    def _fail_or_gone(self, st: LinkState, result) -> LinkState:
        if result.outcome is Outcome.GONE:
            self.remove(st.ifindex)
            st.state = GONE
            return st
        return self._settle(st, FAILED, result.detail)

    def _settle(self, st: LinkState, state: str, reason: str = "", *, retry: bool = False
                ) -> LinkState:
        if state == FAILED:
            self.stats.failures += 1
        if state == WAITING or retry:
            self._schedule_retry(st)
        else:
            self._retries.discard(st)
            st.retry_delay = 0.0
            if st.kept is not None:
                self._drop_kept(st)
        if state != st.state or (state in (FAILED, HELD) and reason != st.reason):
            if st.state:
                self.stats.counts[st.state] -= 1
            self.stats.counts[state] += 1
            st.state, st.reason = state, reason
            self._note(st)
            if not self.dry_run and (not self.one_shot or st.changed or state == FAILED):
                self._log_state(st)
        st.reason = reason
        return st

    def _log_state(self, st: LinkState) -> None:
        rule = f" [rule {st.rule}]" if st.rule else ""
        text = {
            THREADED: "threaded NAPI on",
            OFF: "threaded NAPI off",
            WAITING: "waiting",
            HELD: "held by the kernel guard",
            NATIVE: "threaded by the kernel itself; verifying only",
            FAILED: "failed",
            IGNORED: "ignored by policy",
            UNMATCHED: "no rule matches; left alone",
        }[st.state]
        if st.reason:
            text += f": {st.reason}"
        self.log.link(
            f"link-{st.state}", _PRIORITY[st.state], text + rule,
            name=st.name, ifindex=st.ifindex, rule=st.rule, state=st.state, netns=self.netns, netns_name=self.ns.name,
        )

    # -- retries ----------------------------------------------------------

    def _schedule_retry(self, st: LinkState, now: float | None = None) -> None:
        """Next retry of a waiting link, ``now`` (default: the clock) plus its
        back-off delay. A ``now`` taken before the write only makes it earlier."""
        cap = self.policy.daemon.pending_max_delay * RETRY_CAP_SHARE
        delay = st.retry_delay
        st.retry_delay = delay = cap if delay * 2 >= cap else (delay * 2 if delay else min(RETRY_FIRST, cap))
        retries = self._retries
        if st.retry_at is not None:
            retries.discard(st)
        # Rounded down to a slot shared with other links (wgnapid.retries): never
        # later than asked, and one wake-up serves every link of the slot.
        retries.add(st, retries.slot(self.clock() if now is None else now, delay, cap))

    def next_retry(self) -> float | None:
        """When the next retry is due (the reconciler's clock, seconds), or None."""
        return self._retries.next_due()

    def retry_due(self, *, wait: bool = True) -> None:
        """Try again every waiting link whose retry is due.

        A link whose `threaded` is kept open (``st.kept``) is retried with one
        pwrite of the wanted value on that file, here on the loop thread: the
        file was opened under the link's proven directory and stays bound to
        that device (a rename keeps it; once the device is gone it answers
        ENODEV), so the proof holds for this write too. EOPNOTSUPP: still
        waiting, nothing else happens. Any other answer is taken in like a
        write of the full evaluation (read-back, state, log). Policy changes
        and namespace renames re-evaluate every link in full first, so the
        wanted value is current. Links without a kept file (beyond the cap, or
        a WireGuard link once the kernel was seen threading WireGuard itself)
        get the full evaluation: proof, read, decision, write."""
        now = self.clock()
        full: list[tuple[Link, bool]] = []
        by_value: tuple[list[LinkState], list[LinkState]] = ([], [])  # kept files, by the value wanted
        native = self.native
        for st in self._retries.take(now):  # (a removed link's retry was discarded: not in it)
            if st.kept is None or st.writing or (native and st.kind == "wireguard"):
                full.append((Link(st.ifindex, st.name, st.kind), False))
            else:
                by_value[st.wanted == "on"].append(st)
        # Links already at the cap and still waiting all go to one slot.
        cap = self.policy.daemon.pending_max_delay * RETRY_CAP_SHARE
        at_cap: list[LinkState] = []
        for want, batch in enumerate(by_value):
            if batch:
                self._retry_kept(batch, want, now, cap, at_cap)
        self._retries.add_many(at_cap, self._retries.slot(now, cap, cap))
        self.observe_many(full, wait=wait)

    def _retry_kept(self, batch: list[LinkState], want: int, now: float, cap: float,
                    at_cap: list[LinkState]) -> None:
        """retry_due() for links whose kept file gets ``want``: one pwrite each
        (ThreadedAttr.retry_each), inline until RETRY_INLINE_SUCCESSES of them
        succeeded; the rest of the batch goes to the writer threads (many
        became settable at once: writes in parallel). A refused write (still
        waiting) changes nothing but the link's next retry, appended to
        ``at_cap`` when that is the cap."""
        limit = RETRY_INLINE_SUCCESSES if self.inline else 0
        answers, tried = self.attr.retry_each([st.kept for st in batch], want, limit)
        answered = dict(answers)
        refused = tried - len(answered)
        for i in range(tried):
            st = batch[i]
            result = answered.get(i)
            if result is None:
                # The common case, kept to one pwrite: no read, no log, no state change.
                if st.retry_delay == cap:
                    at_cap.append(st)
                else:
                    self._schedule_retry(st, now)
                continue
            w = self._take_kept(st, want)
            check = self.attr.read_opened(w.opened) if result.outcome is Outcome.OK else None
            self._finish(w, result, check)
            self._release(w)
        for st in batch[tried:]:
            self._submit(self._take_kept(st, want))
        self.stats.evaluations += refused
        self.stats.writes += refused

    def _take_kept(self, st: LinkState, want: int) -> _Write:
        """A write of ``want`` on the link's kept file: the write holds the file
        now (_release keeps or closes it)."""
        self.stats.evaluations += 1
        op, st.kept = st.kept, None
        self._kept.give()
        return _Write(st, self, op, want, st.current if st.current is not None else 1 - want, drifted=False)

    # -- whole sets ---------------------------------------------------------

    def remove(self, ifindex: int, reason: str = "") -> None:
        st = self.links.pop(ifindex, None)
        if st is not None:
            self._retries.discard(st)
            self._drop_kept(st)
        if st is None or not st.state:
            return  # unknown, or vanished before its first evaluation settled: nothing was said of it
        self.stats.counts[st.state] -= 1
        self._note(st)
        if not self.dry_run and not self.one_shot and st.state not in (IGNORED, UNMATCHED):
            self.log.link(
                "link-gone", _PRIORITY[GONE], "gone" + (f" ({reason})" if reason else ""),
                name=st.name, ifindex=st.ifindex, rule=st.rule, state=GONE, netns=self.netns, netns_name=self.ns.name,
            )

    def sync(self, links: list[Link], complete: bool = True, *, wait: bool = True,
             recheck_waiting: bool = True) -> None:
        """Evaluate every listed link; with a complete list, forget links not in it.

        ``recheck_waiting=False`` (the periodic resync, an overflow's re-list):
        a waiting link whose file is kept and whose name and kind are as listed
        is left to its retry schedule, which tries it within the cap anyway;
        evaluating 10,000 of them in full every resync would cost more than
        all their retries (bench/README.md, "Waiting links at scale"). Start-up,
        reload and a renamed namespace recheck everything (the policy may
        decide otherwise now)."""
        if complete:
            present = {link.ifindex for link in links}
            for ifindex in [i for i in self.links if i not in present]:
                self.remove(ifindex)
        todo = []
        for link in links:
            if not recheck_waiting:
                st = self.links.get(link.ifindex)
                if (st is not None and st.kept is not None and st.state == WAITING
                        and st.name == link.name and st.kind == link.kind):
                    continue
            todo.append((link, False))
        self.observe_many(todo, wait=wait)

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy

    def renamed(self) -> None:
        """The namespace has a new name (ns.name): links show it; the caller
        evaluates them again (rules may match differently)."""
        for st in self.links.values():
            st.netns_name = self.ns.name
        self.generation += 1
        self.changed = None

    def _note(self, st: LinkState) -> None:
        """A link's row changed (state, name, gone): news to publish."""
        self.generation += 1
        if self.changed is not None:
            self.changed.add(st.ifindex)

    def take_changed(self) -> set[int] | None:
        """The ifindexes whose row changed since the last call (a link no longer
        in ``links`` is gone); None when any may have (cleared, renamed namespace)."""
        changed, self.changed = self.changed, set()
        return changed

    def summary(self) -> dict[str, int]:
        return {state: n for state, n in self.stats.counts.items() if n > 0}

    def summary_text(self) -> str:
        return summary_text(self.stats.counts)


def summary_text(c: Counter) -> str:
    """The STATUS= line for these state counts."""
    parts = [f"{c[THREADED]} threaded", f"{c[WAITING]} waiting for a peer"]
    for state in (OFF, HELD, NATIVE, FAILED):
        if c[state]:
            parts.append(f"{c[state]} {state}")
    return ", ".join(parts)
