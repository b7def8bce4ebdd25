"""A helper that lives inside one test network namespace.

Started by the tests as ``ip netns exec NS python nsagent.py``, so its
/sys/class/net shows that namespace (ip netns exec remounts sysfs). It answers
one JSON request per stdin line with one JSON line on stdout, and keeps the
file descriptors of the tun links it creates: a tun link lives exactly as long
as its fd. It exits (and so deletes its tun links) when stdin closes.

Standard library only: it must run under either dependency set unchanged.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import resource
import struct
import sys
import time

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TUN, IFF_NO_PI, IFF_NAPI = 0x0001, 0x1000, 0x0010
SYS = "/sys/class/net"


class Agent:
    def __init__(self) -> None:
        self.tuns: dict[str, int] = {}  # name -> fd
        self.extra: list[int] = []  # fds of tun links in other namespaces (tun_in)

    # -- tun links ----------------------------------------------------------

    def _tun(self, name: str) -> int:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI | IFF_NAPI))
        except OSError:
            os.close(fd)
            raise
        return fd

    def tun_create(self, prefix: str, count: int, start: int = 0, persist: bool = False) -> dict:
        """``persist``: TUNSETPERSIST as well. A tun link has NAPI only while an fd
        is attached, so the fds stay open either way; but closing the fd of a
        non-persistent link unregisters it alone (~20 ms each here), while
        persistent links outlive their fds and go in one batch with the namespace:
        the way to end a test with thousands of links quickly."""
        t0 = time.monotonic()
        names = []
        for i in range(start, start + count):
            name = f"{prefix}{i}"
            fd = self._tun(name)
            if persist:
                fcntl.ioctl(fd, TUNSETPERSIST, 1)
            self.tuns[name] = fd
            names.append(name)
        return {"names": names, "seconds": time.monotonic() - t0}

    def tun_in(self, paths: list[str], prefix: str, count: int) -> dict:
        """``count`` tun links ({prefix}0..) in each network namespace of ``paths``
        (/run/netns/X, /proc/PID/ns/net), created from a thread that setns()es
        into each in turn (a tun link is made in the namespace of the thread
        that opens /dev/net/tun). The fds stay open (links with NAPI) until exit."""
        import ctypes
        import threading

        libc = ctypes.CDLL(None, use_errno=True)
        out: dict = {}

        def work():
            try:
                t0 = time.monotonic()
                for path in paths:
                    nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        if libc.setns(nsfd, 0x40000000) != 0:  # CLONE_NEWNET
                            raise OSError(ctypes.get_errno(), f"setns {path}")
                    finally:
                        os.close(nsfd)
                    for i in range(count):
                        self.extra.append(self._tun(f"{prefix}{i}"))
                out["seconds"] = time.monotonic() - t0
            except OSError as exc:
                out["error"] = f"tun_in: {exc}"

        t = threading.Thread(target=work)
        t.start()
        t.join()
        return out

    def tun_close(self, names: list[str] | None = None) -> dict:
        names = list(self.tuns) if names is None else names
        for name in names:
            fd = self.tuns.pop(name, None)
            if fd is not None:
                os.close(fd)
        return {"closed": len(names)}

    def tun_churn(self, prefix: str, count: int, rounds: int = 1) -> dict:
        """Create ``count`` tun links and at once delete them again, ``rounds``
        times, in a tight loop; names are unique ({prefix}{round}x{i})."""
        t0 = time.monotonic()
        made = 0
        for r in range(rounds):
            fds = []
            for i in range(count):
                fds.append(self._tun(f"{prefix}{r}x{i}"))
                made += 1
            for fd in fds:
                os.close(fd)
        return {"created": made, "seconds": time.monotonic() - t0}

    # -- sysfs ----------------------------------------------------------------

    @staticmethod
    def _read(name: str):
        try:
            with open(f"{SYS}/{name}/threaded") as f:
                return int(f.read().strip())
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))

    def read(self, names: list[str]) -> dict:
        return {"values": {name: self._read(name) for name in names}}

    def read_prefix(self, prefix: str) -> dict:
        names = [n for n in os.listdir(SYS) if n.startswith(prefix)]
        return {"values": {name: self._read(name) for name in names}}

    def write(self, name: str, value: int) -> dict:
        try:
            fd = os.open(f"{SYS}/{name}/threaded", os.O_WRONLY)
            try:
                os.write(fd, b"%d\n" % value)
            finally:
                os.close(fd)
        except OSError as exc:
            return {"error": errno.errorcode.get(exc.errno, str(exc.errno))}
        return {"ok": True}

    def links(self) -> dict:
        return {"names": sorted(os.listdir(SYS))}


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    agent = Agent()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        try:
            reply = getattr(agent, op)(**req)
        except OSError as exc:
            reply = {"error": f"{op}: {errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
