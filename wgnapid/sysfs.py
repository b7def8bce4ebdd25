"""The one place that reads and writes /sys/class/net/<dev>/threaded.

Kernel behaviour relied on here is in KERNEL-FACTS.md ("Writing
/sys/class/net/DEV/threaded"): EOPNOTSUPP until the device has a NAPI
instance, a short write when racing device removal, EINVAL/ENODEV/ENOENT
when the device is going or gone.
"""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass

from wgnapid.accel import hotpath

DEFAULT_ROOT = "/sys/class/net"


class Outcome(enum.Enum):
    OK = "ok"
    NOT_SETTABLE = "not-settable"  # EOPNOTSUPP: no NAPI instance yet (no peer)
    GONE = "gone"  # the link went away under us
    PERMISSION = "permission"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    value: int | None = None  # what was read, for reads
    detail: str = ""


PERMISSION_HINT = (
    "needs CAP_NET_ADMIN in the link's network namespace and write access to "
    "root-owned sysfs: run as root (or grant CAP_DAC_OVERRIDE)"
)

# Root without CAP_NET_ADMIN (a unit's CapabilityBoundingSet=, a container).
ROOT_PERMISSION_HINT = (
    "needs CAP_NET_ADMIN in the link's network namespace (missing from this "
    "process's capabilities: CapabilityBoundingSet=, or a container's limits)"
)

_GONE_ERRNOS = {errno.ENOENT, errno.ENODEV, errno.EINVAL, errno.ENXIO}


# What is written for each value: one pwrite at offset 0.
VALUE_BYTES = {0: b"0\n", 1: b"1\n"}

# Shared (results are immutable): a waiting link's retry meets it thousands of times a second.
_NOT_SETTABLE = Result(Outcome.NOT_SETTABLE, detail="no NAPI instance yet")


def read_only_hint(device_dir: str) -> str:
    """Why a write got EROFS, naming the mount and the systemd setting that opens it.

    ``device_dir``: the link's directory in sysfs with symlinks resolved
    (/sys/devices/.../net/DEV), the path a drop-in must name.
    """
    return (
        f"{device_dir} is on a read-only mount (under systemd: ProtectKernelTunables= makes "
        f"/sys read-only; the unit opens only /sys/devices/virtual/net, so add "
        f"ReadWritePaths={os.path.dirname(device_dir)} in a drop-in)"
    )


def _classify(exc: OSError, action: str, device_dir: str | None = None) -> Result:
    err = exc.errno
    if err == errno.EOPNOTSUPP:
        return _NOT_SETTABLE
    if err in _GONE_ERRNOS:
        return Result(Outcome.GONE, detail=f"{action}: {os.strerror(err)}")
    if err == errno.EROFS:
        where = read_only_hint(device_dir) if device_dir else "sysfs is mounted read-only here"
        return Result(Outcome.PERMISSION, detail=f"{action}: {os.strerror(err)}: {where}")
    if err in (errno.EPERM, errno.EACCES):
        hint = ROOT_PERMISSION_HINT if os.geteuid() == 0 else PERMISSION_HINT
        return Result(Outcome.PERMISSION, detail=f"{action}: {os.strerror(err)}; {hint}")
    return Result(Outcome.ERROR, detail=f"{action}: {exc.strerror or exc}")


def _written(written: int, size: int, value: int) -> Result:
    # A write racing device removal can return 0 bytes instead of failing.
    if written != size:
        return Result(Outcome.GONE, detail=f"short write ({written} of {size} bytes)")
    return Result(Outcome.OK, value=value)


def _answer(r: int, size: int, value: int) -> Result:
    """A pwrite_each result (bytes written, or -errno) as a Result."""
    if r < 0:
        return _classify(OSError(-r, os.strerror(-r)), "write")
    return _written(r, size, value)


def _pwrite_each_py(fds: list[int], data: bytes, max_written: int) -> tuple[list[tuple[int, int]], int]:
    """The Python reference of wgnapid._hotpath.pwrite_each (see its comment)."""
    answers: list[tuple[int, int]] = []
    written = tried = 0
    for i, fd in enumerate(fds):
        if written >= max_written:
            break
        tried = i + 1
        try:
            r = os.pwrite(fd, data, 0)  # (EINTR is retried by Python itself, PEP 475)
        except OSError as exc:
            if exc.errno != errno.EOPNOTSUPP:
                answers.append((i, -exc.errno))
            continue
        answers.append((i, r))
        if r == len(data):
            written += 1
    return answers, tried


_pwrite_each = hotpath.pwrite_each if hotpath is not None else _pwrite_each_py


def device_dir(dirfd: int) -> str:
    """The path of the link directory open as ``dirfd`` (/sys/devices/.../net/DEV
    for the process's own /sys), for messages; "" when it cannot be told."""
    try:
        return os.readlink(f"/proc/self/fd/{dirfd}")
    except OSError:
        return ""


def _erofs_dir(exc: OSError, dirfd: int) -> str | None:
    # Only an EROFS message names the directory: resolve it only then.
    return device_dir(dirfd) or None if exc.errno == errno.EROFS and dirfd >= 0 else None


@dataclass(slots=True)
class Opened:
    """A link's `threaded` attribute, open (see ThreadedAttr.open).

    ``ifname``: the link's name when it was opened (for messages only);
    ``dirfd``: the link's sysfs directory, kept open only when the attribute
    could not be opened for writing, so that a write opens it again relative
    to the same (proven) directory and reports the kernel's reason."""

    ifname: str
    fd: int
    writable: bool
    dirfd: int = -1


class ThreadedAttr:
    """Reads and writes the `threaded` attribute of one link, relative to the
    link's sysfs directory (a directory fd). Which directory belongs to which
    link is proven by wgnapid.netns (NetNamespace.open_threaded); nothing here
    builds a path from a name."""

    def writable(self, dirfd: int) -> str | None:
        """None when this process may write `threaded` under the link directory
        ``dirfd``, else why not (one line).

        Changes nothing: fstatvfs() for a read-only mount (ST_RDONLY: the
        per-mount flag systemd's ProtectKernelTunables= sets), then
        faccessat(W_OK) with the effective ids for the file's permission bits.
        CAP_NET_ADMIN, checked by the kernel on the write itself, is the
        privileges check's."""
        try:
            if os.fstatvfs(dirfd).f_flag & os.ST_RDONLY:
                return f"Read-only file system: {read_only_hint(device_dir(dirfd))}"
            if not os.access("threaded", os.W_OK, dir_fd=dirfd, effective_ids=True):
                return f"no write permission on {device_dir(dirfd)}/threaded; {PERMISSION_HINT}"
        except OSError as exc:
            return str(exc)
        return None

    def open(self, dirfd: int, ifname: str, *, write: bool = True) -> Opened | Result:
        """Open `threaded` under the directory ``dirfd`` (openat). One open serves
        a read, a write and the read-back (each kernfs open costs about as much as
        the read itself). Where the file cannot be opened for writing (not root,
        read-only sysfs), it is opened for reading, and a write then fails with
        the reason. ``dirfd`` stays the caller's."""
        try:
            if write:
                try:
                    return Opened(ifname, os.open("threaded", os.O_RDWR | os.O_CLOEXEC, dir_fd=dirfd), True)
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                        raise
            fd = os.open("threaded", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError as exc:
            return _classify(exc, "open", _erofs_dir(exc, dirfd))
        keep = -1
        if write:
            try:
                keep = os.dup(dirfd)
            except OSError as exc:
                os.close(fd)
                return _classify(exc, "open")
        return Opened(ifname, fd, False, keep)

    def read_opened(self, op: Opened) -> Result:
        """pread at offset 0: Result(OK, value) or the errno's outcome."""
        try:
            # pread at 0: sysfs regenerates the value for every read from the start.
            raw = os.pread(op.fd, 16, 0)
        except OSError as exc:
            return _classify(exc, "read")
        text = raw.strip()
        if not text.isdigit():
            return Result(Outcome.ERROR, detail=f"read: unexpected content {raw!r}")
        return Result(Outcome.OK, value=int(text))

    def write_opened(self, op: Opened, value: int) -> Result:
        """One pwrite of b"0\\n"/b"1\\n" at offset 0 (ValueError for other values);
        safe on a writer thread (no shared state)."""
        if value not in VALUE_BYTES:
            raise ValueError(f"threaded value must be 0 or 1, not {value!r}")
        if op.writable:
            result = self.pwrite(op, value)
        else:
            # Opened read-only: this open fails with the reason (EACCES, EROFS...).
            if op.dirfd < 0:
                return Result(Outcome.ERROR, detail="write: opened for reading only")
            try:
                fd = os.open("threaded", os.O_WRONLY | os.O_CLOEXEC, dir_fd=op.dirfd)
            except OSError as exc:
                return _classify(exc, "open for write", _erofs_dir(exc, op.dirfd))
            try:
                result = self.pwrite(Opened(op.ifname, fd, True), value)
            finally:
                os.close(fd)
        return _NOT_SETTABLE if result is None else result

    def pwrite(self, op: Opened, value: int) -> Result | None:
        """One pwrite of VALUE_BYTES[value] at offset 0 on ``op`` (opened for
        writing): the write of write_opened(). Waiting links are retried in
        batches by retry_each(), which answers the same way.

        None when the kernel refuses it with EOPNOTSUPP (no NAPI instance yet,
        KERNEL-FACTS.md). Otherwise Result(OK, value),
        or the errno's outcome; a write racing device removal can return 0
        bytes instead of failing, so anything short is GONE. KeyError for a
        value other than 0 and 1."""
        data = VALUE_BYTES[value]
        try:
            written = os.pwrite(op.fd, data, 0)
        except OSError as exc:
            if exc.errno == errno.EOPNOTSUPP:
                return None
            return _classify(exc, "write")
        return _written(written, len(data), value)

    def retry_each(self, ops: list[Opened], value: int, max_written: int) -> tuple[list[tuple[int, Result]], int]:
        """The retry of many waiting links: pwrite() of VALUE_BYTES[value] at
        offset 0 on each of ``ops`` (opened for writing) in order, until every
        one was tried or ``max_written`` writes succeeded (each success waits
        for the kernel to start the link's NAPI kthread, KERNEL-FACTS.md).

        Returns ([(index in ops, Result)] for every write the kernel did not
        refuse with EOPNOTSUPP, how many of ``ops`` were tried). Refused writes
        leave nothing behind: thousands of waiting links get that answer every
        retry, so it costs one syscall each, in C when wgnapid._hotpath is built
        (the GIL is released meanwhile), in the same loop in Python otherwise.
        KeyError for a value other than 0 and 1."""
        data = VALUE_BYTES[value]
        answers, tried = _pwrite_each([op.fd for op in ops], data, max_written)
        return [(i, _answer(r, len(data), value)) for i, r in answers], tried

    def close(self, op: Opened) -> None:
        """Close what ``open`` opened (the attribute, and the kept directory)."""
        os.close(op.fd)
        if op.dirfd >= 0:
            os.close(op.dirfd)
            op.dirfd = -1

    def read(self, dirfd: int, ifname: str = "") -> Result:
        """Open, read and close `threaded` under the link directory ``dirfd``:
        Result(OK, value 0/1), or the outcome of the errno (never raises OSError)."""
        op = self.open(dirfd, ifname, write=False)
        if isinstance(op, Result):
            return op
        try:
            return self.read_opened(op)
        finally:
            self.close(op)

    def write(self, dirfd: int, value: int, ifname: str = "") -> Result:
        """Open, write ``value`` (0 or 1; ValueError otherwise) and close `threaded`
        under the link directory ``dirfd``; a short write is GONE (KERNEL-FACTS)."""
        if value not in (0, 1):
            raise ValueError(f"threaded value must be 0 or 1, not {value!r}")
        op = self.open(dirfd, ifname)
        if isinstance(op, Result):
            return op
        try:
            return self.write_opened(op, value)
        finally:
            self.close(op)
