"""The event loop of `wgnapid run`: sources, timers, signals, sd_notify, status file."""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import syslog
import time

from wgnapid import __version__, config, kernel
from wgnapid.links import NetlinkSource, Overflow, Rtnl, UdevSource, netns_id
from wgnapid.log import Log
from wgnapid.reconciler import Reconciler
from wgnapid.stallwatch import StallWatch

STATUS_MIN_INTERVAL = 1.0  # seconds between status-file writes while things change
DEFAULT_RUNTIME_DIR = "/run/wgnapid"


def notify(message: str) -> bool:
    """sd_notify(3): send to $NOTIFY_SOCKET if there is one."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            s.sendall(message.encode())
        return True
    except OSError:
        return False


def status_path() -> str:
    runtime = os.environ.get("RUNTIME_DIRECTORY", DEFAULT_RUNTIME_DIR).split(":")[0]
    return os.path.join(runtime, "status.json")


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
    def __init__(self, policy: config.Policy, config_path: str | None, log: Log):
        self.policy = policy
        self.config_path = config_path
        self.log = log
        self.verdict = kernel.running_verdict()
        self.netns = netns_id()
        self.rec = Reconciler(policy, log, verdict=self.verdict, netns=self.netns)
        self.stall = StallWatch(log, policy.daemon.stall_window)
        self.rtnl = Rtnl()
        self.source = None
        self.sel = selectors.DefaultSelector()
        self.started = time.time()
        self._stop = False
        self._reload = False
        self._published = -1  # reconciler generation last published
        self._status_written = 0.0
        self._status_error = False
        self._status_text = ""
        self._next_resync = 0.0
        self._watchdog = _watchdog_interval()
        self._next_watchdog = 0.0

    # -- set-up -------------------------------------------------------------

    def _open_source(self) -> None:
        if self.source is not None:
            self.sel.unregister(self.source)
            self.source.close()
        cls = UdevSource if self.policy.daemon.source == "udev" else NetlinkSource
        self.source = cls(self.rtnl)
        self.sel.register(self.source, selectors.EVENT_READ)

    def _signals(self) -> None:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup = rfd
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        self.sel.register(rfd, selectors.EVENT_READ)

        def stop(signum, frame):
            self._stop = True

        def reload(signum, frame):
            self._reload = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    # -- reconciling ----------------------------------------------------------

    def resync(self, why: str) -> None:
        """Full re-list: the answer to start-up, overflow, reload and the timer."""
        links, complete = self.rtnl.dump_consistent()
        if why == "start-up" and not self.rec.attr.shows([link.name for link in links]):
            raise RuntimeError(
                f"{self.rec.attr.root} does not show this network namespace's links: mount "
                "sysfs in this namespace (as `ip netns exec` does) before starting wgnapid"
            )
        # Start-up and reload finish their writes before READY=1; the timer and
        # an overflow do not hold up the events that come meanwhile.
        self.rec.sync(links, complete, wait=why in ("start-up", "reload"))
        self.rec.stats.resyncs += 1
        interval = self.policy.daemon.resync_interval
        # An inconsistent dump raced a burst: look again soon, not in 30 s.
        self._next_resync = time.monotonic() + (interval if complete else min(interval, 1.0))
        if not complete:
            self.log.event(
                "resync", syslog.LOG_DEBUG,
                f"link list changed during the {why} re-list; re-listing again in 1 s",
            )

    def _handle_events(self) -> None:
        try:
            events = self.source.read()
        except Overflow:
            self.rec.stats.overflows += 1
            self.log.warning(
                "source-overflow",
                f"{self.source.name} event queue overflowed; events were lost, re-listing all links",
            )
            self._open_source()
            self.resync("overflow")
            return
        # Only the last event of each link counts (the kernel is read anyway), and
        # a link is evaluated once per batch, so its write is made once.
        last = {ev.ifindex: ev for ev in events}
        batch = []
        for ifindex, ev in last.items():
            if ev.removed:
                self.rec.remove(ifindex)
                continue
            link = ev.link
            if link is None:
                link = self.rtnl.get(ifindex)  # udev without DEVTYPE: ask rtnetlink
                if link is None:
                    self.rec.remove(ifindex)
                    continue
            batch.append((link, ifindex not in self.rec.links))
        self.rec.observe_many(batch, wait=False)

    def _reload_policy(self) -> None:
        notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            policy = config.load(self.config_path)
        except config.ConfigError as exc:
            for line in exc.lines:
                self.log.error("reload-failed", f"reload failed, keeping the running policy: {line}")
            notify("READY=1")
            return
        old_source = self.policy.daemon.source
        self.policy = policy
        self.rec.set_policy(policy)
        self.log.set_level(policy.daemon.log_level)
        self.stall.set_window(policy.daemon.stall_window, time.monotonic())
        if policy.daemon.source != old_source:
            self._open_source()
        self.log.info("reloaded", f"policy reloaded from {', '.join(policy.files)}")
        self._published = -1  # the source and policy files are news even if no link changes
        self._guard_warning()
        self.resync("reload")
        notify("READY=1")

    def _guard_warning(self) -> None:
        warning = kernel.guard_warning(self.policy.daemon.kernel_guard, self.verdict)
        if warning:
            self.log.warning("kernel-guard", warning, wgnapid_kernel=self.verdict.release)

    # -- status -------------------------------------------------------------

    def status_document(self) -> dict:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "since": self.started,
            "netns": self.netns,
            "source": self.source.name if self.source else None,
            "policy_files": list(self.policy.files),
            "kernel_native": self.rec.native,
            "stats": {
                "evaluations": self.rec.stats.evaluations,
                "writes": self.rec.stats.writes,
                "resyncs": self.rec.stats.resyncs,
                "overflows": self.rec.stats.overflows,
            },
            "summary": self.rec.summary(),
            "links": [st.as_dict() for st in self.rec.links.values()],
            "stall_window": self.stall.window,
            "stall_reads": self.stall.reads,
            "stalled_peers": self.stall.as_list(),
        }

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self._status_due() or now - self._status_written < STATUS_MIN_INTERVAL):
            return
        self._published = self.rec.generation
        self._status_written = now
        text = self.rec.summary_text()
        if text != self._status_text:
            notify(f"STATUS={text}")
            self._status_text = text
        path = status_path()
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            # dumps (C encoder) then one write: json.dump to a file is pure Python
            # and cost ~60 ms for 3,000 links.
            doc = json.dumps(self.status_document())
            with open(tmp, "w") as f:
                f.write(doc)
            os.replace(tmp, path)
            self._status_error = False
        except OSError as exc:
            if not self._status_error:  # once, not every second
                self.log.error("error", f"cannot write {path}: {exc.strerror}")
            self._status_error = True

    def _status_due(self) -> bool:
        return self.rec.generation != self._published

    def _remove_status(self) -> None:
        try:
            os.unlink(status_path())
        except OSError:
            pass

    # -- the loop -------------------------------------------------------------

    def _timeout(self) -> float | None:
        now = time.monotonic()
        deadlines = [self._next_resync]
        if (retry := self.rec.next_retry()) is not None:
            deadlines.append(retry)
        if self._status_due():
            deadlines.append(self._status_written + STATUS_MIN_INTERVAL)
        if self._watchdog:
            deadlines.append(self._next_watchdog)
        if (stall := self.stall.due(now)) is not None:
            deadlines.append(stall)
        return max(0.0, min(deadlines) - now)

    def run(self) -> int:
        self._signals()
        self.sel.register(self.rec.completions, selectors.EVENT_READ)
        self._open_source()  # subscribe before listing, so nothing falls between
        self.log.info(
            "started",
            f"wgnapid {__version__} started: source {self.source.name}, kernel "
            f"{self.verdict.release}, policy {', '.join(self.policy.files)}",
        )
        self._guard_warning()
        self.resync("start-up")
        self._publish(force=True)
        notify("READY=1")
        try:
            while not self._stop:
                ready = self.sel.select(self._timeout())
                for key, _ in ready:
                    if key.fileobj == self._wakeup:
                        try:
                            os.read(self._wakeup, 512)
                        except BlockingIOError:
                            pass
                    elif key.fileobj == self.rec.completions:
                        self.rec.collect()
                    else:
                        self._handle_events()
                if self._stop:
                    break
                if self._reload:
                    self._reload = False
                    self._reload_policy()
                self.rec.retry_due(wait=False)
                now = time.monotonic()
                if now >= self._next_resync:
                    self.resync("periodic")
                if self.stall.run_due(self.rec.links.values(), now):
                    self._published = -1  # a peer's stall state is news
                if self._watchdog and now >= self._next_watchdog:
                    notify("WATCHDOG=1")
                    self._next_watchdog = now + self._watchdog
                self._publish()
        finally:
            notify("STOPPING=1")
            self.rec.close()
            self.stall.close()
            self.log.info("stopping", "wgnapid stopping")
            self._remove_status()
        return 0
