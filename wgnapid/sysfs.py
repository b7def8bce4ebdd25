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
import re
from dataclasses import dataclass

DEFAULT_ROOT = "/sys/class/net"

# Kernel rule (dev_valid_name): 1-15 bytes, not "." or "..", no "/", ":" or
# whitespace. Checked before a name is ever joined into a path.
_IFNAME_RE = re.compile(r"[^/:\s\0]{1,15}")


def valid_ifname(name: str) -> bool:
    return (
        isinstance(name, str)
        and name not in (".", "..")
        and _IFNAME_RE.fullmatch(name) is not None
        and len(name.encode()) <= 15
    )


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


def _classify(exc: OSError, action: str) -> Result:
    err = exc.errno
    if err == errno.EOPNOTSUPP:
        return Result(Outcome.NOT_SETTABLE, detail="no NAPI instance yet")
    if err in _GONE_ERRNOS:
        return Result(Outcome.GONE, detail=f"{action}: {os.strerror(err)}")
    if err in (errno.EPERM, errno.EACCES, errno.EROFS):
        return Result(Outcome.PERMISSION, detail=f"{action}: {os.strerror(err)}; {PERMISSION_HINT}")
    return Result(Outcome.ERROR, detail=f"{action}: {exc.strerror or exc}")


@dataclass(slots=True)
class Opened:
    """A link's `threaded` attribute, open (see ThreadedAttr.open)."""

    ifname: str
    fd: int
    writable: bool


class ThreadedAttr:
    """Reads and writes the `threaded` attribute of links under one sysfs root."""

    def __init__(self, root: str = DEFAULT_ROOT):
        self.root = root

    def path(self, ifname: str) -> str:
        if not valid_ifname(ifname):
            raise ValueError(f"invalid interface name {ifname!r}")
        return f"{self.root}/{ifname}/threaded"

    def supported(self) -> bool:
        """Whether this kernel has the attribute at all (5.12+): look at `lo`."""
        return os.path.exists(f"{self.root}/lo/threaded")

    def open(self, ifname: str, *, write: bool = True) -> Opened | Result:
        """One open for a read, a write and the read-back (each kernfs open costs
        about as much as the read itself). Where the file cannot be opened for
        writing (not root, read-only sysfs), it is opened for reading, and a
        write then fails with the reason."""
        try:
            path = self.path(ifname)
        except ValueError as exc:
            return Result(Outcome.ERROR, detail=str(exc))
        try:
            if write:
                try:
                    return Opened(ifname, os.open(path, os.O_RDWR | os.O_CLOEXEC), True)
                except OSError as exc:
                    if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                        raise
            return Opened(ifname, os.open(path, os.O_RDONLY | os.O_CLOEXEC), False)
        except OSError as exc:
            return _classify(exc, "open")

    def read_opened(self, op: Opened) -> Result:
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
        if value not in (0, 1):
            raise ValueError(f"threaded value must be 0 or 1, not {value!r}")
        data = b"1\n" if value else b"0\n"
        try:
            # Opened read-only: this open fails with the reason (EACCES, EROFS...).
            fd = op.fd if op.writable else os.open(self.path(op.ifname), os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            return _classify(exc, "open for write")
        try:
            # One write: a write racing device removal can return 0 bytes
            # instead of failing, so anything short is a failure.
            written = os.pwrite(fd, data, 0)
        except OSError as exc:
            return _classify(exc, "write")
        finally:
            if fd != op.fd:
                os.close(fd)
        if written != len(data):
            return Result(Outcome.GONE, detail=f"short write ({written} of {len(data)} bytes)")
        return Result(Outcome.OK, value=value)

    def close(self, op: Opened) -> None:
        os.close(op.fd)

    def shows(self, names: list[str]) -> bool:
        """Whether this sysfs shows these links (rtnetlink's view of our namespace).

        /sys shows the namespace of whoever mounted it, not of the process
        (KERNEL-FACTS.md): a daemon setns()'d elsewhere without remounting
        would read and write other links of the same name, or none.
        """
        try:
            present = set(os.listdir(self.root))
        except OSError:
            return False
        return all(name in present for name in names)

    def read(self, ifname: str) -> Result:
        op = self.open(ifname, write=False)
        if isinstance(op, Result):
            return op
        try:
            return self.read_opened(op)
        finally:
            self.close(op)

    def write(self, ifname: str, value: int) -> Result:
        if value not in (0, 1):
            raise ValueError(f"threaded value must be 0 or 1, not {value!r}")
        op = self.open(ifname)
        if isinstance(op, Result):
            return op
        try:
            return self.write_opened(op, value)
        finally:
            self.close(op)

