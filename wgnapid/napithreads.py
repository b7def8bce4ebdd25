"""Finding the NAPI kernel threads of each link: `napi/<dev>-<id>`.

Kernel behaviour relied on (KERNEL-FACTS.md, "NAPI kernel threads" and
"Writing /sys/class/net/DEV/threaded"):

- writing 1 to `threaded` makes the kernel start one kthread per NAPI
  instance, named `napi/<dev>-<napi id>` (net/core/dev.c,
  napi_kthread_create); they are children of kthreadd (PPid 2);
- every WireGuard peer's NAPI id is 0, so all of a WireGuard link's threads
  are named `napi/<dev>-0`;
- `/proc/PID/stat` cuts the name to 15 characters; `/proc/PID/comm` gives a
  kthread's whole name from 5.17 on (fs/proc/array.c, proc_task_name with
  kthread full_name); before, it is cut too;
- names carry no network namespace: same-named links in two namespaces give
  threads no reader can tell apart.

One scan of /proc serves every link (status and the daemon look at many at
once). Nothing here writes; placement.py changes what it finds.
"""

from __future__ import annotations

import os
import weakref
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

KTHREADD = 2
COMM_LEN = 15  # TASK_COMM_LEN - 1
PREFIX = "napi/"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WHOLE_NAMES_SINCE = (5, 17)

# /proc/PID/stat field 41 (policy): include/uapi/linux/sched.h.
POLICY_NAMES = {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline"}


def format_cpus(cpus) -> str:
    """A CPU set as the kernel's list format ("0-3,8"); "" when empty."""
    return _format_cpus(cpus if isinstance(cpus, frozenset) else frozenset(cpus))


@lru_cache(maxsize=1024)
def _format_cpus(cpus: frozenset[int]) -> str:
    # Cached: the status document shows the same few sets for thousands of links.
    out, run = [], []
    for cpu in sorted(cpus):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [cpu]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


@dataclass(frozen=True, slots=True)
class NapiThread:
    """One `napi/` kthread as /proc shows it.

    ``cpu``: the CPU it last ran on (stat field 39). ``cpu_seconds``: utime +
    stime (fields 14+15) in seconds. ``policy``: "other", "fifo", "rr", ...
    (field 41); ``priority``: real-time priority 0-99 (field 40); ``nice``:
    -20..19 (field 19). ``cpus``: the allowed CPUs (sched_getaffinity), None
    when the thread went away meanwhile. ``cut``: the name may be cut to 15
    characters (read from stat, or a kernel older than 5.17)."""

    pid: int
    name: str
    cpu: int
    cpu_seconds: float
    policy: str
    priority: int
    nice: int
    cpus: frozenset[int] | None
    cut: bool = False

    def as_dict(self) -> dict:
        return {
            "pid": self.pid,
            "name": self.name,
            "cpu": self.cpu,
            "cpu_seconds": round(self.cpu_seconds, 2),
            "policy": self.policy,
            "priority": self.priority,
            "nice": self.nice,
            "cpus": None if self.cpus is None else format_cpus(self.cpus),
        }


def _whole_names_kernel() -> bool:
    from wgnapid.kernel import parse_release

    version = parse_release(os.uname().release)
    return version is not None and version[:2] >= WHOLE_NAMES_SINCE


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def unnamed_fork(stat: bytes) -> bool:
    """Whether ``stat`` (a /proc/PID/stat) is of a kthread forked but not yet
    named: a child of kthreadd that still carries kthreadd's comm.

    Before Linux 6.4, kthreadd forks the thread, the fork event (proc
    connector) goes out, and only after the child ran and signalled its
    creator does the creator name it (kernel/kthread.c,
    __kthread_create_on_node: set_task_comm after wait_for_completion). No
    event tells when the name is set, so the name has to be looked at again.
    Such a child either gets its name or exits (a killed creator) soon after.
    From 6.4 on, copy_process names it before the fork event (commits
    cf587db2ee02 and 73e0c116594d), and this is never true of a new kthread."""
    lpar, rpar = stat.find(b"("), stat.rfind(b")")
    if stat[lpar + 1 : rpar] != b"kthreadd":
        return False
    fields = stat[rpar + 2 :].split(maxsplit=2)  # state, ppid, the rest
    return len(fields) >= 2 and fields[1] == b"%d" % KTHREADD


def read_fork(pid: int, *, whole_names: bool | None = None) -> tuple[NapiThread | None, bool]:
    """A new task looked at once: (its `napi/` thread or None, whether it is a
    kthread not yet named, see unnamed_fork). One read of /proc/PID/stat
    answers both, so a name set between two reads cannot hide the thread.
    Raises nothing: the task can exit at any time."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None, False
    t = read_thread(pid, whole_names=whole_names, stat=stat)
    return t, t is None and unnamed_fork(stat)


def read_thread(pid: int, *, whole_names: bool | None = None,
                stat: bytes | None = None) -> NapiThread | None:
    """The `napi/` kthread with this PID, or None when it is not one (or is gone).

    Raises nothing: a task can exit between any two reads."""
    if stat is None:
        stat = _read(f"/proc/{pid}/stat")
        if stat is None:
            return None
    # "pid (comm) state ppid ...": comm may hold spaces or parentheses.
    lpar, rpar = stat.find(b"("), stat.rfind(b")")
    # surrogateescape: link names may hold any byte but "/", ":", NUL and
    # whitespace (KERNEL-FACTS.md, "Link names"); decoded as link names are.
    short = stat[lpar + 1 : rpar].decode(errors="surrogateescape")
    if not short.startswith(PREFIX):
        return None
    fields = stat[rpar + 2 :].split()  # fields[0] is field 3 (state)
    if len(fields) < 39 or fields[1] != str(KTHREADD).encode():
        return None
    comm = _read(f"/proc/{pid}/comm")
    name = comm.decode(errors="surrogateescape").rstrip("\n") if comm else short
    if not name.startswith(short):
        name = short  # renamed between the reads: trust the older, cut one
    if whole_names is None:
        whole_names = _whole_names_kernel()
    cut = len(name.encode(errors="surrogateescape")) == COMM_LEN and not (whole_names and comm)
    try:
        cpus = frozenset(os.sched_getaffinity(pid))
    except OSError:
        cpus = None
    return NapiThread(
        pid=pid,
        name=name,
        cpu=int(fields[36]),
        cpu_seconds=(int(fields[11]) + int(fields[12])) / CLK_TCK,
        policy=POLICY_NAMES.get(int(fields[38]), str(int(fields[38]))),
        priority=int(fields[37]),
        nice=int(fields[16]),
        cpus=cpus,
        cut=cut,
    )


def thread_matches(thread_name: str, cut: bool, ifname: str) -> bool:
    """Whether a thread of this name can be one of ``ifname``'s.

    Whole names: exactly `napi/<ifname>-<digits>`. Cut names (15 characters):
    the first 15 characters of such a name, so "napi/wg-long-tu" is
    wg-long-tunnel's and not wg-long's (NAPI ids are numbers)."""
    prefix = f"{PREFIX}{ifname}-"
    if thread_name.startswith(prefix) and thread_name[len(prefix):].isdigit():
        return True
    if not cut:
        return False
    if len(prefix) >= COMM_LEN:
        return thread_name == prefix[:COMM_LEN]
    rest = thread_name[len(prefix):]
    return thread_name.startswith(prefix) and rest.isdigit()


@dataclass(frozen=True, slots=True)
class LinkThreads:
    """A link's threads; ``ambiguous`` says why some may be another link's ("" when not)."""

    threads: tuple[NapiThread, ...]
    ambiguous: str = ""

    def as_list(self) -> list[dict]:
        return [t.as_dict() for t in self.threads]


def kthreadd_visible() -> bool:
    """Whether kernel threads are visible in this PID namespace: PID 2 is
    kthreadd, with parent 0 (only in the initial PID namespace)."""
    try:
        with open("/proc/2/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2 :].split()
    return stat[stat.find(b"(") + 1 : stat.rfind(b")")] == b"kthreadd" and fields[1:2] == [b"0"]


def owner(thread_name: str) -> str | None:
    """The one link name whose whole thread names this name fits
    (`napi/<ifname>-<digits>`: the digits after the last "-"), or None."""
    if not thread_name.startswith(PREFIX):
        return None
    head, sep, tail = thread_name[len(PREFIX):].rpartition("-")
    return head if sep and tail.isdigit() else None


class KnownNames:
    """The link names a caller knows of, indexed for NapiThreads.of(): which of
    them a cut thread name fits. Build it once for many lookups, or keep one
    and add() and discard() names as links come and go."""

    def __init__(self, names=()) -> None:
        self.names: set[str] = set(names)
        # Names too long for any digit to survive the cut, by their cut prefix;
        # built when first needed.
        self._by_cut: dict[str, set[str]] | None = None

    @staticmethod
    def _cut_key(name: str) -> str | None:
        prefix = f"{PREFIX}{name}-"
        return prefix[:COMM_LEN] if len(prefix) >= COMM_LEN else None

    def add(self, name: str) -> None:
        self.names.add(name)
        if self._by_cut is not None and (key := self._cut_key(name)) is not None:
            self._by_cut.setdefault(key, set()).add(name)

    def discard(self, name: str) -> None:
        self.names.discard(name)
        if self._by_cut is not None and (key := self._cut_key(name)) is not None:
            group = self._by_cut.get(key)
            if group is not None:
                group.discard(name)
                if not group:
                    del self._by_cut[key]

    def fitting(self, cut_name: str) -> set[str]:
        """The known names a cut thread name can belong to (thread_matches with
        cut=True, without trying each name)."""
        if self._by_cut is None:
            self._by_cut = {}
            for name in self.names:
                if (key := self._cut_key(name)) is not None:
                    self._by_cut.setdefault(key, set()).add(name)
        out = set(self._by_cut.get(cut_name, ()))
        if (name := owner(cut_name)) is not None and name in self.names:
            out.add(name)
        return out


class NapiThreads:
    """A snapshot of every `napi/` kthread, looked up per link.

    Lookups are indexed by the link name each thread name fits, so looking up
    every link of a host costs O(threads + links), not their product (10,000
    links: ~100 s before; bench/README.md, "Links at scale").

    ``threads``: give a list instead of scanning /proc (tests, one pid).
    ``previous``: an earlier snapshot whose reads and index are reused for
    every PID still there: only new PIDs (and kthreads it saw before they
    were named) are read from /proc and only threads that came or went are
    indexed again (10,000 links: ~10 ms instead of a full scan's ~300 ms).
    Its records of those PIDs are as old as it is: refreshed() reads again
    the threads about to be acted on; a PID reused by a new task in between
    is seen at the next full scan."""

    def __init__(self, threads: list[NapiThread] | None = None, *, whole_names: bool | None = None,
                 previous: NapiThreads | None = None):
        # In a PID namespace of its own (a container, systemd's guest) no kernel
        # thread is visible: PID 2 is then not kthreadd (PPid 0), and counts
        # would say 0 where the truth is unknown.
        self.visible = threads is not None or kthreadd_visible()
        self._from_proc = threads is None
        if threads is None and whole_names is None:
            whole_names = _whole_names_kernel()
        self._whole_names = whole_names
        if previous is not None and previous._whole_names != whole_names:
            previous = None
        old = previous._read if previous is not None else {}
        # PIDs of kthreads not yet named (unnamed_fork): read again next time.
        self._unnamed: set[str] = set()
        if threads is None:
            with os.scandir("/proc") as entries:
                listed = {e.name for e in entries if e.name.isdigit()}
            kept = listed & old.keys()
            if previous is not None:
                kept -= previous._unnamed
            # Every PID looked at (as /proc names it): its thread, or None.
            self._read: dict[str, NapiThread | None] = {pid: old[pid] for pid in kept}
            for pid in listed - kept:
                t, unnamed = read_fork(int(pid), whole_names=whole_names)
                self._read[pid] = t
                if unnamed:
                    self._unnamed.add(pid)
            threads = [t for t in self._read.values() if t is not None]
        else:
            self._read = {str(t.pid): t for t in threads}
        self.threads = threads
        # What moved since ``previous``, and a weak reference to it: a strong
        # one would chain every snapshot ever taken.
        self._moved: list[NapiThread] | None = None
        self._previous = None
        # Thread names by name, by the link name they fit whole; cut names as
        # they are. From a previous snapshot: its index, changed by what moved.
        if previous is not None:
            self._moved = self.moved_since(previous)
            self._previous = weakref.ref(previous)
            self._by_name = previous._by_name.copy()
            self._by_owner = previous._by_owner.copy()
            self._cut = set(previous._cut)
            for t in self._moved:
                self._index(t, str(t.pid) in self._read)
        else:
            self._by_name: dict[str, list[NapiThread]] = {}
            self._by_owner: dict[str, list[str]] = {}
            self._cut: set[str] = set()
            for t in threads:
                self._index(t, True)

    def _index(self, t: NapiThread, present: bool) -> None:
        """Add (``present``) or remove one thread in the index; lists are
        replaced, never changed, as a previous snapshot may share them."""
        group = [x for x in self._by_name.get(t.name, ()) if x.pid != t.pid]
        if present:
            group.append(t)
        link = owner(t.name)
        if group:
            if t.name not in self._by_name and link is not None:
                self._by_owner[link] = self._by_owner.get(link, []) + [t.name]
            self._by_name[t.name] = group
            if group[0].cut:
                self._cut.add(t.name)
        elif t.name in self._by_name:
            del self._by_name[t.name]
            self._cut.discard(t.name)
            if link is not None:
                rest = [n for n in self._by_owner.get(link, ()) if n != t.name]
                if rest:
                    self._by_owner[link] = rest
                else:
                    self._by_owner.pop(link, None)

    def moved_since(self, earlier: NapiThreads) -> list[NapiThread]:
        """The threads that are new in this snapshot or gone from ``earlier``;
        a kthread ``earlier`` saw before it was named counts as new."""
        if self._moved is not None and self._previous is not None and self._previous() is earlier:
            return self._moved
        a, b = earlier._read, self._read
        return ([t for pid in b.keys() - a.keys() if (t := b[pid]) is not None]
                + [t for pid in earlier._unnamed if (t := b.get(pid)) is not None]  # named since
                + [t for pid in a.keys() - b.keys() if (t := a[pid]) is not None])

    def refreshed(self, threads) -> tuple[NapiThread, ...]:
        """``threads`` of this snapshot read again from /proc now (gone ones
        dropped); as they are when the snapshot was given its threads."""
        if not self._from_proc:
            return tuple(threads)
        out = []
        for t in threads:
            now = read_thread(t.pid, whole_names=self._whole_names)
            if now is not None and now.name == t.name:  # not a new task under a reused PID
                out.append(now)
        return tuple(out)

    def known(self, names) -> KnownNames:
        """``names`` (link names) indexed for of(): build once, pass to every lookup."""
        return KnownNames(names)

    def of(self, ifname: str, known: KnownNames | tuple[str, ...] | list[str] | set[str] = (),
           elsewhere: int = 0) -> LinkThreads:
        """``ifname``'s threads. ``known``: the other link names the caller
        knows of (its namespaces; a KnownNames from known() when looking up
        many links); a cut thread name that fits one of them too is reported,
        not guessed. ``elsewhere``: how many other watched network namespaces
        have a link of the same name (names carry no namespace).

        The same answer as trying thread_matches() on every thread name."""
        matched = list(self._by_owner.get(ifname, ()))
        prefix = f"{PREFIX}{ifname}-"
        if len(prefix) >= COMM_LEN and prefix[:COMM_LEN] in self._cut:
            matched.append(prefix[:COMM_LEN])
        found: list[NapiThread] = []
        shared: set[str] = set()
        for name in matched:
            threads = self._by_name[name]
            found.extend(threads)
            if threads[0].cut and known:
                if not isinstance(known, KnownNames):
                    known = KnownNames(known)
                shared.update(o for o in known.fitting(name) if o != ifname)
        reasons = []
        if shared:
            reasons.append(
                f"thread names cut to {COMM_LEN} characters also fit {', '.join(sorted(shared))}"
            )
        if elsewhere and found:
            reasons.append(
                f"a link named {ifname} exists in {elsewhere} other network namespace(s) and "
                "thread names carry no namespace"
            )
        return LinkThreads(tuple(sorted(found, key=lambda t: t.pid)), "; ".join(reasons))

    def count(self, ifname: str) -> int:
        return len(self.of(ifname).threads)

    def per_link(self, links) -> dict[tuple[int, int], tuple[int, float]]:
        """{(netns, ifindex): (thread count, their CPU seconds)} for ``links``,
        (netns inode, ifindex, link name) triples: every covered link, in every
        namespace.
        Left out, as no figure is better than another link's: a link whose
        threads cannot be told apart from another's (a link of the same name
        in another of the namespaces; a cut thread name that fits another
        link's), and every link when kernel threads are not visible here (a
        PID namespace of its own: the count would say 0)."""
        links = list(links)
        if not self.visible:
            return {}
        known = self.known({name for *_, name in links})
        namesakes = Counter(name for *_, name in links)
        out = {}
        for netns, ifindex, name in links:
            lt = self.of(name, known, elsewhere=namesakes[name] - 1)
            if not lt.ambiguous:
                out[(netns, ifindex)] = (len(lt.threads), sum(t.cpu_seconds for t in lt.threads))
        return out
