"""When did a link become threaded? The kernel's own clock, without polling.

Writing 1 to /sys/class/net/DEV/threaded makes the kernel create one kthread
`napi/DEV-ID` per NAPI instance, inside that write, and only then set the flag
(net/core/dev.c, netif_set_threaded). The process-events connector
(CONFIG_PROC_EVENTS) reports every fork with a CLOCK_MONOTONIC timestamp taken
by the kernel, so the fork of the first `napi/DEV-*` kthread is the moment the
successful write happened, to the microsecond, at no cost to the process
being measured and with no poller competing for the two CPUs. The flag reads 1
when that write returns, a little later (the rest of the kthread start-up);
`single` runs also poll the file and report that offset.

The connector only talks to sockets of the initial network namespace, so the
watcher lives in the orchestrator, outside the benchmark namespaces; kthreads
are global, and the link names the bench uses are unique per run.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
PROC_EVENT_FORK = 0x1
_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT = struct.Struct("=IIQ")
_FORK = struct.Struct("=IIII")
KTHREADD = 2
TASK_COMM_LEN = 16


class ForkWatcher:
    def __init__(self, prefix: str = "napi/b") -> None:
        self.prefix = prefix
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
        self.sock.bind((0, CN_IDX_PROC))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
        except OSError:
            pass
        self.filtered = self._subscribe()
        self.sock.settimeout(0.2)
        self.forks: dict[str, list[int]] = {}  # link name -> fork timestamps (ns)
        self.lost = 0  # times the socket overflowed (ENOBUFS)
        self.unnamed = 0  # kthreads whose name could not be read in time
        self.counts = {"messages": 0, "kthread_forks": 0, "name_reads": 0}
        self._cond = threading.Condition()
        self._stop = False
        self._retry: list[tuple[int, int, float]] = []
        self._pending: set[str] = set()  # names the one waiter still waits for
        self._since = 0
        self._thread = threading.Thread(target=self._run, name="fork-watcher", daemon=True)
        self._thread.start()

    def _send_op(self, op: int, events: int | None = None) -> None:
        # With an event mask (struct proc_input, 6.6+) the kernel sends only those
        # events; the plain form (one u32) subscribes to everything.
        payload = struct.pack("=I", op) if events is None else struct.pack("=II", op, events)
        cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(cn), 3, 0, 0, 0) + cn)

    def _subscribe(self) -> bool:
        """Ask for fork events only, so every exec, exit and rename on the machine
        does not cost the watcher (it shares the CPUs with what it measures).
        Kernels without filtering ignore that request: then subscribe to all."""
        self._send_op(PROC_CN_MCAST_LISTEN, PROC_EVENT_FORK)
        self.sock.settimeout(0.5)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        try:
            while True:
                buf = self.sock.recv(1 << 16)
                ev = _NLMSGHDR.size + _CN_MSG.size
                if len(buf) >= ev + _EVENT.size + _FORK.size:
                    what = _EVENT.unpack_from(buf, ev)[0]
                    if what == PROC_EVENT_FORK and _FORK.unpack_from(buf, ev + _EVENT.size)[2] == pid:
                        return True
        except socket.timeout:
            self._send_op(PROC_CN_MCAST_LISTEN)
            return False

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        try:
            self._send_op(PROC_CN_MCAST_IGNORE)
        except OSError:
            pass
        self.sock.close()

    # -- receiving ---------------------------------------------------------

    def _name(self, pid: int) -> str | None:
        self.counts["name_reads"] += 1
        try:
            fd = os.open(f"/proc/{pid}/comm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return ""  # gone already
        try:
            return os.read(fd, 128).decode(errors="replace").strip()
        except OSError:
            return ""
        finally:
            os.close(fd)

    def _record(self, pid: int, ts: int, final: bool = False) -> bool:
        """False when the kthread is not (fully) named yet: try again later."""
        comm = self._name(pid)
        if comm in ("kthreadd", None):
            return False
        if (comm.startswith(self.prefix) and len(comm) == TASK_COMM_LEN - 1 and not final
                and comm[5:].rpartition("-")[0] not in self._pending):
            # Names longer than 15 bytes are cut in task->comm; /proc shows a
            # kthread's full name only once the new thread has run far enough
            # to publish it (kernel/kthread.c, kthread()), which is before the
            # write that created it returns. A name of exactly 15 bytes may be
            # whole or cut: look again shortly, unless it names a link being
            # waited for (bench link names have no "-", so a cut that leaves
            # "napi/NAME-" still names NAME).
            return False
        if comm.startswith(self.prefix):
            dev = comm[5:].rpartition("-")[0]
            with self._cond:
                self.forks.setdefault(dev, []).append(ts)
                if dev in self._pending and ts >= self._since:
                    self._pending.discard(dev)
                    if not self._pending:
                        self._cond.notify_all()
        return True

    def cpu_ns(self) -> int:
        """CPU time the watcher thread has used (it shares the CPUs with the runs)."""
        try:
            with open(f"/proc/self/task/{self._tid}/schedstat") as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, AttributeError):
            return 0

    def _run(self) -> None:
        self._tid = threading.get_native_id()
        next_retry = 0.0
        while not self._stop:
            if self._retry and time.monotonic() >= next_retry:
                now = time.monotonic()
                next_retry = now + 0.001  # not once per message: that cost 100 us a link
                keep = []
                for pid, ts, since in self._retry:
                    if not self._record(pid, ts, final=now - since >= 0.05):
                        if now - since < 2.0:
                            keep.append((pid, ts, since))
                        else:
                            self.unnamed += 1
                self._retry = keep
            self.sock.settimeout(0.002 if self._retry else 0.2)
            try:
                buf = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError as exc:
                if exc.errno == 105:  # ENOBUFS: events lost
                    self.lost += 1
                    continue
                if self._stop:
                    return
                raise
            off = 0
            while off + _NLMSGHDR.size <= len(buf):
                length = _NLMSGHDR.unpack_from(buf, off)[0]
                if length < _NLMSGHDR.size:
                    break
                ev = off + _NLMSGHDR.size + _CN_MSG.size
                what, _cpu, ts = _EVENT.unpack_from(buf, ev)
                self.counts["messages"] += 1
                if what == PROC_EVENT_FORK:
                    ppid, _ptgid, pid, _tgid = _FORK.unpack_from(buf, ev + _EVENT.size)
                    self.counts["kthread_forks"] += ppid == KTHREADD
                    if ppid == KTHREADD and not self._record(pid, ts):
                        self._retry.append((pid, ts, time.monotonic()))
                off += (length + 3) & ~3

    # -- asking ------------------------------------------------------------

    def first_fork(self, name: str, since: int = 0) -> int | None:
        with self._cond:
            for ts in self.forks.get(name, ()):
                if ts >= since:
                    return ts
        return None

    def wait(self, names: list[str], since: int, timeout: float) -> list[str]:
        """Block until every name has a kthread fork at or after `since` (ns), or
        the timeout passes. Returns the names still missing. One waiter at a time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._since = since
            self._pending = {
                n for n in names if not any(ts >= since for ts in self.forks.get(n, ()))
            }
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
            missing = sorted(self._pending)
            self._pending = set()
            return missing
