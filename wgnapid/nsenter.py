"""Entering another network namespace: setns from a helper thread, sockets made
there, and a detached sysfs mount of that namespace.

Kernel behaviour relied on (KERNEL-FACTS.md, "Network namespaces"):

- setns(fd, CLONE_NEWNET) changes the network namespace of the calling
  *thread* only, and a socket stays in the namespace it was created in. So a
  short-lived thread enters the target, creates what is needed and ends; the
  daemon's own threads never leave their namespace.
- /sys shows the namespace of whoever mounted it. In the entered thread,
  fsopen("sysfs") + fsconfig(FSCONFIG_CMD_CREATE) + fsmount() give a detached
  mount of a sysfs instance tagged with the thread's network namespace
  (sysfs_init_fs_context() takes current->nsproxy->net_ns). Its fd serves
  openat() for the whole process; nothing is attached to any mount tree, and
  the mount goes away with the last fd. Needs CAP_SYS_ADMIN in the user
  namespace owning the target namespace, kernel 5.2+.
- The sysfs superblock holds only a passive reference to the namespace
  (net_grab_current_ns), but a user socket holds a full one (sk_alloc with
  kern=0): while wgnapid keeps sockets in a namespace, the kernel does not
  destroy it. So "gone" is decided by discovery (no name, no process holds
  it), and then every fd here is closed.

Python 3.11 has no os.setns and no wrapper for the new mount API: both go
through ctypes. The fs* system call numbers are the same on x86_64 and
aarch64 (the unified table since 5.2).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import threading
from typing import Callable, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x2, 0x4, 0x8

_SYSCALLS = {
    # machine: (fsopen, fsconfig, fsmount)
    "x86_64": (430, 431, 432),
    "aarch64": (430, 431, 432),
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)


class EnterError(OSError):
    """A namespace could not be entered or its sysfs not be mounted: carries errno
    and a one-line reason."""


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise EnterError(err, f"{what}: {os.strerror(err)}")
    return ret


def setns_net(fd: int) -> None:
    """setns(fd, CLONE_NEWNET) for the calling thread. Raises EnterError
    (EPERM without CAP_SYS_ADMIN, EINVAL when fd is not a network namespace)."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def mount_sysfs() -> int:
    """A detached sysfs mount of the calling thread's network namespace: returns
    the mount fd (O_CLOEXEC). Raises EnterError (EPERM without CAP_SYS_ADMIN,
    ENOSYS before 5.2 or on an unknown architecture)."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise EnterError(errno.ENOSYS, f"fsopen: no system call numbers for {platform.machine()}")
    nr_fsopen, nr_fsconfig, nr_fsmount = numbers
    fsfd = _check(_libc.syscall(nr_fsopen, b"sysfs", FSOPEN_CLOEXEC), "fsopen(sysfs)")
    try:
        _check(_libc.syscall(nr_fsconfig, fsfd, FSCONFIG_CMD_CREATE, None, None, 0),
               "fsconfig(FSCONFIG_CMD_CREATE)")
        attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
        return _check(_libc.syscall(nr_fsmount, fsfd, FSMOUNT_CLOEXEC, attrs), "fsmount")
    finally:
        os.close(fsfd)


def class_net_fd() -> int:
    """The directory fd of class/net in a fresh detached sysfs of the calling
    thread's namespace (the mount lives as long as this fd)."""
    mfd = mount_sysfs()
    try:
        return os.open("class/net", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=mfd)
    finally:
        os.close(mfd)


def run_in(targets: list[tuple[int, Callable[[], T]]]) -> list[T | BaseException]:
    """Run each ``make`` inside the network namespace of its fd, on one
    short-lived thread that setns()es from one target to the next; the
    calling thread never changes namespace. Returns, per target, what ``make``
    returned or the exception it (or setns) raised. Blocks until done.

    One thread serves a whole batch: 1,000 namespaces cost one thread, not
    1,000 (thread creation is most of a single entry's cost)."""
    results: list = [None] * len(targets)

    def work() -> None:
        for i, (fd, make) in enumerate(targets):
            try:
                setns_net(fd)
                results[i] = make()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                results[i] = exc

    t = threading.Thread(target=work, name="wgnapid-setns", daemon=True)
    t.start()
    t.join()
    return results


def open_ns(path: str) -> int:
    """An fd of a network namespace file (/run/netns/X, /proc/PID/ns/net).
    Raises OSError (ENOENT when it went away meanwhile)."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
