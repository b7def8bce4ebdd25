"""Making the links the benchmark measures: tun with IFF_NAPI, multi-queue tun
that gains NAPI later, and veth. Ioctls and raw rtnetlink only, so creating a
link costs the creator as little as possible (see KERNEL-FACTS.md, "Testing
without WireGuard in the host kernel").
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import time

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TUN, IFF_NAPI, IFF_MULTI_QUEUE, IFF_NO_PI = 0x0001, 0x0010, 0x0100, 0x1000

SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCETHTOOL = 0x8913, 0x8914, 0x8946
ETHTOOL_SGRO = 0x2C
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
RTM_NEWLINK = 16
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFLA_IFNAME, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1


def _tun_open(name: str, flags: int, persist: bool) -> tuple[int, int]:
    """(fd, CLOCK_MONOTONIC ns right after TUNSETIFF returned)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
        t0 = time.monotonic_ns()
        if persist:
            # A persistent tun outlives its fd; the bench deletes the whole
            # namespace at the end, which unregisters every link in one batch
            # (closing 10,000 plain tun fds one by one took minutes here).
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
    except BaseException:
        os.close(fd)
        raise
    return fd, t0


def tun_napi(name: str) -> tuple[int, int]:
    """A tun link with a NAPI instance from birth: `threaded` is settable at once.
    Returns (fd, time the link appeared)."""
    return _tun_open(name, IFF_TUN | IFF_NO_PI | IFF_NAPI, persist=True)


def tun_mq_without_napi(name: str) -> tuple[int, int]:
    """A multi-queue tun link whose first queue has no NAPI: writes to
    `threaded` fail with EOPNOTSUPP, like a WireGuard link without a peer."""
    return _tun_open(name, IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE, persist=True)


def tun_mq_attach_napi(name: str) -> tuple[int, int]:
    """Attach a second queue, with NAPI, to a multi-queue tun link. The link
    becomes settable and the kernel sends no rtnetlink message and no uevent of
    subsystem "net" (seen with `ip monitor all` and `udevadm monitor -k` on
    6.18: only "queues" uevents): the stand-in for a first WireGuard peer."""
    return _tun_open(name, IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE | IFF_NAPI, persist=False)


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


class Rtnl:
    """Just enough rtnetlink to create veth pairs."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def veth(self, name: str, peer: str, peer_netns_fd: int) -> None:
        """veth pair `name` (here, down) and `peer` in another namespace."""
        peer_body = (
            _IFINFOMSG.pack(0, 0, 0, 0, 0)
            + _attr(IFLA_IFNAME, peer.encode() + b"\0")
            + _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
        )
        linkinfo = _attr(IFLA_INFO_KIND, b"veth\0") + _attr(
            IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_body)
        )
        body = (
            _IFINFOMSG.pack(0, 0, 0, 0, 0)
            + _attr(IFLA_IFNAME, name.encode() + b"\0")
            + _attr(IFLA_LINKINFO, linkinfo)
        )
        self.seq += 1
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_NEWLINK, flags, self.seq, 0) + body)
        while True:
            buf = self.sock.recv(65536)
            length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(buf, 0)
            if seq != self.seq:
                continue
            if mtype == 2:  # NLMSG_ERROR: an ack carries error 0
                (err,) = struct.unpack_from("=i", buf, _NLMSGHDR.size)
                if err:
                    raise OSError(-err, f"creating veth {name}: {os.strerror(-err)}")
                return


class Ioctl:
    """Link flags and GRO through ioctls on one datagram socket."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def close(self) -> None:
        self.sock.close()

    def set_gro(self, name: str, on: bool) -> None:
        value = ctypes.create_string_buffer(struct.pack("=II", ETHTOOL_SGRO, 1 if on else 0))
        ifr = struct.pack("16sP", name.encode(), ctypes.addressof(value)).ljust(40, b"\0")
        fcntl.ioctl(self.sock, SIOCETHTOOL, ifr)

    def set_up(self, name: str) -> None:
        ifr = struct.pack("16sH", name.encode(), 0).ljust(40, b"\0")
        flags = struct.unpack_from("=H", fcntl.ioctl(self.sock, SIOCGIFFLAGS, ifr), 16)[0]
        fcntl.ioctl(self.sock, SIOCSIFFLAGS, struct.pack("16sH", name.encode(), flags | IFF_UP).ljust(40, b"\0"))


def read_threaded(name: str) -> int | None:
    try:
        with open(f"/sys/class/net/{name}/threaded", "rb", buffering=0) as f:
            return int(f.read(16).strip() or b"-1")
    except (OSError, ValueError):
        return None


def write_threaded(name: str, value: int) -> int:
    """0 on success, else the errno."""
    try:
        fd = os.open(f"/sys/class/net/{name}/threaded", os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        return exc.errno or errno.EIO
    try:
        os.write(fd, b"1" if value else b"0")
        return 0
    except OSError as exc:
        return exc.errno or errno.EIO
    finally:
        os.close(fd)
