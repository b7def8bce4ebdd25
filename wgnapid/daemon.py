"""The event loop of `wgnapid run`: sources, timers, signals, sd_notify, status file."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import syslog
import time

from wgnapid import __version__, accel, config, kernel, placement
from wgnapid.links import LinkEvent, Overflow
from wgnapid.log import Log
from wgnapid.netns import NetNamespace
from wgnapid.policywatch import PolicyWatch
from wgnapid.reconciler import Reconciler, shared_writers, summary_text
from wgnapid.retries import KeptFds
from wgnapid.spaces import Space, Spaces, raise_nofile
from wgnapid.status import LinkRows, link_row, status_path
from wgnapid.stallwatch import StallWatch
from wgnapid.summary import pass_summary

STATUS_MIN_INTERVAL = 1.0  # seconds between status-file writes while things change


NOTIFY_TIMEOUT = 1.0  # seconds a READY=1/STOPPING=1/... may wait for a full receiver queue


def notify(message: str, *, block: bool = True) -> bool:
    """sd_notify(3): send to $NOTIFY_SOCKET if there is one. A datagram socket
    queues net.unix.max_dgram_qlen (10 by default) messages; when the receiver
    does not read, a send waits at most NOTIFY_TIMEOUT (``block=False``, for
    STATUS= updates: not at all) and the message is dropped (False): the loop
    never stops for a receiver that does not read."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(NOTIFY_TIMEOUT if block else 0)
            s.connect(path)
            s.send(message.encode())
        return True
    except OSError:
        return False


def batch_order(events: list[LinkEvent]) -> list[tuple[int, bool, LinkEvent]]:
    """What a batch of events means, per ifindex in the order first seen:
    (ifindex, removed_first, last event).

    Events are hints (the kernel is read anyway), so of the events after a
    link's last removal only the last counts and the link is evaluated once.
    But a removal ends a link: a delete followed by a create (the same ifindex
    reused, or a link moved out and back) is two links, so ``removed_first``
    says "forget what was known of this ifindex before evaluating the last
    event", and the old link is logged gone and the new one seen as new.
    """
    seen: dict[int, tuple[bool, LinkEvent]] = {}
    for ev in events:
        prev = seen.get(ev.ifindex)
        seen[ev.ifindex] = ((prev is not None and prev[0]) or ev.removed, ev)
    return [(ifindex, removed, ev) for ifindex, (removed, ev) in seen.items()]


def _watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6 / 2
    except ValueError:
        return None


class Daemon:
    """`wgnapid run`: one Reconciler and event source per covered network
    namespace (wgnapid.spaces; the daemon's own alone with namespaces = "self"),
    one loop, one pool of writer threads."""

    def __init__(self, policy: config.Policy, config_path: str | None, log: Log, *,
                 watch_policy: bool = False):
        self.policy = policy
        self.config_path = config_path
        self.log = log
        self.verdict = kernel.running_verdict()
        self.ns = NetNamespace.current()
        self.netns = self.ns.id.ino
        self.writers = shared_writers()
        # The stall watch reads the threaded WireGuard links of every covered
        # namespace, each inside its own (NetNamespace.wireguard).
        self.stall = StallWatch(log, policy.daemon.stall_window)
        self.sel = selectors.DefaultSelector()
        # Many namespaces need about four fds each, and every waiting link keeps
        # its `threaded` file open (wgnapid.retries): lift the soft limit to the
        # hard one first, then cap the kept files below it.
        raise_nofile()
        self.kept = KeptFds()
        self.spaces = Spaces(policy, log, self.sel, self._reconciler, self.ns,
                             on_release=lambda ns: self.stall.release(ns.id.ino))
        self.rec = self.spaces.own.rec  # the daemon's own namespace
        self.started = time.time()
        self._stop = ""  # the name of the signal that stops the loop
        self._reload = False
        self._published = -1  # generation last published
        self._status_written = 0.0
        self._status_error = False
        self._status_text = ""
        self._next_resync = 0.0
        self._watchdog = _watchdog_interval()
        self._next_watchdog = 0.0
        # --watch-policy: reload when the policy files change, checked at each resync.
        self.watch = PolicyWatch(config_path) if watch_policy else None
        # Reloads done (applied or refused) and the last one's result: `wgnapid
        # reload` waits for the generation to move on in the status document.
        self._reloads = 0
        self._reload_ok: bool | None = None
        self._reload_error = ""
        self.steer: placement.Steering | None = None  # when a rule places NAPI threads
        self._steer_gen = -1
        self._placement_gen = 0  # Placer.generation last published
        self.metrics = None  # metrics.MetricsFile when daemon.metrics_file is set
        self._rows = LinkRows()  # the status file's link rows, kept as text

    def _links(self) -> list:
        """Every covered namespace's link states."""
        return [st for space in self.spaces for st in space.rec.links.values()]

    def _reconciler(self, ns: NetNamespace) -> Reconciler:
        rec = Reconciler(self.policy, self.log, ns, verdict=self.verdict, writers=self.writers,
                         kept=self.kept)
        # WGNAPID_WRITE_INLINE=0: every write goes to the writer threads (the
        # path of a write in flight while the loop reads events; the identity
        # tests hold such a write). Diagnostics only, not a policy key.
        rec.inline = os.environ.get("WGNAPID_WRITE_INLINE", "1") != "0"
        return rec

    # -- set-up -------------------------------------------------------------

    def _signals(self) -> None:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup = rfd
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        self.sel.register(rfd, selectors.EVENT_READ, "wakeup")

        def stop(signum, frame):
            self._stop = signal.Signals(signum).name

        def reload(signum, frame):
            self._reload = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    # -- reconciling ----------------------------------------------------------

    def resync(self, why: str) -> None:
        """Full re-list of every covered namespace (and, with namespaces = "all",
        of the namespaces themselves): the answer to start-up, reload and the timer."""
        # (The own namespace's sysfs view is proven in run(); entered
        # namespaces get a sysfs instance of their own.)
        self.spaces.rescan()
        # Start-up and reload finish their writes before READY=1; the timer does
        # not hold up the events that come meanwhile. The writes of all
        # namespaces run together; then each is waited for.
        wait = why in ("start-up", "reload")
        self.spaces.touch_all()
        complete = all([self._resync_space(space, why, wait=False) for space in self.spaces])
        if wait:
            for space in self.spaces:
                space.rec.drain()
        self.rec.stats.resyncs += 1
        interval = self.policy.daemon.resync_interval
        # An inconsistent dump raced a burst: look again soon, not in 30 s.
        self._next_resync = time.monotonic() + (interval if complete else min(interval, 1.0))
        self._steer_and_measure()

    def _steer_and_measure(self) -> None:
        """After a resync: (re)start placement and metrics as the policy says,
        place every target link's threads, refresh the metrics."""
        if placement.wanted(self.policy) and self.steer is None:
            self.steer = placement.Steering(self.log, self.verdict.version)
            self.spaces.track_changes = True  # from here on: targets follow changed links
            if self.steer.events is not None:
                self.sel.register(self.steer, selectors.EVENT_READ, "steer")
            else:
                self.log.warning("procevents", f"new NAPI threads are placed at the next resync or "
                                 f"state change, not at once: {self.steer.unavailable}")
        if self.steer is not None:
            links = self._links()
            self.steer.set_links(links)
            self.steer.sync(placement.targets(self.policy, links))
        path = self.policy.daemon.metrics_file
        if self.metrics is None or (path and self.metrics.path != path):
            from wgnapid.metrics import MetricsFile

            self.metrics = MetricsFile(path, self.log) if path else None
        elif not path:
            self.metrics = None
        if self.metrics is not None:
            self.metrics.dirty = True  # CPU seconds move on; refreshed each resync

    def _resync_space(self, space: Space, why: str, *, wait: bool) -> bool:
        """Re-list one namespace's links; False when the dump raced changes."""
        try:
            links, complete = space.ns.dump()
        except OSError as exc:
            self.log.event("resync", syslog.LOG_DEBUG,
                           f"link dump of netns {space.ns.name} failed ({exc}); looking again later")
            return False
        space.rec.sync(links, complete, wait=wait, recheck_waiting=why not in ("periodic", "overflow"))
        if not complete:
            self.log.event(
                "resync", syslog.LOG_DEBUG,
                f"link list of netns {space.ns.name} changed during the {why} re-list; re-listing again in 1 s",
            )
        return complete

    def _handle_events(self, space: Space) -> None:
        rec, ns = space.rec, space.ns
        self.spaces.touch(space)
        try:
            events = space.source.read()
        except Overflow:
            rec.stats.overflows += 1
            self.log.warning(
                "source-overflow",
                f"{space.source.name} event queue overflowed; events were lost, re-listing all links"
                + ("" if space is self.spaces.own else f" of netns {ns.name}"),
            )
            self.spaces.open_source(space)
            self._resync_space(space, "overflow", wait=False)
            rec.stats.resyncs += 1
            return
        # A link is evaluated once per batch, so its write is made once; a
        # removal in between ends the link that was (batch_order).
        batch = []
        for ifindex, removed, ev in batch_order(events):
            if removed:
                rec.remove(ifindex)
            if ev.removed:
                continue
            link = ev.link
            if link is None:
                link = ns.get(ifindex)  # udev without DEVTYPE: ask rtnetlink
                if link is None:
                    rec.remove(ifindex)
                    continue
            batch.append((link, ifindex not in rec.links))
        rec.observe_many(batch, wait=False)

    def _rescan(self) -> None:
        """Discovery had news: enter, rename, release; new and renamed namespaces
        are listed at once."""
        for space in self.spaces.rescan():
            self.spaces.touch(space)
            self._resync_space(space, "new namespace", wait=False)

    def _reload_policy(self) -> None:
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        if self.watch:
            self.watch.changed()  # what is read now is what the watch compares with next
        self._reloads += 1
        try:
            policy = config.load(self.config_path)
        except config.ConfigError as exc:
            for line in exc.lines:
                self.log.error("reload-failed", f"reload failed, keeping the running policy: {line}")
            self._reload_ok, self._reload_error = False, "; ".join(exc.lines)
            self._publish(force=True)
            notify("READY=1")
            return
        for line in policy.warnings:
            self.log.warning("config-warning", line)
        if policy.daemon.namespaces != self.policy.daemon.namespaces:
            self.log.warning("reload-failed", "daemon.namespaces changed: it takes effect at the next "
                             f"restart; keeping namespaces = \"{self.policy.daemon.namespaces}\"")
            policy = policy.model_copy(update={"daemon": policy.daemon.model_copy(
                update={"namespaces": self.policy.daemon.namespaces})})
        old_source = self.policy.daemon.source
        self.policy = policy
        self.spaces.set_policy(policy)
        self.log.set_level(policy.daemon.log_level)
        self.stall.set_window(policy.daemon.stall_window, time.monotonic())
        if policy.daemon.source != old_source:
            for space in self.spaces:
                self.spaces.open_source(space)
        self.log.info("reloaded", f"policy reloaded from {', '.join(policy.files)}")
        self._published = -1  # the source and policy files are news even if no link changes
        self._guard_warning()
        self.resync("reload")
        self.spaces.settle()
        self._say_summary("reload")
        self._reload_ok, self._reload_error = True, ""
        self._publish(force=True)
        notify("READY=1")

    def _guard_warning(self) -> None:
        warning = kernel.guard_warning(self.policy.daemon.kernel_guard, self.verdict)
        if warning:
            self.log.warning("kernel-guard", warning, wgnapid_kernel=self.verdict.release)

    def _say_summary(self, when: str) -> None:
        kind, priority, message = pass_summary(self._links(), self.policy, when)
        self.log.event(kind, priority, message)

    # -- status -------------------------------------------------------------

    def status_document(self, *, links: bool = True) -> dict:
        """What `wgnapid status` shows of this daemon (its link rows: LinkState.as_dict,
        with placement). ``links=False``: all but the "links" list (status_json)."""
        spaces = list(self.spaces)
        doc = {
            "version": __version__,
            "pid": os.getpid(),
            "since": self.started,
            # The daemon's own namespace, and every namespace whose links this
            # document lists (each link row names its netns too).
            "netns": self.netns,
            "covers": [s.ns.id.ino for s in spaces],
            "namespaces": [{"netns": s.ns.id.ino, "name": s.ns.name, "links": len(s.rec.links)}
                           for s in spaces],
            "source": self.policy.daemon.source,
            "kernel": {"release": self.verdict.release, "guard": self.policy.daemon.kernel_guard,
                       "verdict": self.verdict.verdict},
            "policy_files": list(self.policy.files),
            "kernel_native": self.spaces.native,
            "stats": {
                **{k: self.spaces.stat(k)
                   for k in ("evaluations", "writes", "failures", "resyncs", "overflows")},
                "writes_by_kind": self.spaces.writes_by_kind(),
            },
            "reload": {"generation": self._reloads, "ok": self._reload_ok, "error": self._reload_error},
            "summary": self.spaces.summary(),
            "stall_window": self.stall.window,
            "stall_reads": self.stall.reads,
            "stalled_peers": self.stall.as_list(),
        }
        if links:
            doc["links"] = [self._link_doc(st) for st in self._links()]
        return doc

    def status_json(self) -> str:
        """status_document() as JSON text, the link rows encoded again only where
        they changed (wgnapid.status.LinkRows: the file is written up to once a
        second, and most of thousands of rows stay as they were)."""
        rows = self._rows.encode(self._links(), self.steer.status if self.steer is not None else None)
        return json.dumps(self.status_document(links=False))[:-1] + ', "links": ' + rows + "}"

    def _link_doc(self, st) -> dict:
        return link_row(st, self.steer.status(st.name) if self.steer is not None else None)

    def _write_metrics(self) -> None:
        from wgnapid.napithreads import NapiThreads

        started = time.thread_time()
        threads = NapiThreads().per_link((st.netns, st.ifindex, st.name) for st in self._links())
        doc = self.status_document()
        self.metrics.write(doc, threads, collect_cpu=time.thread_time() - started)

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self._status_due() or now - self._status_written < STATUS_MIN_INTERVAL):
            return
        self._published = self.spaces.generation
        self._status_written = now
        text = summary_text(self.spaces.counts())
        if text != self._status_text and notify(f"STATUS={text}", block=False):
            self._status_text = text  # (a dropped one is sent again at the next publish)
        path = status_path(self.netns)
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            # The text, then one write: json.dump to a file is pure Python and
            # cost ~60 ms for 3,000 links.
            doc = self.status_json()
            with open(tmp, "w") as f:
                f.write(doc)
            os.replace(tmp, path)
            self._status_error = False
            if self.metrics is not None:
                self.metrics.dirty = True
        except OSError as exc:
            if not self._status_error:  # once, not every second
                self.log.error("error", f"cannot write {path}: {exc.strerror}")
            self._status_error = True

    def _status_due(self) -> bool:
        return self.spaces.generation != self._published

    def _remove_status(self) -> None:
        try:
            os.unlink(status_path(self.netns))
        except OSError:
            pass

    # -- the loop -------------------------------------------------------------

    def _steer_and_measure_due(self) -> None:
        if self.steer is not None:
            if self.spaces.generation != self._steer_gen:
                self._steer_gen = self.spaces.generation
                changed = self.spaces.take_changed()
                if changed is None:
                    links = self._links()
                    self.steer.set_targets(placement.targets(self.policy, links))
                    self.steer.set_links(links)
                else:  # O(changed links), not O(links)
                    now = [st for st in changed.values() if st is not None]
                    self.steer.update(changed, placement.targets(self.policy, now))
                    self.steer.links_changed(changed)
                self.steer.changed()
            self.steer.due()
            if self.steer.placer.generation != self._placement_gen:
                self._placement_gen = self.steer.placer.generation
                self._published = -1  # a placement outcome is news for status.json
        if self.metrics is not None and (due := self.metrics.next_due()) is not None \
                and due <= time.monotonic():
            self._write_metrics()

    def _timeout(self) -> float | None:
        if self._reload or self._stop:
            return 0.0  # asked for before the loop began (during start-up)
        now = time.monotonic()
        deadlines = [self._next_resync]
        for space in self.spaces.waiting():
            if (retry := space.rec.next_retry()) is not None:
                deadlines.append(retry)
        if (rescan := self.spaces.rescan_due()) is not None:
            deadlines.append(rescan)
        if self._status_due():
            deadlines.append(self._status_written + STATUS_MIN_INTERVAL)
        if self._watchdog:
            deadlines.append(self._next_watchdog)
        for extra in (self.steer, self.metrics):
            if extra is not None and (due := extra.next_due()) is not None:
                deadlines.append(due)
        if (stall := self.stall.due(now)) is not None:
            deadlines.append(stall)
        return max(0.0, min(deadlines) - now)

    def run(self, early: list[int] | None = None) -> int:
        """The loop until SIGTERM/SIGINT; returns the exit status. ``early``: signals
        recorded before this (wgnapid.entry): a SIGTERM/SIGINT ends the start-up at
        once, a SIGHUP is a reload done right after READY=1."""
        # Nothing is written through a sysfs view that is not this namespace's
        # own (wgnapid.netns.check_view): one line and exit 1 (cli). The view is
        # held as a directory fd from here on, so a later remount of /sys
        # cannot change it.
        problem = self.ns.check_view()
        if problem:
            self.ns.close()
            raise RuntimeError(self.ns.problem_line(problem))
        self._signals()
        for signum in early or ():
            if signum == signal.SIGHUP:
                self._reload = True
            else:
                self._stop = signal.Signals(signum).name
        if self._stop:
            self.spaces.close()
            self.writers.close()
            for space in self.spaces:
                space.ns.close()
            return 0
        self.sel.register(self.writers.fd, selectors.EVENT_READ, "completions")
        # Subscribe before listing, so nothing falls between (entered namespaces
        # get their source when entered, before their first list).
        self.spaces.open_sources()
        self.log.info(
            "started",
            f"wgnapid {__version__} started: source {self.policy.daemon.source}, kernel "
            f"{self.verdict.release}, policy {', '.join(self.policy.files)}, "
            f"namespaces {self.policy.daemon.namespaces}, hot path {accel.describe()}",
        )
        self._guard_warning()
        self.resync("start-up")
        self.spaces.settle()
        self._say_summary("start-up")
        self._publish(force=True)
        notify("READY=1")
        try:
            while not self._stop:
                ready = self.sel.select(self._timeout())
                rescan = False
                for key, _ in ready:
                    if key.data == "wakeup":
                        try:
                            os.read(self._wakeup, 512)
                        except BlockingIOError:
                            pass
                    elif key.data == "completions":
                        # Shared writers: each result goes back to its own reconciler.
                        for w, (result, check) in self.writers.take():
                            w.rec._collected(w, result, check)
                            self.spaces.touch(self.spaces.by_id.get(w.rec.ns.id) or self.spaces.own)
                    elif key.data == "steer":
                        self.steer.handle()
                    elif key.data is self.spaces:
                        rescan |= self.spaces.hinted()
                    elif key.data.ns.id in self.spaces.by_id:  # not released in this round
                        self._handle_events(key.data)
                if self._stop:
                    break
                if self._reload:
                    self._reload = False
                    self._reload_policy()
                now = time.monotonic()
                if rescan or ((due := self.spaces.rescan_due()) is not None and now >= due):
                    self._rescan()
                for space in self.spaces.waiting():
                    space.rec.retry_due(wait=False)
                    self.spaces.touch(space)
                if now >= self._next_resync:
                    if self.watch and self.watch.changed():
                        self.log.info("policy-changed", "the policy files changed; reloading")
                        self._reload_policy()
                    else:
                        self.resync("periodic")
                if self.stall.run_due(((s.ns, s.rec.links.values()) for s in self.spaces), now):
                    self._published = -1  # a peer's stall state is news
                if self._watchdog and now >= self._next_watchdog:
                    notify("WATCHDOG=1")
                    self._next_watchdog = now + self._watchdog
                self.spaces.settle()
                self._publish()
                self._steer_and_measure_due()
        finally:
            notify("STOPPING=1")
            if self.steer is not None:
                self.steer.close()
            self.spaces.close()
            self.writers.close()
            self.stall.close()
            self.log.info("stopping", f"wgnapid stopping ({self._stop or 'error'})")
            self._remove_status()
            for space in self.spaces:
                space.ns.close()
        return 0
