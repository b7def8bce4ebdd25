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

# Root without CAP_NET_ADMIN (a unit's CapabilityBoundingSet=, a container).
ROOT_PERMISSION_HINT = (
    "needs CAP_NET_ADMIN in the link's network namespace (missing from this "
    "process's capabilities: CapabilityBoundingSet=, or a container's limits)"
)

_GONE_ERRNOS = {errno.ENOENT, errno.ENODEV, errno.EINVAL, errno.ENXIO}


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
        return Result(Outcome.NOT_SETTABLE, detail="no NAPI instance yet")
    if err in _GONE_ERRNOS:
        return Result(Outcome.GONE, detail=f"{action}: {os.strerror(err)}")
    if err == errno.EROFS:
        where = read_only_hint(device_dir) if device_dir else "sysfs is mounted read-only here"
        return Result(Outcome.PERMISSION, detail=f"{action}: {os.strerror(err)}: {where}")
    if err in (errno.EPERM, errno.EACCES):
        hint = ROOT_PERMISSION_HINT if os.geteuid() == 0 else PERMISSION_HINT
        return Result(Outcome.PERMISSION, detail=f"{action}: {os.strerror(err)}; {hint}")
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

    def device_dir(self, ifname: str) -> str:
        """The link's sysfs directory with symlinks resolved (/sys/devices/.../net/DEV)."""
        return os.path.realpath(f"{self.root}/{ifname}")

    def writable(self, ifname: str) -> str | None:
        """None when this process may write the link's `threaded`, else why not.

        Changes nothing: statvfs() for a read-only mount (ST_RDONLY: the
        per-mount flag systemd's ProtectKernelTunables= sets), then access(W_OK)
        with the effective ids for the file's permission bits. CAP_NET_ADMIN,
        checked by the kernel on the write itself, is the privileges check's.
        """
        try:
            path = self.path(ifname)
            if os.statvfs(os.path.dirname(path)).f_flag & os.ST_RDONLY:
                return f"Read-only file system: {read_only_hint(self.device_dir(ifname))}"
            if not os.access(path, os.W_OK, effective_ids=True):
                return f"no write permission on {path}; {PERMISSION_HINT}"
        except (OSError, ValueError) as exc:
            return str(exc)
        return None

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
            return _classify(exc, "open", self._device_dir_or_none(ifname, exc))

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
            return _classify(exc, "open for write", self._device_dir_or_none(op.ifname, exc))
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

    def _device_dir_or_none(self, ifname: str, exc: OSError) -> str | None:
        # Only an EROFS message names the directory: resolve it only then.
        return self.device_dir(ifname) if exc.errno == errno.EROFS else None

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


class NapiThreads:
    """Kernel threads named napi/<dev>-<id>, counted per device.

    One scan of /proc serves every link (status lists many at once). Kernel
    threads have PPid 2 (kthreadd). The kernel cuts a thread's comm to 15
    characters, so for long device names the id, or part of the name, is cut.
    """

    COMM_LEN = 15

    def __init__(self) -> None:
        self._comms: dict[str, int] = {}
        # In a PID namespace of its own (a container, systemd's guest) no kernel
        # thread is visible: PID 2 is then not kthreadd (PPid 0). Counts would
        # say 0 where the truth is unknown.
        self.visible = self._kthreadd_visible()
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
            comm = stat[lpar + 1 : rpar].decode(errors="replace")
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

    @staticmethod
    def _kthreadd_visible() -> bool:
        try:
            with open("/proc/2/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return False
        fields = stat[stat.rfind(b")") + 2 :].split()
        return stat[stat.find(b"(") + 1 : stat.rfind(b")")] == b"kthreadd" and fields[1:2] == [b"0"]

    def count(self, ifname: str) -> int:
        prefix = f"napi/{ifname}-"
        if len(prefix) <= self.COMM_LEN:
            return self._by_dev.get(ifname, 0)
        return self._comms.get(prefix[: self.COMM_LEN], 0)
