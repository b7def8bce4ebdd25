"""The network namespaces one daemon covers, each with its reconciler and event source.

With ``daemon.namespaces = "self"`` that is the daemon's own namespace alone.
With ``"all"``, discovery (wgnapid.discovery) says which namespaces exist, and
this module enters the new ones (NetNamespace.enter_many: sockets and a sysfs
instance made from a setns thread), follows name changes (a namespace that got
a /run/netns name, or whose lowest PID exited, is decided on again under its
new name), and releases everything of a namespace that went away, quietly:
one journal entry for the namespace, none per link and no error.

A namespace whose name no rule's ``netns`` globs match is not entered at all
(policy.covers_netns): nothing of it could be acted on.

Writes of every namespace share one pool of writer threads (Reconciler's
``writers``): a pool per namespace would be 4,000 threads for 1,000
namespaces.
"""

from __future__ import annotations

from collections import Counter

import selectors
import time
from dataclasses import dataclass

from wgnapid import config, discovery
from wgnapid.log import Log
from wgnapid.netns import NetNamespace, NsId
from wgnapid.policy import covers_netns
from wgnapid.reconciler import Reconciler

# ip netns add creates /run/netns/NAME and then mounts the namespace on it;
# inotify sees only the first step, so an entry that is not a namespace yet is
# looked at again after these delays (seconds), then left to the resync.
UNREADY_RETRIES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass(slots=True, eq=False)  # hashed by identity
class Space:
    """One covered namespace: its NetNamespace, Reconciler and event source."""

    ns: NetNamespace
    rec: Reconciler
    source: object | None = None


class Spaces:
    """{NsId: Space}, kept in step with the host's namespaces.

    ``sel``: the daemon's selector; event sources are registered with
    ``data=space`` and discovery's fds with ``data=self``, so the loop can tell
    them apart without looking anything up. ``on_release``: called with each
    released namespace's NetNamespace before it is closed (the stall watch
    forgets its peers)."""

    def __init__(self, policy: config.Policy, log: Log, sel: selectors.BaseSelector,
                 make_reconciler, self_ns: NetNamespace, on_release=None):
        self.policy = policy
        self.log = log
        self.sel = sel
        self.make_reconciler = make_reconciler  # (NetNamespace) -> Reconciler
        self.on_release = on_release  # (NetNamespace) -> None, before it is closed
        self.by_id: dict[NsId, Space] = {}
        # What the loop touched since the last settle(): only those are looked
        # at for news and retries, so a loop turn costs O(touched), not
        # O(namespaces) (1,000 namespaces x 1 link: most turns touch one).
        self._generation = 0  # grows with every state change anywhere, enter and release
        self._seen: dict[Space, int] = {}  # rec.generation last added in
        self._touched: set[Space] = set()
        # Links whose rows changed, for whoever follows them one by one
        # (placement): taken from each reconciler at settle(); None: any may have.
        self.track_changes = False
        self._changed: set[tuple[Space, int]] | None = set()
        self._waiting: set[Space] = set()  # spaces with retries scheduled
        self._unready_at: float | None = None
        self.own = self._add(self_ns)
        self.all = policy.daemon.namespaces == "all"
        self.hints: list = []
        self._unready_step = 0
        if self.all:
            self.hints = [discovery.DirWatch(), discovery.NsidHint()]
            for h in self.hints:
                sel.register(h, selectors.EVENT_READ, self)

    def _add(self, ns: NetNamespace, source=None) -> Space:
        space = Space(ns, self.make_reconciler(ns), source)
        self.by_id[ns.id] = space
        self._seen[space] = 0
        self._generation += 1
        self._changed = None
        self._touched.add(space)
        return space

    def __iter__(self):
        return iter(list(self.by_id.values()))

    def __len__(self) -> int:
        return len(self.by_id)

    # -- sources ------------------------------------------------------------

    def open_source(self, space: Space) -> None:
        """(Re)open the space's event source, inside its namespace."""
        if space.source is not None:
            self.sel.unregister(space.source)
            space.source.close()
            space.source = None
        space.source = space.ns.open_source(self.policy.daemon.source)
        self.sel.register(space.source, selectors.EVENT_READ, space)

    def open_sources(self) -> None:
        for space in self:
            if space.source is None:
                self.open_source(space)

    # -- discovery ------------------------------------------------------------

    def hinted(self) -> bool:
        """A hint fd is readable: take what it says; True when a scan is needed
        (and then an entry not mounted yet gets its quick looks again, even if
        a stale file used them up)."""
        needed = any([h.drain() for h in self.hints])
        if needed:
            self._unready_step = 0
        return needed

    def rescan(self) -> list[Space]:
        """Follow the host: enter new namespaces, rename, release vanished ones.
        Returns the spaces entered (their links are not listed yet) and those
        whose name changed (to be decided on again)."""
        if not self.all:
            return []
        scan = discovery.scan()
        self._schedule_unready(scan.unready)
        found = {NsId(*key): f for key, f in scan.found.items()}
        fresh: list[Space] = []
        for nsid in [i for i in self.by_id if i not in found]:
            self.release(self.by_id[nsid], "gone")
        new = []
        for nsid, f in found.items():
            space = self.by_id.get(nsid)
            if space is None:
                if covers_netns(self.policy, f.name):
                    new.append((nsid, f))
                continue
            if space is self.own or space.ns.name == f.name:
                continue
            old = space.ns.name
            space.ns.name = f.name
            if not covers_netns(self.policy, f.name):
                self.release(space, f"renamed {f.name}, which no rule covers")
                continue
            self.log.info("netns-renamed", f"network namespace {old} (netns {nsid.ino}) is now {f.name}",
                          wgnapid_netns=nsid.ino, wgnapid_netns_name=f.name)
            space.rec.renamed()
            fresh.append(space)
        if new:
            fresh.extend(self._enter(new))
        return fresh

    def _enter(self, new: list[tuple[NsId, discovery.Found]]) -> list[Space]:
        entered = NetNamespace.enter_many([(f.path, nsid, f.name) for nsid, f in new],
                                          self.policy.daemon.source)
        spaces = []
        for (nsid, f), got in zip(new, entered):
            if isinstance(got, BaseException):
                # Gone between the scan and the open (a process exited): not news.
                if not isinstance(got, FileNotFoundError) and not getattr(got, "vanished", False):
                    self.log.warning("netns-failed", f"cannot enter network namespace {f.name} "
                                     f"(netns {nsid.ino}): {got}",
                                     wgnapid_netns=nsid.ino, wgnapid_netns_name=f.name)
                continue
            ns, source = got
            space = self._add(ns, source)
            self.sel.register(source, selectors.EVENT_READ, space)
            self.log.info("netns-entered", f"network namespace {f.name} (netns {nsid.ino}) entered",
                          wgnapid_netns=nsid.ino, wgnapid_netns_name=f.name)
            spaces.append(space)
        return spaces

    def release(self, space: Space, why: str) -> None:
        """Drop everything of one namespace: one journal entry, nothing per link."""
        if space is self.own:
            return
        del self.by_id[space.ns.id]
        if space.source is not None:
            self.sel.unregister(space.source)
            space.source.close()
        covered = len(space.rec.links)
        self._generation += 1
        self._changed = None
        self._seen.pop(space, None)
        self._touched.discard(space)
        self._waiting.discard(space)
        space.rec.forget()
        try:
            if self.on_release is not None:
                self.on_release(space.ns)
        finally:
            space.ns.close()  # its fds, whatever the hook did
        self.log.info("netns-released",
                      f"network namespace {space.ns.name} (netns {space.ns.id.ino}) {why}: released "
                      f"({covered} links were covered)",
                      wgnapid_netns=space.ns.id.ino, wgnapid_netns_name=space.ns.name)

    def _schedule_unready(self, unready: bool) -> None:
        if not unready:
            self._unready_at, self._unready_step = None, 0
            return
        if self._unready_step < len(UNREADY_RETRIES):
            self._unready_at = time.monotonic() + UNREADY_RETRIES[self._unready_step]
            self._unready_step += 1
        else:
            self._unready_at = None  # a stale file: the resync looks again

    def rescan_due(self) -> float | None:
        return self._unready_at

    def set_policy(self, policy: config.Policy) -> None:
        self.policy = policy
        for space in self:
            space.rec.set_policy(policy)
            if space is not self.own and not covers_netns(policy, space.ns.name):
                self.release(space, "no longer covered by any rule")

    # -- the whole set --------------------------------------------------------

    def touch(self, space: Space) -> None:
        """The loop worked on this space (events, completions, retries, a re-list)."""
        self._touched.add(space)

    def touch_all(self) -> None:
        self._touched.update(self.by_id.values())

    def settle(self) -> None:
        """Take in what the touched spaces changed: generation, waiting set."""
        for space in self._touched:
            if space.ns.id not in self.by_id:
                continue
            gen = space.rec.generation
            self._generation += gen - self._seen.get(space, 0)
            self._seen[space] = gen
            changed = space.rec.take_changed()  # taken always, kept only when followed
            if self.track_changes and self._changed is not None:
                if changed is None:
                    self._changed = None
                else:
                    self._changed.update((space, ifindex) for ifindex in changed)
            if space.rec.next_retry() is not None:
                self._waiting.add(space)
            else:
                self._waiting.discard(space)
        self._touched.clear()

    def take_changed(self) -> dict[tuple[int, int], object] | None:
        """The links whose rows changed since the last call (track_changes on),
        as of the last settle(): {(netns inode, ifindex): LinkState, or None
        when gone}; None when any may have (a namespace entered or released, a
        reconciler cleared)."""
        changed, self._changed = self._changed, set()
        if changed is None:
            return None
        return {(space.ns.id.ino, ifindex): space.rec.links.get(ifindex) for space, ifindex in changed}

    @property
    def generation(self) -> int:
        """Grows on every state change in any namespace, and on enter/release
        (as of the last settle())."""
        return self._generation

    def counts(self):
        total: Counter = Counter()
        for s in self.by_id.values():
            total.update(s.rec.stats.counts)
        return total

    def summary(self) -> dict[str, int]:
        return {state: n for state, n in self.counts().items() if n > 0}

    def stat(self, name: str) -> int:
        return sum(getattr(s.rec.stats, name) for s in self.by_id.values())

    def writes_by_kind(self) -> dict[str, int]:
        """Writes per link kind, over every covered namespace."""
        total: Counter = Counter()
        for s in self.by_id.values():
            total.update(s.rec.stats.writes_by_kind)
        return dict(total)

    @property
    def native(self) -> bool:
        return any(s.rec.native for s in self.by_id.values())

    def waiting(self) -> list[Space]:
        """Spaces that have retries scheduled (as of the last settle())."""
        return list(self._waiting)

    def close(self) -> None:
        for space in self:
            if space.source is not None:
                self.sel.unregister(space.source)
                space.source.close()
                space.source = None
        for h in self.hints:
            self.sel.unregister(h)
            h.close()
        self.hints = []


def enter_covered(policy: config.Policy) -> list[NetNamespace]:
    """Every namespace but the caller's own that some rule covers, entered once
    (for `apply` and `status` with namespaces = "all"). Namespaces that vanish
    meanwhile are skipped. Raises RuntimeError (one line) when one cannot be
    entered for another reason."""
    raise_nofile()
    scan = discovery.scan()
    targets = [(f.path, NsId(*key), f.name) for key, f in scan.found.items()
               if f.name != "self" and covers_netns(policy, f.name)]
    entered, problem = [], None
    for (path, nsid, name), got in zip(targets, NetNamespace.enter_many(targets, source=None)):
        if isinstance(got, BaseException):
            if not isinstance(got, FileNotFoundError) and not getattr(got, "vanished", False):
                problem = problem or f"cannot enter network namespace {name} (netns {nsid.ino}): {got}"
            continue
        entered.append(got[0])
    if problem:
        for ns in entered:
            ns.close()
        raise RuntimeError(problem)
    return entered


def raise_nofile() -> None:
    """Many namespaces need many fds (about four each), and so do waiting links
    (one kept file each, wgnapid.retries): lift the soft limit to the hard one.
    (Needs no privilege; under systemd's SystemCallFilter it is prlimit64, in
    @default.) A refusal leaves the limit as it was."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass

