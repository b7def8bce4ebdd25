"""The process-events connector (netlink, CONFIG_PROC_EVENTS): new kernel threads, at once.

Kernel behaviour relied on (drivers/connector/cn_proc.c; the bench's
bench/procevents.py measures with the same socket):

- subscribing needs CAP_NET_ADMIN in the initial user namespace, and the
  connector's kernel socket exists only in the initial network namespace: a
  subscription sent from another namespace fails with ECONNREFUSED, and no
  events reach sockets there. A process in another network namespace that
  may setns() (CAP_SYS_ADMIN) opens its socket in the initial one; kthreads
  are global, so that loses nothing;
- PROC_EVENT_FORK is sent from copy_process(), before kthreadd has named the
  new kthread (it is still "kthreadd" then): the name is read a moment later;
- 6.6+ takes an event mask with the subscription (struct proc_input);
  older kernels ignore such a request, so they get the plain one. A socket
  filter (classic BPF) passes only forks by kthreadd and renames either way,
  so the machine's other forks, execs and exits never wake the daemon.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import sys
import threading

from wgnapid.links import Overflow, recv_pending  # noqa: F401 - Overflow (events lost: look at every thread again) is raised here and caught by placement

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
PROC_EVENT_FORK, PROC_EVENT_COMM = 0x1, 0x200
KTHREADD = 2
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
CLONE_NEWNET = 0x40000000
EVENT_MASK_SINCE = (6, 6)
RCVBUF = 4 << 20

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT = struct.Struct("=IIQ")
_FORK = struct.Struct("=IIII")  # parent pid, parent tgid, child pid, child tgid
_COMM = struct.Struct("=II")  # process pid, process tgid
_EV_OFF = _NLMSGHDR.size + _CN_MSG.size  # 36: struct proc_event
_DATA_OFF = _EV_OFF + _EVENT.size  # 52: its event_data


class Unavailable(Exception):
    """The connector cannot be used here; the message says why in one line."""


def _be(value: int) -> int:
    """A host-order u32 as classic BPF's word load sees it (network order)."""
    return int.from_bytes(value.to_bytes(4, sys.byteorder), "big")


def _filter() -> tuple[bytes, ctypes.Array]:
    """BPF: accept FORK whose parent is kthreadd, and COMM (its jump lands on the
    fork branch's "accept"); drop everything else. Returns (struct sock_fprog,
    the instructions it points to, which must live until setsockopt returns)."""
    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    prog = [
        (ld_w_abs, 0, 0, _EV_OFF),  # what
        (jeq_k, 2, 0, _be(PROC_EVENT_FORK)),
        (jeq_k, 3, 0, _be(PROC_EVENT_COMM)),
        (ret_k, 0, 0, 0),
        (ld_w_abs, 0, 0, _DATA_OFF),  # fork: parent pid
        (jeq_k, 0, 1, _be(KTHREADD)),
        (ret_k, 0, 0, 0xFFFF),
        (ret_k, 0, 0, 0),
    ]
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    return fprog, buf


class ProcEvents:
    """A subscribed connector socket. ``fileno()`` for select; ``read()`` gives
    the PIDs of new kthreads and of renamed tasks. Raises Unavailable."""

    def __init__(self, kernel_version: tuple[int, int, int] | None = None):
        self.mask = kernel_version is not None and kernel_version[:2] >= EVENT_MASK_SINCE
        self.where = "this network namespace"
        try:
            self.sock = self._open()
        except OSError as exc:
            if exc.errno != errno.ECONNREFUSED:
                raise Unavailable(f"process-events connector: {exc.strerror}") from None
            self.sock = self._open_in_initial_netns()
            self.where = "the initial network namespace"

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
        try:
            fprog, buf = _filter()
            sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            del buf
            for opt in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
                    break
                except OSError:
                    continue
            sock.bind((0, CN_IDX_PROC))
            self._send(sock, PROC_CN_MCAST_LISTEN)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _open_in_initial_netns(self) -> socket.socket:
        """setns() in a helper thread (only that thread moves), open there."""
        out: list = []

        def run() -> None:
            try:
                fd = os.open("/proc/2/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    libc = ctypes.CDLL(None, use_errno=True)
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err))
                finally:
                    os.close(fd)
                out.append(self._open())
            except OSError as exc:
                out.append(exc)

        t = threading.Thread(target=run, name="wgnapid-procevents-open")
        t.start()
        t.join()
        if isinstance(out[0], OSError):
            raise Unavailable(
                "process-events connector: it works only in the initial network namespace, and "
                f"entering it failed ({out[0].strerror})"
            )
        return out[0]

    def _send(self, sock: socket.socket, op: int) -> None:
        if self.mask and op == PROC_CN_MCAST_LISTEN:
            payload = struct.pack("=II", op, PROC_EVENT_FORK | PROC_EVENT_COMM)
        else:
            payload = struct.pack("=I", op)
        cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(cn), 3, 0, 0, 0) + cn)  # NLMSG_DONE

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[int]:
        """PIDs of kthreads forked and of tasks renamed since the last read.
        Raises Overflow when events were lost."""
        pids: list[int] = []
        while True:
            buf = recv_pending(self.sock, 1 << 16)
            if buf is None:
                return pids
            off = 0
            while off + _NLMSGHDR.size <= len(buf):
                length = _NLMSGHDR.unpack_from(buf, off)[0]
                if length < _NLMSGHDR.size or off + length > len(buf):
                    break
                if length >= _DATA_OFF + _COMM.size:
                    what = _EVENT.unpack_from(buf, off + _EV_OFF)[0]
                    if what == PROC_EVENT_FORK and length >= _DATA_OFF + _FORK.size:
                        ppid, _ptgid, pid, _tgid = _FORK.unpack_from(buf, off + _DATA_OFF)
                        if ppid == KTHREADD:
                            pids.append(pid)
                    elif what == PROC_EVENT_COMM:
                        pids.append(_COMM.unpack_from(buf, off + _DATA_OFF)[0])
                off += (length + 3) & ~3

    def close(self) -> None:
        try:
            self._send(self.sock, PROC_CN_MCAST_IGNORE)
        except OSError:
            pass
        self.sock.close()
