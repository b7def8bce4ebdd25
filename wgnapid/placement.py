"""Placing NAPI kthreads: a rule's `cpus` and `sched` applied to its links' threads.

Kernel behaviour relied on (KERNEL-FACTS.md, "NAPI kernel threads"): NAPI
threads are started with kthread_run and never bound to a CPU, so
sched_setaffinity(2) and sched_setscheduler(2) work on them as root; threads
the kernel re-creates (threaded toggled, a WireGuard peer re-added, a link
re-created) start with the defaults again, so placement is re-applied to
every new thread set. New threads are noticed at once through the
process-events connector (procevents.py), and the resync re-checks them all.

What is needed where (the unit's drop-ins in systemd/): the syscalls
sched_setaffinity, sched_setscheduler and setpriority (in systemd's
@resources set); CAP_SYS_NICE for any of them, since kthreads hold every
capability and changing a task with capabilities the caller lacks needs it
(security/commoncap.c, cap_safe_nice); RestrictRealtime=no for `fifo` and `rr`.
"""

from __future__ import annotations

import errno
import heapq
import os
import re
import syslog
import time
from dataclasses import dataclass
from functools import lru_cache

from wgnapid import DROP_INS, procevents
from wgnapid.napithreads import KnownNames, NapiThread, NapiThreads, format_cpus, owner, read_fork

SCHED_POLICIES = {"other": os.SCHED_OTHER, "fifo": os.SCHED_FIFO, "rr": os.SCHED_RR}
_SCHED_RE = re.compile(r"(other)(?::nice=(-?\d+))?|(fifo|rr):(\d+)")
CPU_ONLINE = "/sys/devices/system/cpu/online"
CPU_POSSIBLE = "/sys/devices/system/cpu/possible"


def parse_cpu_list(text: str) -> frozenset[int]:
    """The kernel's CPU list format ("2-15,18") as a set. Raises ValueError."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"not a CPU list like \"2-15,18\": {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"range {part.strip()!r} runs backwards")
        if hi >= 8192:  # CONFIG_NR_CPUS is at most 8192
            raise ValueError(f"CPU {hi} is beyond any kernel's CPU count")
        cpus.update(range(lo, hi + 1))
    return frozenset(cpus)


def _cpu_file(path: str) -> frozenset[int] | None:
    try:
        with open(path) as f:
            return parse_cpu_list(f.read())
    except (OSError, ValueError):
        return None


def online_cpus() -> frozenset[int] | None:
    """CPUs online now (sysfs), None when that cannot be read."""
    return _cpu_file(CPU_ONLINE)


def check_cpus(text: str) -> frozenset[int]:
    """Parse a rule's `cpus` and check it against this machine: every CPU must
    exist and be online. Raises ValueError with one clear sentence."""
    cpus = parse_cpu_list(text)
    possible, online = _cpu_file(CPU_POSSIBLE), online_cpus()
    if possible is not None and not cpus <= possible:
        raise ValueError(
            f"CPU {format_cpus(cpus - possible)} does not exist here (CPUs: {format_cpus(possible)})"
        )
    if online is not None and not cpus <= online:
        raise ValueError(
            f"CPU {format_cpus(cpus - online)} is offline (online: {format_cpus(online)})"
        )
    return cpus


@dataclass(frozen=True, slots=True)
class Sched:
    """A scheduling policy for NAPI threads: "other" (nice -20..19, default 0),
    "fifo" or "rr" (priority 1..99)."""

    policy: str
    priority: int = 0
    nice: int = 0

    def __str__(self) -> str:
        if self.policy == "other":
            return "other" if self.nice == 0 else f"other:nice={self.nice}"
        return f"{self.policy}:{self.priority}"


@lru_cache(maxsize=256)
def parse_sched(text: str) -> Sched:
    """"other", "other:nice=-5", "fifo:50", "rr:10". Raises ValueError."""
    m = _SCHED_RE.fullmatch(text.strip())
    if not m:
        raise ValueError(
            f'{text!r} is not "other", "other:nice=N" (-20..19), "fifo:N" or "rr:N" (1..99)'
        )
    if m.group(1):
        nice = int(m.group(2) or 0)
        if not -20 <= nice <= 19:
            raise ValueError(f"nice {nice} is outside -20..19")
        return Sched("other", 0, nice)
    prio = int(m.group(4))
    if not 1 <= prio <= 99:
        raise ValueError(f"{m.group(3)} priority {prio} is outside 1..99")
    return Sched(m.group(3), prio, 0)


@dataclass(frozen=True, slots=True)
class Placement:
    """What a rule wants for its links' NAPI threads; None: leave as is."""

    cpus: frozenset[int] | None = None
    sched: Sched | None = None

    def __bool__(self) -> bool:
        return self.cpus is not None or self.sched is not None

    def __str__(self) -> str:
        parts = []
        if self.cpus is not None:
            parts.append(f"CPUs {format_cpus(self.cpus)}")
        if self.sched is not None:
            parts.append(f"sched {self.sched}")
        return ", ".join(parts)


@lru_cache(maxsize=256)
def placement_of(cpus: str | None, sched: str | None) -> Placement:
    """A rule's placement from its (already validated) `cpus` and `sched` keys."""
    return Placement(
        cpus=None if cpus is None else parse_cpu_list(cpus),
        sched=None if sched is None else parse_sched(sched),
    )


class PlacementError(Exception):
    """A thread could not be placed; the message says why in one line."""


def _why(exc: OSError, what: str) -> str:
    hint = ""
    if exc.errno == errno.EPERM:
        hint = (": needs CAP_SYS_NICE, and a unit that allows it (the drop-ins placement.conf, "
                f"and realtime.conf for fifo/rr: {DROP_INS})")
    elif exc.errno == errno.EINVAL and what == "affinity":
        hint = ": none of those CPUs is online or allowed for the thread"
    return f"setting {what}: {os.strerror(exc.errno or 0)}{hint}"


def needs(thread: NapiThread, want: Placement) -> bool:
    """Whether the thread differs from what is wanted."""
    if want.cpus is not None and thread.cpus is not None and thread.cpus != want.cpus:
        return True
    s = want.sched
    if s is not None:
        if thread.policy != s.policy or thread.priority != s.priority:
            return True
        if s.policy == "other" and thread.nice != s.nice:
            return True
    return False


def apply(thread: NapiThread, want: Placement) -> bool:
    """Make one thread as wanted: True when something was changed, False when it
    already was. A thread that exited meanwhile (ESRCH) counts as done.
    Raises PlacementError."""
    if not needs(thread, want):
        return False
    pid, s = thread.pid, want.sched
    steps = []
    if want.cpus is not None and thread.cpus != want.cpus:
        steps.append(("affinity", lambda: os.sched_setaffinity(pid, want.cpus)))
    if s is not None and (thread.policy != s.policy or thread.priority != s.priority):
        steps.append((f"policy {s}", lambda: os.sched_setscheduler(
            pid, SCHED_POLICIES[s.policy], os.sched_param(s.priority))))
    if s is not None and s.policy == "other" and thread.nice != s.nice:
        steps.append((f"nice {s.nice}", lambda: os.setpriority(os.PRIO_PROCESS, pid, s.nice)))
    for what, step in steps:
        try:
            step()
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                return False  # exited meanwhile: nothing left to place
            raise PlacementError(_why(exc, what)) from None
    return True


@dataclass(slots=True)
class LinkPlacement:
    """What happened to one link's threads, for status and logging."""

    want: Placement
    pids: frozenset[int] = frozenset()
    state: str = "pending"  # "placed" | "failed" | "ambiguous" | "pending" (no threads yet)
    reason: str = ""

    def as_dict(self) -> dict:
        return {
            "cpus": None if self.want.cpus is None else format_cpus(self.want.cpus),
            "sched": None if self.want.sched is None else str(self.want.sched),
            "state": self.state,
            "reason": self.reason,
        }


class Placer:
    """Applies placements to threads and logs each thread set's outcome once.

    Holds, per link name, the last outcome; a new outcome for the same thread
    set is not logged again, so a resync that finds everything in place costs
    reads only and says nothing. ``log``: a wgnapid.log.Log (or None: silent).
    """

    def __init__(self, log=None):
        self.log = log
        self.links: dict[str, LinkPlacement] = {}
        self.changes = 0  # threads changed, over the daemon's life
        self.failures = 0  # placements that failed
        self._early: dict[str, set[int]] = {}
        self.generation = 0  # bumped when a link's outcome changes: status has news

    def place(self, ifname: str, ifindex: int, rule: str | None, want: Placement,
              threads: tuple[NapiThread, ...], ambiguous: str = "") -> LinkPlacement:
        """Apply ``want`` to these threads (all of one link) and record the outcome."""
        pids = frozenset(t.pid for t in threads)
        early = self._early.pop(ifname, set())
        prev = self.links.get(ifname)
        lp = LinkPlacement(want, pids)
        changed: list[NapiThread] = []
        if not threads:
            lp.state = "pending"
        elif ambiguous:
            # Placing another namespace's thread by mistake is worse than not placing.
            lp.state, lp.reason = "ambiguous", f"not placed: {ambiguous}"
        else:
            lp.state = "placed"
            for t in threads:
                try:
                    if apply(t, want) or t.pid in early:
                        changed.append(t)
                except PlacementError as exc:
                    lp.state, lp.reason = "failed", f"{t.name} (pid {t.pid}): {exc}"
                    break
        self.links[ifname] = lp
        self.changes += len(changed)
        if lp.state == "failed":
            self.failures += 1
        # Once per thread set and outcome; and when the same threads had to be
        # placed again (someone changed them back).
        news = prev is None or (prev.pids, prev.want, prev.state, prev.reason) != (
            pids, want, lp.state, lp.reason)
        if news:
            self.generation += 1
        if self.log is not None and threads and (news or changed):
            self._log(ifname, ifindex, rule, lp, threads, changed)
        return lp

    def placed_early(self, ifname: str, pid: int) -> None:
        """A thread the connector path placed on its own: the next ``place`` of
        its link counts it as changed (and logs the set)."""
        self._early.setdefault(ifname, set()).add(pid)

    def forget(self, keep: set[str]) -> None:
        """Drop every link not in ``keep``."""
        self.drop([n for n in self.links if n not in keep])

    def drop(self, names) -> None:
        """Drop these links' outcomes (no longer targets)."""
        for name in names:
            self.links.pop(name, None)
            self._early.pop(name, None)

    def _log(self, ifname, ifindex, rule, lp, threads, changed) -> None:
        names = ", ".join(f"{t.name} (pid {t.pid})" for t in threads)
        fields = dict(name=ifname, ifindex=ifindex, rule=rule)
        if lp.state == "failed":
            self.log.link("placement-failed", syslog.LOG_WARNING,
                          f"NAPI threads not placed ({lp.want}): {lp.reason}", state=lp.state, **fields)
        elif lp.state == "ambiguous":
            self.log.link("placement-ambiguous", syslog.LOG_WARNING,
                          f"NAPI threads {names}: {lp.reason}", state=lp.state, **fields)
        else:
            verb = "placed" if changed else "already placed"
            self.log.link("placement", syslog.LOG_INFO,
                          f"NAPI threads {verb} on {lp.want}: {names}", state=lp.state, **fields)


# -- the daemon's side: targets, the connector, the scans ----------------------------

# A kthread fork not yet named (napithreads.unnamed_fork) is looked at again
# after these seconds, then every NAME_POLL s while it stays unnamed, for at
# most NAME_POLL_FOR s after its fork (the resync is the backstop beyond that).
# It is named microseconds after its fork unless its creator is starved of
# CPU, and a fork that never is exits: the polling ends by itself.
NAME_RETRIES = (0.002, 0.01, 0.05, 0.2, 1.0)
NAME_POLL = 2.0
NAME_POLL_FOR = 600.0
MAX_PENDING = 65536  # forks being looked at again at once; forks beyond it wait for the resync
SCAN_AFTER_EVENT = 0.5  # a full scan (and the log line) this long after threads were placed
SCAN_MIN_INTERVAL = 1.0  # without the connector: scans after state changes, at most this often


@dataclass(frozen=True, slots=True)
class Target:
    """A link whose rule places its threads."""

    ifindex: int
    name: str
    rule: str | None
    want: Placement
    netns: int = 0  # the namespace's nsfs inode: (netns, ifindex) is the link


class Namesakes:
    """The names of every link the daemon covers, in every namespace: which
    links share a name with a target, and which names a cut thread name fits.

    A NAPI thread is named after its link, ``napi/<dev>-<napi id>``, cut to 15
    characters, and carries no namespace (every kthread is a child of
    kthreadd, in the initial namespaces; KERNEL-FACTS.md, "NAPI kernel
    threads"). So when ``wg0`` exists in two covered namespaces, or a cut
    name fits another link's name, a thread cannot be told to be the
    target's: it is not placed, and the link's placement says "ambiguous"
    (NapiThreads.of). Links in namespaces the daemon does not cover are
    not known here at all (README, "Network namespaces").
    """

    def __init__(self) -> None:
        self._name: dict[tuple[int, int], str] = {}  # (netns, ifindex) -> name
        self._keys: dict[str, set[tuple[int, int]]] = {}  # name -> the links called so
        self.known = KnownNames()  # every name, for cut thread names
        self.filled = False  # reset() was called: without it only targets are known

    def reset(self, links) -> set[str]:
        """Every covered link (LinkState: netns, ifindex, name) at once.
        Returns the names whose set of links changed."""
        old = self._keys
        self._name, self._keys, self.known = {}, {}, KnownNames()
        for st in links:
            self._add((st.netns, st.ifindex), st.name)
        self.filled = True
        return {n for n in old.keys() | self._keys.keys() if old.get(n) != self._keys.get(n)}

    def apply(self, changed) -> set[str]:
        """Follow changed links: ``changed`` {(netns, ifindex): LinkState, or
        None when gone}. Returns the names whose set of links changed."""
        names: set[str] = set()
        for key, st in changed.items():
            old = self._name.get(key)
            new = None if st is None else st.name
            if old == new:
                continue
            if old is not None:
                self._remove(key, old)
                names.add(old)
            if new is not None:
                self._add(key, new)
                names.add(new)
        return names

    def elsewhere(self, name: str, key: tuple[int, int]) -> int:
        """How many other covered links are called ``name`` (names are unique
        within a namespace: each is in another namespace)."""
        keys = self._keys.get(name, ())
        return len(keys) - (key in keys)

    def _add(self, key: tuple[int, int], name: str) -> None:
        self._name[key] = name
        self._keys.setdefault(name, set()).add(key)
        self.known.add(name)

    def _remove(self, key: tuple[int, int], name: str) -> None:
        del self._name[key]
        keys = self._keys[name]
        keys.discard(key)
        if not keys:
            del self._keys[name]
            self.known.discard(name)


class Steering:
    """Keeps every matched link's NAPI threads placed as its rule says.

    The daemon calls ``sync(targets)`` after each resync (a full /proc scan:
    the backstop), ``handle()`` when ``fileno()`` is readable (the
    process-events connector: new kthreads, placed at once), ``due()`` from
    its loop with ``next_due()`` in its timeout, and ``changed()`` when link
    states changed (only used without the connector). ``log``: wgnapid.log.Log.
    Every covered link, target or not, is given with ``set_links()`` and
    ``links_changed()`` (Namesakes): a target whose threads cannot be told
    from another link's is never placed.
    """

    def __init__(self, log, kernel_version=None, *, connector: bool = True,
                 scan=None, clock=None):
        self.log = log
        self.placer = Placer(log)
        self.targets: dict[str, Target] = {}
        self._keys: dict[tuple[int, int], str] = {}  # (netns, ifindex) -> name in targets
        self._known = KnownNames()  # the names in targets, for cut thread names
        self.namesakes = Namesakes()
        self.clock = clock or time.monotonic
        self.scan = scan or NapiThreads
        # After a first scan, scans for news read only new PIDs (NapiThreads(previous=)).
        self.scan_since = (lambda previous: scan()) if scan else (lambda previous: NapiThreads(previous=previous))
        self._snapshot: NapiThreads | None = None  # the last scan
        self._placed: dict[str, Target] = {}  # targets as they were when last placed
        self._dirty: set[str] = set()  # targets new or changed since last placed
        self._full = False  # the next scan looks at every target (events were lost)
        self.events = None
        self.unavailable = ""
        self._pending: list[tuple[float, int, int, float]] = []  # heap of (due, pid, attempt, forked)
        self._scan_at: float | None = None
        self._last_scan = 0.0
        if connector:
            try:
                self.events = procevents.ProcEvents(kernel_version)
            except procevents.Unavailable as exc:
                self.unavailable = str(exc)

    def fileno(self) -> int:
        return self.events.fileno()

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None

    def set_links(self, links) -> None:
        """Every covered link (LinkStates) at once, after the targets; see
        Namesakes and links_changed."""
        self._namesakes_changed(self.namesakes.reset(links))

    def links_changed(self, changed) -> None:
        """Links changed ({(netns, ifindex): LinkState or None}): targets that
        gained or lost a namesake are looked at again, soon."""
        self._namesakes_changed(self.namesakes.apply(changed))

    def _namesakes_changed(self, names: set[str]) -> None:
        touched = {n for n in names if n in self.targets}
        if touched:
            self._dirty |= touched
            if self._scan_at is None:
                self._scan_at = self.clock() + SCAN_AFTER_EVENT

    def _elsewhere(self, t: Target) -> int:
        return self.namesakes.elsewhere(t.name, (t.netns, t.ifindex))

    def _names(self) -> KnownNames:
        """The names a cut thread name is checked against: every covered link's."""
        return self.namesakes.known if self.namesakes.filled else self._known

    def set_targets(self, targets: list[Target]) -> None:
        """Every target at once (start-up, reload, a namespace entered or left)."""
        self.targets = {t.name: t for t in targets if t.want}
        self._keys = {(t.netns, t.ifindex): t.name for t in self.targets.values()}
        self._known = KnownNames(self.targets)
        self.placer.forget(set(self.targets))
        self._placed = {n: t for n, t in self._placed.items() if self.targets.get(n) == t}
        self._dirty = {n for n in self.targets if n not in self._placed}

    def update(self, changed, targets: list[Target]) -> None:
        """Follow the links whose rows changed: ``changed``, their (netns,
        ifindex) keys, stop being targets unless ``targets`` (the targets among
        them now) names them again. O(changed), not O(targets): with 10,000
        targets, rebuilding all on each new link cost ~20 ms."""
        gone = set()
        for key in changed:
            name = self._keys.pop(key, None)
            if name is not None and (t := self.targets.get(name)) is not None \
                    and (t.netns, t.ifindex) == key:
                del self.targets[name]
                gone.add(name)
        for t in targets:
            if not t.want:
                continue
            old = self.targets.get(t.name)
            if old is not None:
                self._keys.pop((old.netns, old.ifindex), None)
            self.targets[t.name] = t
            self._keys[(t.netns, t.ifindex)] = t.name
            self._known.add(t.name)
            gone.discard(t.name)
            if self._placed.get(t.name) != t:
                self._dirty.add(t.name)
        self.placer.drop(gone)
        for name in gone:
            self._placed.pop(name, None)
            self._dirty.discard(name)
            self._known.discard(name)

    def sync(self, targets: list[Target] | None = None) -> None:
        """Scan /proc and place every target link's threads (the resync: the
        backstop for anything the scans for news and the connector missed)."""
        if targets is not None:
            self.set_targets(targets)
        self._scan_at, self._full = None, False
        self._last_scan = self.clock()
        if not self.targets:
            self._snapshot, self._placed, self._dirty = None, {}, set()
            return
        snapshot = self._snapshot = self.scan()
        names = self._names()
        for t in self.targets.values():
            lt = snapshot.of(t.name, names, self._elsewhere(t))
            self.placer.place(t.name, t.ifindex, t.rule, t.want, lt.threads, lt.ambiguous)
        self._placed, self._dirty = dict(self.targets), set()

    def _sync_news(self) -> None:
        """Place the threads of what changed since the last scan: targets that
        are new or want something else, and links whose threads came or went.
        Reads only new PIDs and the threads about to be placed, so a new link
        among 10,000 placed ones costs ~10 ms, not a full scan's ~300 ms
        (bench/README.md, "Links at scale")."""
        prev = self._snapshot
        if prev is None or self._full:
            self.sync()
            return
        self._scan_at = None
        self._last_scan = self.clock()
        snapshot = self._snapshot = self.scan_since(prev)
        known = self._known
        touched, self._dirty = self._dirty, set()
        for t in snapshot.moved_since(prev):
            if t.cut:
                touched.update(known.fitting(t.name))
            elif (name := owner(t.name)) in self.targets:
                touched.add(name)
        names = self._names()
        for name in touched:
            t = self.targets[name]
            lt = snapshot.of(name, names, self._elsewhere(t))
            self.placer.place(name, t.ifindex, t.rule, t.want, snapshot.refreshed(lt.threads), lt.ambiguous)
            self._placed[name] = t

    def status(self, ifname: str) -> dict | None:
        lp = self.placer.links.get(ifname)
        if lp is None:
            t = self.targets.get(ifname)
            return None if t is None else LinkPlacement(t.want).as_dict()
        return lp.as_dict()

    # -- the connector path ---------------------------------------------------

    def handle(self) -> None:
        try:
            pids = self.events.read()
        except procevents.Overflow:
            self._scan_at, self._full = self.clock(), True  # lost events: look at everything now
            return
        if not self.targets:
            return
        now = self.clock()
        for pid in pids:
            self._look(pid, 0, now)

    def _look(self, pid: int, attempt: int, now: float, forked: float | None = None) -> None:
        """Look at a new kthread (``attempt``: how many looks found it unnamed;
        ``forked``: when the first did) and place it at once when it is a
        target's; one not yet named is looked at again (NAME_RETRIES)."""
        t, unnamed = read_fork(pid)
        if t is None:
            if not unnamed:
                return  # gone, or named and not a NAPI thread
            forked = now if forked is None else forked
            if now - forked < NAME_POLL_FOR and len(self._pending) < MAX_PENDING:
                delay = NAME_RETRIES[attempt] if attempt < len(NAME_RETRIES) else NAME_POLL
                heapq.heappush(self._pending, (now + delay, pid, attempt + 1, forked))
            return
        dev, _, napi_id = t.name[len("napi/"):].rpartition("-")
        if not t.cut and napi_id.isdigit():
            owners = [self.targets[dev]] if dev in self.targets else []  # O(1) in a burst
        elif t.cut:  # the targets a cut name fits, through the index (O(1) too)
            owners = [self.targets[n] for n in self._known.fitting(t.name)]
        else:
            owners = []  # a whole name without "-<id>": no link's
        if len(owners) != 1:
            return  # not ours, or a cut name that fits several: the scan says so
        tg = owners[0]
        if self._elsewhere(tg) or (t.cut and len(self._names().fitting(t.name)) > 1):
            return  # another covered link's thread may be named so: the scan says so
        try:
            if apply(t, tg.want):
                self.placer.placed_early(tg.name, t.pid)
        except PlacementError:
            pass  # the scan below records and logs it once
        # Log once for the whole new thread set, after the burst settles.
        if self._scan_at is None:
            self._scan_at = now + SCAN_AFTER_EVENT

    def changed(self) -> None:
        """Link states changed: without the connector, scan soon (bounded rate)."""
        if self.events is None and self.targets and self._scan_at is None:
            self._scan_at = max(self.clock(), self._last_scan + SCAN_MIN_INTERVAL)

    def next_due(self) -> float | None:
        dues = [self._pending[0][0]] if self._pending else []
        if self._scan_at is not None:
            dues.append(self._scan_at)
        return min(dues) if dues else None

    def due(self) -> None:
        now = self.clock()
        ready = []
        while self._pending and self._pending[0][0] <= now:
            ready.append(heapq.heappop(self._pending))
        for _due, pid, attempt, forked in ready:
            self._look(pid, attempt, now, forked)
        if self._scan_at is not None and self._scan_at <= now:
            self._sync_news()


def targets(policy, links) -> list[Target]:
    """The links (reconciler LinkStates: ifindex, name, rule) whose rule places
    threads, with what it wants. ``policy``: wgnapid.config.Policy."""
    rules = {r.name: placement_of(r.cpus, r.sched) for r in policy.rules if r.cpus or r.sched}
    return [Target(st.ifindex, st.name, st.rule, rules[st.rule], st.netns)
            for st in links if st.rule in rules and st.wanted == "on"]


def wanted(policy) -> bool:
    """Whether any rule places threads."""
    return any(r.cpus or r.sched for r in policy.rules)
