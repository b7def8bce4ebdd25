"""Which network namespaces exist on the host, and what each is called.

Used with ``daemon.namespaces = "all"``. Sources, all of them hints except the
scan, which is the truth (level-triggered, like the link side):

- named namespaces: ``/run/netns/NAME`` (``ip netns add``) and Docker's
  ``/run/docker/netns/ID``, nsfs files bind-mounted there; both directories
  are watched with inotify, so a new one is looked at at once;
- every namespace a process is in: a scan of ``/proc/*/ns/net``;
- RTM_NEWNSID on rtnetlink (RTNLGRP_NSID) in the daemon's own namespace: the
  kernel assigns an id to a peer namespace when, for example, a link is moved
  there (dev_change_net_namespace -> peernet2id_alloc), so it is a hint that
  a namespace may be new.

A namespace's identity is the nsfs (st_dev, st_ino) of its file
(KERNEL-FACTS.md, "Network namespaces"); the same namespace reached through a
name and through several processes counts once. Its name, in order: ``self``
for the daemon's own, its ``/run/netns`` name, ``docker:<id>``, else
``pid:<lowest pid>`` holding it.

inotify: Python has no binding in the standard library, and Debian 13's
packaged ones do not fit a selector loop: python3-pyinotify (0.9.6, last
released 2015) is built around asyncore, which Python 3.12 removed, and
python3-inotify (0.2.x) hides its fd behind a blocking generator with its
own epoll. The daemon needs only the fd and "something changed" (the scan
reads the truth), so three libc calls through ctypes do it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from dataclasses import dataclass

RUN_NETNS = "/run/netns"
DOCKER_NETNS = "/run/docker/netns"
WATCHED = (RUN_NETNS, DOCKER_NETNS)

IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_ONLYDIR = 0x400, 0x800, 0x01000000
_DIR_MASK = IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF

NETLINK_ROUTE, RTNLGRP_NSID = 0, 28

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)


@dataclass(frozen=True, slots=True)
class Found:
    """One network namespace found by a scan."""

    key: tuple[int, int]  # (st_dev, st_ino) of its nsfs file
    name: str  # "self", a /run/netns name, "docker:<id>" or "pid:<pid>"
    path: str  # a file to open it by (/run/netns/X, /proc/PID/ns/net)


def nsfs_key(path: str) -> tuple[int, int]:
    """(st_dev, st_ino) of a namespace file; raises OSError."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


IN_Q_OVERFLOW = 0x4000
_EVENT = struct.Struct("=iIII")


class DirWatch:
    """inotify on the watched directories; a directory that does not exist yet
    is waited for through its nearest existing parent (e.g. /run until Docker
    makes /run/docker). Events only say "scan again" (the scan reads the
    truth); on a parent, only the entry that leads to a watched directory
    counts, so other files coming and going in /run cost a read, not a scan."""

    def __init__(self, dirs: tuple[str, ...] = WATCHED):
        self.dirs = dirs
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd
        self.wants: dict[int, set[bytes] | None] = {}  # wd -> names that matter (None: all)
        self.rearm()

    def rearm(self) -> None:
        """(Re-)add the watches: idempotent (the kernel returns the same watch
        for the same inode), so it is called after every relevant event, when a
        watched directory may have appeared or been replaced."""
        wants: dict[int, set[bytes] | None] = {}
        for d in self.dirs:
            path, child = d, None
            while path not in ("/", ""):
                wd = _libc.inotify_add_watch(self.fd, path.encode(), _DIR_MASK | IN_ONLYDIR)
                if wd >= 0:
                    if child is None or wants.get(wd, set()) is None:
                        wants[wd] = None
                    else:
                        wants.setdefault(wd, set()).add(child)
                    break
                if ctypes.get_errno() not in (errno.ENOENT, errno.ENOTDIR):
                    break
                path, child = os.path.dirname(path), os.path.basename(path).encode()
        self.wants = wants

    def fileno(self) -> int:
        return self.fd

    def drain(self) -> bool:
        """Read what is pending; True when a scan is needed."""
        needed = False
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not buf:
                break
            offset = 0
            while offset + _EVENT.size <= len(buf):
                wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
                name = buf[offset + _EVENT.size: offset + _EVENT.size + length].split(b"\0", 1)[0]
                offset += _EVENT.size + length
                want = self.wants.get(wd, None)
                if mask & IN_Q_OVERFLOW or wd not in self.wants or want is None or name in want \
                        or mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                    needed = True
        if needed:
            self.rearm()
        return needed

    def close(self) -> None:
        os.close(self.fd)


class NsidHint:
    """RTM_NEWNSID/RTM_DELNSID of the daemon's own namespace (RTNLGRP_NSID):
    readable means "a peer namespace got or lost an id; scan again"."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 1 << (RTNLGRP_NSID - 1)))
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> bool:
        """Read what is pending; always True (a scan is needed)."""
        while True:
            try:
                self.sock.recv(65536)
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    continue  # lost hints: the scan that follows reads everything anyway
                raise

    def close(self) -> None:
        self.sock.close()


@dataclass(slots=True)
class Scan:
    found: dict[tuple[int, int], Found]
    # Entries of a watched directory that are not (yet) a namespace: `ip netns
    # add` creates the file, then bind-mounts the namespace on it, and inotify
    # sees only the first step. The caller looks again shortly.
    unready: bool


def scan(proc: str = "/proc", dirs: tuple[str, ...] = WATCHED) -> Scan:
    """Every network namespace that has a name or a process, deduplicated by
    nsfs identity. Cost: one stat per process and per named namespace."""
    own = nsfs_key(f"{proc}/self/ns/net")
    nsfs_dev = own[0]  # every namespace file lives on the one nsfs superblock
    found: dict[tuple[int, int], Found] = {own: Found(own, "self", f"{proc}/self/ns/net")}
    unready = False
    for d, prefix in zip(dirs, ("", "docker:")):
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            try:
                st = os.stat(entry.path)
            except OSError:
                continue
            if st.st_dev != nsfs_dev:
                unready = True  # created, not mounted yet (or a stale leftover)
                continue
            key = (st.st_dev, st.st_ino)
            if key not in found:
                found[key] = Found(key, prefix + entry.name, entry.path)
    lowest: dict[tuple[int, int], int] = {}
    with os.scandir(proc) as it:
        for entry in it:
            if not entry.name.isdigit():
                continue
            try:
                st = os.stat(f"{proc}/{entry.name}/ns/net")
            except OSError:
                continue  # exited meanwhile, or not ours to see
            key = (st.st_dev, st.st_ino)
            if key in found:
                continue
            pid = int(entry.name)
            if pid < lowest.get(key, 1 << 62):
                lowest[key] = pid
    for key, pid in lowest.items():
        found[key] = Found(key, f"pid:{pid}", f"{proc}/{pid}/ns/net")
    return Scan(found, unready)
