"""What people do instead of a daemon, as small programs the bench measures
the same way as wgnapid.

    python -m bench.alternatives hook          fork `sh -c 'echo 1 > .../threaded'`
                                               per link creation event (what a
                                               PostUp line or a dispatcher script does)
    python -m bench.alternatives udev          write once, in-process, on the kernel
                                               "add" uevent (what a udev rule
                                               `ATTR{threaded}="1"` does)
    python -m bench.alternatives timer SECONDS every SECONDS, fork a shell that
                                               rewrites every /sys/class/net/*/threaded
                                               (a cron job or systemd timer)
    python -m bench.alternatives pyfloor       not an alternative: the least a Python
                                               responder does for what wgnapid does per
                                               link (rtnetlink, identity proof, read,
                                               write, read-back; no policy, state or log),
                                               inline; the Python lower bound, one at a time
    python -m bench.alternatives floor         not an alternative: bench/floor.c, the
                                               leanest responder there can be (C, 4
                                               writer threads, write only), built with
                                               cc and run; the lower bound of the event path

Each prints "ready" once listening. On SIGUSR1 it prints
`cpu SELF_NS CHILDREN_NS SPAWNED OK FAILED OVERFLOWS` (getrusage of itself and
of its reaped children); SIGTERM ends it.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque

SH = "/bin/sh"
HOOK_PARALLEL = 12  # like udevd's children_max (8 + 2 per CPU) on this 2-CPU machine
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")


class Base:
    def __init__(self) -> None:
        self.spawned = self.ok = self.failed = self.overflows = 0
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sigfd = rfd
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        self.stop = False
        self.report = False
        self.children = 0
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.signal(signal.SIGCHLD, lambda *a: None)  # only to wake select

    def _on_term(self, *a) -> None:
        self.stop = True

    def _on_usr1(self, *a) -> None:
        self.report = True

    def spawn(self, script: str) -> None:
        os.posix_spawn(SH, ["sh", "-c", script], {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        self.spawned += 1
        self.children += 1

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children = 0
                return
            if pid == 0:
                return
            self.children -= 1
            if os.waitstatus_to_exitcode(status) == 0:
                self.ok += 1
            else:
                self.failed += 1

    def housekeeping(self) -> None:
        try:
            os.read(self.sigfd, 512)
        except BlockingIOError:
            pass
        self.reap()
        if self.report:
            self.report = False
            me = resource.getrusage(resource.RUSAGE_SELF)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            ns = lambda r: int((r.ru_utime + r.ru_stime) * 1e9)  # noqa: E731
            print(f"cpu {ns(me)} {ns(kids)} {self.spawned} {self.ok} {self.failed} {self.overflows}",
                  flush=True)

    def finish(self) -> None:
        # Let running shells end, so their CPU is counted if asked once more.
        deadline = time.monotonic() + 5
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)


class Hook(Base):
    """A creation-event listener that forks a shell per new link."""

    def __init__(self) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self.sock.bind((0, 1))  # RTMGRP_LINK
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # same 4 MiB as wgnapid
        except OSError:
            pass
        self.sock.setblocking(False)
        self.seen: set[int] = set()
        self.queue: deque[str] = deque()

    def _read(self) -> None:
        while True:
            try:
                buf = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overflows += 1  # a hook has no way to learn what it missed
                    continue
                raise
            off = 0
            while off + _NLMSGHDR.size <= len(buf):
                length, mtype = _NLMSGHDR.unpack_from(buf, off)[:2]
                if length < _NLMSGHDR.size:
                    break
                if mtype == 16:  # RTM_NEWLINK
                    body = off + _NLMSGHDR.size
                    ifindex = _IFINFOMSG.unpack_from(buf, body)[2]
                    if ifindex not in self.seen:
                        self.seen.add(ifindex)
                        name = _ifname(buf, body + _IFINFOMSG.size, off + length)
                        if name and _NAME.match(name):
                            self._queue(ifindex, name)
                elif mtype == 17:  # RTM_DELLINK
                    self.seen.discard(_IFINFOMSG.unpack_from(buf, off + _NLMSGHDR.size)[2])
                off += (length + 3) & ~3

    def _queue(self, ifindex: int, name: str) -> None:
        self.queue.append(name)

    def run(self) -> None:
        print("ready", flush=True)
        while not self.stop:
            select.select([self.sock, self.sigfd], [], [])
            self._read()
            self.housekeeping()
            while self.queue and self.children < HOOK_PARALLEL:
                self.spawn(f"echo 1 > /sys/class/net/{self.queue.popleft()}/threaded")
        self.finish()


def _ifname(buf: bytes, off: int, end: int) -> str | None:
    while off + 4 <= end:
        length, kind = struct.unpack_from("=HH", buf, off)
        if length < 4:
            return None
        if kind == 3:  # IFLA_IFNAME
            return buf[off + 4 : off + length].split(b"\0", 1)[0].decode(errors="replace")
        off += (length + 3) & ~3
    return None


class Udev(Base):
    """Write once on the kernel's "add" uevent for a net device, in-process."""

    def __init__(self) -> None:
        super().__init__()
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 15)
        self.sock.bind((0, 1))  # kernel uevents
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)
        except OSError:
            pass
        self.sock.setblocking(False)

    def _read(self) -> None:
        while True:
            try:
                buf = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overflows += 1
                    continue
                raise
            fields = buf.split(b"\0")
            if not fields[0].startswith(b"add@"):
                continue
            env = dict(f.split(b"=", 1) for f in fields[1:] if b"=" in f)
            name = env.get(b"INTERFACE", b"").decode(errors="replace")
            if env.get(b"SUBSYSTEM") != b"net" or not _NAME.match(name):
                continue
            try:
                fd = os.open(f"/sys/class/net/{name}/threaded", os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, b"1")
                finally:
                    os.close(fd)
                self.ok += 1
            except OSError:
                self.failed += 1  # e.g. EOPNOTSUPP: not settable yet, and never retried

    def run(self) -> None:
        print("ready", flush=True)
        while not self.stop:
            select.select([self.sock, self.sigfd], [], [])
            self._read()
            self.housekeeping()


class PythonFloor(Hook):
    """The syscalls wgnapid makes for a new link, from Python, inline, and nothing
    else: the rtnetlink read and walk (Hook's), then the directory of the link,
    its `ifindex` read and compared, `threaded` opened, read, written when not
    1, and read back. What wgnapid adds to this (policy, link state, journal
    line, status) is its own work; what this costs over floor.c is Python's.
    Waiting links are not retried: one-at-a-time figures only."""

    def __init__(self) -> None:
        super().__init__()
        self.ifindex: dict[str, int] = {}

    def _queue(self, ifindex: int, name: str) -> None:
        self.ifindex[name] = ifindex
        self.queue.append(name)

    def _write(self, name: str) -> bool:
        d = os.open(f"/sys/class/net/{name}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = os.open("ifindex", os.O_RDONLY | os.O_CLOEXEC, dir_fd=d)
            try:
                if int(os.read(fd, 32)) != self.ifindex.pop(name, None):
                    return False
            finally:
                os.close(fd)
            fd = os.open("threaded", os.O_RDWR | os.O_CLOEXEC, dir_fd=d)
            try:
                if os.pread(fd, 8, 0).strip() != b"1":
                    os.pwrite(fd, b"1\n", 0)
                return os.pread(fd, 8, 0).strip() == b"1"
            finally:
                os.close(fd)
        finally:
            os.close(d)

    def run(self) -> None:
        print("ready", flush=True)
        while not self.stop:
            select.select([self.sock, self.sigfd], [], [])
            self._read()
            while self.queue:
                try:
                    good = self._write(self.queue.popleft())
                except OSError:
                    good = False
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
            self.housekeeping()


class Timer(Base):
    SCRIPT = 'for f in /sys/class/net/*/threaded; do echo 1 > "$f"; done 2>/dev/null; true'

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval

    def run(self) -> None:
        print("ready", flush=True)
        start = time.monotonic()
        tick = 1
        while not self.stop:
            left = start + tick * self.interval - time.monotonic()
            if left <= 0:
                if self.children == 0:
                    self.spawn(self.SCRIPT)
                tick += 1
                continue
            select.select([self.sigfd], [], [], left)
            self.housekeeping()
        self.finish()


def exec_floor() -> None:
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")
    exe = os.path.join(tempfile.mkdtemp(prefix="wgnapid-bench-floor-"), "floor")
    subprocess.run(["cc", "-O2", "-pthread", "-o", exe, src], check=True)
    os.execv(exe, [exe])


def main(argv: list[str]) -> int:
    if argv and argv[0] == "floor":
        exec_floor()
    if not argv or argv[0] not in ("hook", "udev", "timer", "pyfloor"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "hook":
        Hook().run()
    elif argv[0] == "pyfloor":
        PythonFloor().run()
    elif argv[0] == "udev":
        Udev().run()
    else:
        Timer(float(argv[1])).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
