"""Where links come from: link dumps, link events (rtnetlink or udev), WireGuard peers.

Link messages are parsed by a minimal rtnetlink reader here rather than by
pyroute2's message classes: decoding every attribute of a tun RTM_NEWLINK event
cost 359-367 us with pyroute2 0.9.7/0.7.7 (bench/RESULTS.md, "Parsing one
RTM_NEWLINK event"), and the daemon needs three fields (ifindex, name, kind).
pyroute2 serves the WireGuard generic-netlink query, where its protocol
knowledge is the point. Walking a message's ~32 attributes before
IFLA_LINKINFO still costs 15-20 us in Python (0.2 s per resync at 10,000
links), 0.5 us in C: ``link_messages`` runs wgnapid/_hotpath.c when it is
built, and the Python below (the reference, tested to give the same answers)
otherwise.

Events are hints: every consumer re-reads the truth from the kernel.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from wgnapid.accel import hotpath

NETLINK_ROUTE = 0
NETLINK_GENERIC = 16
RTMGRP_LINK = 0x1
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x2, 0x10, 0x300
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINKINFO, IFLA_INFO_KIND = 1, 3, 18, 1
IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS = 29, 0x8

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
_RECV_SIZE = 1 << 20
EVENT_RCVBUF = 4 << 20  # big enough for ordinary bursts; overflow is still handled
# Events handed over per read: a batch is evaluated (and written, in parallel)
# before the next read, so this bounds how long the first link of a batch waits
# for the last. The rest stay queued in the socket, which stays readable.
MAX_BATCH = 64


class Overflow(Exception):
    """The kernel dropped events (ENOBUFS): only a full re-list is correct now."""


@dataclass(frozen=True, slots=True)
class Link:
    ifindex: int
    name: str  # the kernel's bytes, decoded losslessly (wgnapid.ifname.decode)
    kind: str  # IFLA_INFO_KIND, "" when the driver has none (e.g. loopback)
    address: bytes | None = None  # IFLA_ADDRESS; None when the message has none (tun)


@dataclass(frozen=True, slots=True)
class LinkEvent:
    ifindex: int
    removed: bool
    link: Link | None  # None when the source only knows the index


def _attrs(data: memoryview, offset: int, end: int):
    while offset + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4:
            return
        yield kind & 0x3FFF, offset + 4, min(offset + length, end)
        offset += (length + 3) & ~3


def _cstring(data: memoryview, start: int, stop: int) -> str:
    # Lossless (surrogateescape), as wgnapid.ifname.decode: names are bytes.
    return bytes(data[start:stop]).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def parse_link(data: memoryview, offset: int, end: int) -> Link | None:
    """Parse one ifinfomsg + attributes (without the nlmsghdr).

    The hot path of every event and dump: a plain loop that stops as soon as
    the kind is known (IFLA_LINKINFO comes after IFLA_IFNAME in the kernel's
    messages), not a walk over every attribute.
    """
    if end - offset < _IFINFOMSG.size:
        return None  # too short to be a link message
    _family, _type, ifindex, _flags, _change = _IFINFOMSG.unpack_from(data, offset)
    name, kind, address = "", "", None
    unpack = _RTATTR.unpack_from
    offset += _IFINFOMSG.size
    while offset + 4 <= end:
        length, attr = unpack(data, offset)
        if length < 4:
            break
        attr &= 0x3FFF
        if attr == IFLA_IFNAME:
            name = _cstring(data, offset + 4, min(offset + length, end))
        elif attr == IFLA_ADDRESS:
            address = bytes(data[offset + 4 : min(offset + length, end)])
        elif attr == IFLA_LINKINFO:
            for sub, s_start, s_stop in _attrs(data, offset + 4, min(offset + length, end)):
                if sub == IFLA_INFO_KIND:
                    kind = _cstring(data, s_start, s_stop)
                    break
            if name:
                break
        offset += (length + 3) & ~3
    return Link(ifindex, name, kind, address)


def _messages(buf: bytes):
    data = memoryview(buf)
    offset = 0
    while offset + _NLMSGHDR.size <= len(buf):
        length, mtype, flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(buf):
            return  # malformed or cut: nothing after it can be trusted
        yield mtype, flags, seq, data, offset + _NLMSGHDR.size, offset + length
        offset += (length + 3) & ~3


def _link_messages_py(buf: bytes) -> list[tuple[int, int, int, object]]:
    """The Python reference of ``link_messages``."""
    out = []
    for mtype, flags, seq, data, start, end in _messages(buf):
        body = None
        if mtype == RTM_NEWLINK or mtype == RTM_DELLINK:
            link = parse_link(data, start, end)
            body = None if link is None else (link.ifindex, link.name, link.kind, link.address)
        elif mtype == NLMSG_ERROR and end - start >= 4:
            (body,) = struct.unpack_from("=i", data, start)
        out.append((mtype, flags, seq, body))
    return out


# link_messages(buf) -> [(type, flags, seq, body)]: every message of one netlink
# datagram, in order, up to the first malformed or cut one. body: for
# RTM_NEWLINK/RTM_DELLINK the fields of Link (ifindex, name, kind, address), or
# None when the message is too short for an ifinfomsg; for NLMSG_ERROR the
# (negative) error number, None when too short; else None.
link_messages = hotpath.link_messages if hotpath is not None else _link_messages_py


def recv_pending(sock: socket.socket, size: int) -> bytes | None:
    """One datagram from a non-blocking netlink event socket, or None when none
    is pending. Raises Overflow on ENOBUFS (the kernel dropped events for this
    socket: only a full re-read is correct now), other OSErrors as they are."""
    try:
        return sock.recv(size)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOBUFS:
            raise Overflow() from None
        raise


def _socket(groups: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    sock.bind((0, groups))
    return sock


class Rtnl:
    """Requests: link dumps and single-link lookups, on their own socket so that
    replies never interleave with events."""

    def __init__(self) -> None:
        self.sock = _socket(0)
        self.sock.settimeout(5)
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def _request(self, flags: int, ifindex: int = 0) -> int:
        self._seq += 1
        # Skip statistics: they are most of each reply's size and unused here.
        ext = _RTATTR.pack(8, IFLA_EXT_MASK) + struct.pack("=I", RTEXT_FILTER_SKIP_STATS)
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0) + ext
        hdr = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETLINK, flags, self._seq, 0)
        self.sock.send(hdr + body)
        return self._seq

    def dump(self) -> tuple[list[Link], bool]:
        """One link dump: (links, interrupted). An interrupted dump (NLM_F_DUMP_INTR:
        links changed meanwhile) may miss links."""
        seq = self._request(NLM_F_REQUEST | NLM_F_DUMP)
        links: list[Link] = []
        interrupted = False
        while True:
            for mtype, flags, mseq, body in link_messages(self.sock.recv(_RECV_SIZE)):
                if mseq != seq:
                    continue
                interrupted |= bool(flags & NLM_F_DUMP_INTR)
                if mtype == NLMSG_DONE:
                    return links, interrupted
                if mtype == NLMSG_ERROR:
                    if body:
                        raise OSError(-body, os.strerror(-body))
                elif mtype == RTM_NEWLINK and body is not None:
                    links.append(Link(*body))

    def dump_consistent(self, attempts: int = 5) -> tuple[list[Link], bool]:
        """Repeat the dump while the kernel says it raced changes. Returns
        (links, consistent); after the last attempt the possibly incomplete list
        is returned, and the caller's next resync completes it."""
        for _ in range(attempts):
            links, interrupted = self.dump()
            if not interrupted:
                return links, True
        return links, False

    def get(self, ifindex: int) -> Link | None:
        """The link with this index now, or None when it does not exist."""
        seq = self._request(NLM_F_REQUEST, ifindex)
        while True:
            for mtype, _flags, mseq, body in link_messages(self.sock.recv(_RECV_SIZE)):
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    err = body or 0
                    if err in (-errno.ENODEV, -errno.ENOENT):
                        return None
                    raise OSError(-err, os.strerror(-err))
                if mtype == RTM_NEWLINK and body is not None:
                    return Link(*body)


class NetlinkSource:
    """Link events from rtnetlink, subscribed to RTMGRP_LINK only."""

    name = "netlink"

    def __init__(self, rtnl: Rtnl) -> None:
        self.sock = _socket(RTMGRP_LINK)
        try:
            # SO_RCVBUFFORCE (root) can exceed net.core.rmem_max.
            self.sock.setsockopt(socket.SOL_SOCKET, 33, EVENT_RCVBUF)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, EVENT_RCVBUF)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def read(self) -> list[LinkEvent]:
        """What is pending now, up to about MAX_BATCH events. Raises Overflow when
        events were lost."""
        events: list[LinkEvent] = []
        while len(events) < MAX_BATCH:
            buf = recv_pending(self.sock, _RECV_SIZE)
            if buf is None:
                return events
            for mtype, _flags, _seq, body in link_messages(buf):
                if (mtype == RTM_NEWLINK or mtype == RTM_DELLINK) and body is not None:
                    events.append(LinkEvent(body[0], mtype == RTM_DELLINK, Link(*body)))
        return events


class UdevSource:
    """Link events from kernel uevents (SUBSYSTEM=net) through pyudev.

    Kernel uevents rather than udevd's re-broadcast: they reach listeners in
    every network namespace (udevd's only in its own) and do not depend on
    udevd running. WireGuard names are chosen by whoever creates the link, so
    udev renaming rules do not apply; a rename emits an event of its own.
    DEVTYPE gives the kind where the driver sets one (WireGuard does); veth
    and tun carry none, so the kind is then asked of rtnetlink.
    """

    name = "udev"

    def __init__(self, rtnl: Rtnl) -> None:
        import pyudev

        self._rtnl = rtnl
        self.monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
        self.monitor.filter_by("net")
        try:
            self.monitor.set_receive_buffer_size(EVENT_RCVBUF)
        except (OSError, EnvironmentError):
            pass
        self.monitor.start()

    def fileno(self) -> int:
        return self.monitor.fileno()

    def close(self) -> None:
        # pyudev has no close(); dropping the monitor frees the socket.
        self.monitor = None

    def read(self) -> list[LinkEvent]:
        events: list[LinkEvent] = []
        while len(events) < MAX_BATCH:
            try:
                device = self.monitor.poll(timeout=0)
            except OSError as exc:
                # On ENOBUFS the socket reports POLLERR, and pyudev (0.24.x) raises
                # an OSError without errno ("Error while polling fd") before reading.
                if exc.errno in (errno.ENOBUFS, None):
                    raise Overflow() from None
                raise
            if device is None:
                break
            props = device.properties
            try:
                ifindex = int(props.get("IFINDEX", ""))
            except ValueError:
                continue
            if device.action == "remove":
                events.append(LinkEvent(ifindex, True, None))
                continue
            try:
                name, devtype = props.get("INTERFACE", ""), props.get("DEVTYPE")
            except UnicodeDecodeError:
                # pyudev decodes strictly, and a name need not be UTF-8
                # (wgnapid.ifname): rtnetlink gives the bytes.
                name, devtype = "", None
            if devtype and name:
                events.append(LinkEvent(ifindex, False, Link(ifindex, name, devtype)))
            else:
                events.append(LinkEvent(ifindex, False, None))  # kind asked of rtnetlink
        return events


class WireGuardGenl:
    """WireGuard's generic-netlink requests (WG_CMD_GET_DEVICE) on a plain
    NETLINK_GENERIC socket of its own, made in the calling thread's network
    namespace: wgnapid.netns.NetNamespace.wireguard() makes it inside the
    namespace it serves. WireGuard looks the link up in the namespace of the
    socket that asks (``sock_net(skb->sk)`` in lookup_interface,
    drivers/net/wireguard/netlink.c), so a socket serves its namespace only.

    Not a pyroute2 socket object: pyroute2 0.9's objects keep one socket per calling
    thread, and one used from another thread than the one that made it opens
    a new socket there, in that thread's namespace (docs/DESIGN.md, "Stall
    watch"): asked from the daemon's loop, it would answer for the daemon's
    own namespace. pyroute2's message classes still encode and decode; they
    are imported on first use (~0.3 s on a host, 10 s and more under TCG:
    wgnapid.stallwatch.WireGuardReader imports them on a thread first).
    Raises OSError for every failure: ENOENT when there is no wireguard
    family (module not loaded), ENODEV when there is no such link,
    EOPNOTSUPP when it is not WireGuard, EINTR when the peer list kept
    changing during DUMP_ATTEMPTS dumps, timeouts after 5 s.
    """

    DUMP_ATTEMPTS = 5

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_GENERIC)
        self.sock.settimeout(5)
        self._seq = 0
        self._family: int | None = None

    def close(self) -> None:
        self.sock.close()

    def _request(self, msg, msg_type: int, flags: int) -> list[bytes]:
        """Send ``msg`` (a pyroute2 genlmsg); the raw replies of type ``msg_type``.
        A dump the kernel marked NLM_F_DUMP_INTR (the device changed meanwhile:
        wg_get_device_dump ends it early, genl_dump_check_consistent) is asked
        again, up to DUMP_ATTEMPTS times."""
        for _ in range(self.DUMP_ATTEMPTS):
            out, interrupted = self._request_once(msg, msg_type, flags)
            if not interrupted:
                return out
        raise OSError(errno.EINTR, "the peer list changed during every dump")

    def _request_once(self, msg, msg_type: int, flags: int) -> tuple[list[bytes], bool]:
        self._seq += 1
        seq = self._seq
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = seq
        msg.encode()
        self.sock.send(msg.data)
        out: list[bytes] = []
        interrupted = False
        while True:
            buf = self.sock.recv(_RECV_SIZE)
            off = 0
            while off + _NLMSGHDR.size <= len(buf):
                length, mtype, mflags, mseq, _pid = _NLMSGHDR.unpack_from(buf, off)
                if length < _NLMSGHDR.size or off + length > len(buf):
                    break
                if mseq == seq:  # else a reply to an earlier request, left after an error
                    interrupted |= bool(mflags & NLM_F_DUMP_INTR)
                    if mtype in (NLMSG_ERROR, NLMSG_DONE):
                        err = (struct.unpack_from("=i", buf, off + _NLMSGHDR.size)[0]
                               if length >= _NLMSGHDR.size + 4 else 0)
                        if err < 0:
                            raise OSError(-err, os.strerror(-err))
                        return out, interrupted
                    if mtype == msg_type:
                        out.append(buf[off:off + length])
                        if not mflags & NLM_F_MULTI:
                            return out, interrupted  # a single reply, no NLMSG_DONE
                off += (length + 3) & ~3

    def family(self) -> int:
        """The wireguard family's id (ids are global, not per namespace), asked
        once and again after ENOENT: reloading the module gives the family a
        new id (allocated cyclically, net/netlink/genetlink.c)."""
        if self._family is None:
            self._family = self.family_id("wireguard")
        return self._family

    def family_id(self, name: str) -> int:
        """CTRL_CMD_GETFAMILY: the id of the generic-netlink family ``name``.
        Raises OSError (ENOENT: no such family)."""
        from pyroute2.netlink import CTRL_CMD_GETFAMILY, GENL_ID_CTRL, ctrlmsg

        msg = ctrlmsg()
        msg["cmd"] = CTRL_CMD_GETFAMILY
        msg["version"] = 1
        msg["attrs"] = [["CTRL_ATTR_FAMILY_NAME", name]]
        for raw in self._request(msg, GENL_ID_CTRL, NLM_F_REQUEST):
            reply = ctrlmsg(raw)
            reply.decode()
            found = reply.get_attr("CTRL_ATTR_FAMILY_ID")
            if found is not None:
                return found
        raise OSError(errno.ENOENT, f"no {name} generic-netlink family")

    def device(self, ifindex: int) -> list:
        """WG_CMD_GET_DEVICE of the link ``ifindex`` in this socket's namespace
        (by ifindex, never by name: a name can pass to another link between
        our read and the kernel's lookup): its pyroute2 wgmsg replies, decoded
        (a link with many peers takes several). Raises OSError (ENODEV: no
        such link; EOPNOTSUPP: not a WireGuard link)."""
        from pyroute2.netlink.generic.wireguard import WG_CMD_GET_DEVICE, wgmsg

        msg = wgmsg()
        msg["cmd"] = WG_CMD_GET_DEVICE
        msg["version"] = 1
        msg["attrs"] = [["WGDEVICE_A_IFINDEX", ifindex]]
        try:
            raws = self._request(msg, self.family(), NLM_F_REQUEST | NLM_F_DUMP)
        except OSError as exc:
            if exc.errno != errno.ENOENT or self._family is None:
                raise
            self._family = None  # the module was reloaded: its family has a new id
            raws = self._request(msg, self.family(), NLM_F_REQUEST | NLM_F_DUMP)
        replies = []
        for raw in raws:
            reply = wgmsg(raw)
            reply.decode()
            replies.append(reply)
        return replies

    def peer_count(self, ifindex: int) -> int:
        """Peers of the WireGuard link ``ifindex``. Raises OSError."""
        return sum(len(m.get_attr("WGDEVICE_A_PEERS") or ()) for m in self.device(ifindex))
