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

_GONE_ERRNOS = {errno.ENOENT, errno.ENODEV, errno.EINVAL, errno.ENXIO}


# Shared (results are immutable): a waiting link's retry meets it thousands of times a second.
_NOT_SETTABLE = Result(Outcome.NOT_SETTABLE, detail="no NAPI instance yet")


def _classify(exc: OSError, action: str) -> Result:
    err = exc.errno
    if err == errno.EOPNOTSUPP:
        return _NOT_SETTABLE
    if err in _GONE_ERRNOS:
        return Result(Outcome.GONE, detail=f"{action}: {os.strerror(err)}")
    if err in (errno.EPERM, errno.EACCES, errno.EROFS):
        return Result(Outcome.PERMISSION, detail=f"{action}: {os.strerror(err)}; {PERMISSION_HINT}")
    return Result(Outcome.ERROR, detail=f"{action}: {exc.strerror or exc}")


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
            return _classify(exc, "open")
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
        if value == 1:
            data = b"1\n"
        elif value == 0:
            data = b"0\n"
        else:
            raise ValueError(f"threaded value must be 0 or 1, not {value!r}")
        if op.writable:
            # (The path of every retry of a waiting link: kept short.) One write:
            # a write racing device removal can return 0 bytes instead of
            # failing, so anything short is a failure.
            try:
                written = os.pwrite(op.fd, data, 0)
            except OSError as exc:
                return _classify(exc, "write")
        else:
            # Opened read-only: this open fails with the reason (EACCES, EROFS...).
            if op.dirfd < 0:
                return Result(Outcome.ERROR, detail="write: opened for reading only")
            try:
                fd = os.open("threaded", os.O_WRONLY | os.O_CLOEXEC, dir_fd=op.dirfd)
            except OSError as exc:
                return _classify(exc, "open for write")
            try:
                written = os.pwrite(fd, data, 0)
            except OSError as exc:
                return _classify(exc, "write")
            finally:
                os.close(fd)
        if written != len(data):
            return Result(Outcome.GONE, detail=f"short write ({written} of {len(data)} bytes)")
        return Result(Outcome.OK, value=value)

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


class NapiThreads:
    """Kernel threads named napi/<dev>-<id>, counted per device.

    One scan of /proc serves every link (status lists many at once). Kernel
    threads have PPid 2 (kthreadd). The kernel cuts a thread's comm to 15
    characters, so for long device names the id, or part of the name, is cut.
    """

    COMM_LEN = 15

    def __init__(self) -> None:
        self._comms: dict[str, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces or parentheses.
            lpar, rpar = stat.find(b"("), stat.rfind(b")")
            comm = stat[lpar + 1 : rpar].decode(errors="surrogateescape")  # as wgnapid.ifname
            if not comm.startswith("napi/"):
                continue
            fields = stat[rpar + 2 :].split()
            if len(fields) >= 2 and fields[1] == b"2":
                self._comms[comm] = self._comms.get(comm, 0) + 1
        # The text after the device's "-" is the NAPI id: digits, possibly cut
        # (even to nothing) in a 15-character comm. So "napi/wg-long-tu" is
        # wg-long-tunnel's, not wg-long's.
        self._by_dev: dict[str, int] = {}
        for comm, n in self._comms.items():
            for k, ch in enumerate(comm[5:], start=5):
                suffix = comm[k + 1 :]
                if ch == "-" and (suffix.isdigit() or (not suffix and len(comm) == self.COMM_LEN)):
                    self._by_dev[comm[5:k]] = self._by_dev.get(comm[5:k], 0) + n

    def count(self, ifname: str) -> int:
        prefix = f"napi/{ifname}-"
        if len(prefix) <= self.COMM_LEN:
            return self._by_dev.get(ifname, 0)
        return self._comms.get(prefix[: self.COMM_LEN], 0)
