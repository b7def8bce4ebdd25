"""The one logging setup: journald through libsystemd, or plain stderr lines.

Per-link entries carry INTERFACE, IFINDEX, WGNAPID_NETNS (the network
namespace's nsfs inode: a link is (netns, ifindex)), WGNAPID_RULE,
WGNAPID_STATE and a MESSAGE_ID that is stable per kind of event, so operators
can filter with ``journalctl MESSAGE_ID=...`` or ``journalctl INTERFACE=wg0``.
INTERFACE holds the kernel's bytes exactly (a name need not be UTF-8); the
MESSAGE text shows the name escaped (wgnapid.ifname.printable).

Logging never stops or blocks enforcement. Entries go to journald through
libsystemd's sd_journal_sendv(3) (the library encodes the native protocol,
binary-safe form included), called by one logger thread that takes them from
a bounded queue (JOURNAL_QUEUE entries, FIFO, so order is kept). The send
blocks while journald does not read (its socket queue full, journald hung or
stopped): then the queue fills and the event loop writes to stderr instead of
waiting. systemd-python's journal.send() calls the same function but keeps
the GIL while it blocks (235: its _journal extension imports no
PyEval_SaveThread, and a second thread stops running while one send waits),
which would freeze every thread of the daemon until the watchdog kills it;
ctypes releases the GIL for the call, so a stuck send holds up only the logger
thread (tests/integration/test_journal_stall.py).

When a send fails (ECONNREFUSED: journald gone, its socket file left behind;
ENOENT: no socket, which libsystemd would drop silently, so each send is
preceded by a real connect(), journald_reachable) or the queue is full, that
entry and the following ones go to stderr, the outage is reported once, and
journald is tried again at most every JOURNAL_RETRY seconds; its return is
said once ("journal-back"). At exit (atexit) the queue is flushed for at most
JOURNAL_FLUSH seconds, then what is left goes to stderr.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import errno
import os
import queue
import socket
import sys
import syslog
import threading
import time
from typing import Callable, Sequence

from wgnapid import ifname

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "wgnapid"

# Stable per kind of event; never change a published one.
MESSAGE_IDS = {
    "started": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7701",
    "stopping": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7702",
    "reloaded": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7703",
    "reload-failed": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7704",
    "kernel-guard": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7705",
    "kernel-native": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7706",
    "resync": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7707",
    "source-overflow": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7708",
    "error": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7709",
    # the kernel itself enables threaded NAPI on WireGuard and the guard calls it
    # risky (CVE-2026-52945 window): warning, once per run
    "kernel-native-risky": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7750",
    # per-link state changes
    "link-threaded": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7710",
    "link-off": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7711",
    "link-waiting": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7712",
    "link-held": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7713",
    "link-native": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7714",
    "link-failed": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7715",
    "link-gone": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7716",
    "link-ignored": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7717",
    "link-unmatched": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7718",
    # what a full pass (start-up, reload) found and did (wgnapid/summary.py)
    "pass-summary": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7780",
    "nothing-to-do": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7781",
    # run --watch-policy saw the policy files change (wgnapid/policywatch.py)
    "policy-changed": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7782",
    # issue 11
    "config-invalid": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7740",  # policy error at start-up: exit 78
    "journal-unreachable": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7741",  # logging fell back to stderr
    "journal-back": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7742",  # journald reachable again
    "config-warning": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7743",  # policy accepted, with a doubtful key
    # NAPI thread placement and metrics (issue 15)
    "placement": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7770",
    "placement-failed": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7771",
    "placement-ambiguous": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7772",
    "procevents": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7773",
    "metrics": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7774",
    # network namespaces (daemon.namespaces = "all")
    "netns-entered": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7730",
    "netns-released": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7731",
    "netns-renamed": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7732",
    "netns-failed": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7733",
    # stall watch (per WireGuard peer)
    "peer-stalled": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7760",
    "peer-stall-recovered": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7761",
    "peer-stall-forgotten": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7762",
    "peer-stall-unread": "6b3fd9a2c6a44a3c9a3f2d8e5a1c7763",
}

LEVELS = {
    "debug": syslog.LOG_DEBUG,
    "info": syslog.LOG_INFO,
    "notice": syslog.LOG_NOTICE,
    "warning": syslog.LOG_WARNING,
    "error": syslog.LOG_ERR,
}
_NAMES = {v: k for k, v in LEVELS.items()}


JOURNAL_RETRY = 10.0  # seconds between attempts to reach journald again after a failure


def journald_reachable(path: str = JOURNAL_SOCKET) -> str | None:
    """None when journald accepts datagrams at ``path``, else why not (one line).

    A real connect(), not a look at the file: a socket file left behind by a
    journald that is gone refuses the connection (ECONNREFUSED). `doctor` and
    ``--log-target auto`` use this same test.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


def journal_available() -> bool:
    """Whether journald is reachable (kept for callers of the old name)."""
    return journald_reachable() is None


JOURNAL_QUEUE = 4096  # entries waiting for the logger thread; beyond: stderr
JOURNAL_FLUSH = 1.0  # seconds, at most, spent at exit getting queued entries out


def _field(key: str, value) -> bytes:
    """``b"KEY=value"``: bytes exactly (INTERFACE= holds a link name's kernel
    bytes), anything else as UTF-8 text."""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
    return key.encode() + b"=" + data


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_char_p), ("iov_len", ctypes.c_size_t)]


class _Sendv:
    """libsystemd's sd_journal_sendv(3), called with the GIL released (ctypes
    releases it around every foreign call).

    ``__call__(fields)``: ``fields`` are ``b"KEY=value"`` items; a value may
    hold any bytes, newlines included (libsystemd picks the binary-safe form).
    Raises OSError with the errno libsystemd returns (ECONNREFUSED, EAGAIN,
    ...); returns without error on ENOENT (libsystemd drops the entry).
    Blocks while journald's socket queue is full (libsystemd's socket is
    blocking), so only the logger thread calls it. It always sends to
    /run/systemd/journal/socket (JOURNAL_SOCKET). ``__init__`` raises OSError
    when libsystemd cannot be loaded.
    """

    def __init__(self):
        try:
            lib = ctypes.CDLL("libsystemd.so.0")  # the SONAME: no ldconfig run
        except OSError:
            lib = ctypes.CDLL(ctypes.util.find_library("systemd") or "libsystemd.so")
        self._fn = lib.sd_journal_sendv
        self._fn.argtypes = [ctypes.POINTER(_IOVec), ctypes.c_int]
        self._fn.restype = ctypes.c_int

    def __call__(self, fields: Sequence[bytes]) -> None:
        iov = (_IOVec * len(fields))(*[_IOVec(f, len(f)) for f in fields])
        r = self._fn(iov, len(fields))
        if r < 0:
            raise OSError(-r, os.strerror(-r))


class Log:
    """Events to journald (``target`` "journal"), stderr, or "auto" (journald when
    journald_reachable(), else stderr). With "journal", a journald that is not
    reachable or not reading (at start or later) means stderr until it is
    again, said once per outage (see the module docstring): a log call never
    raises and never blocks.

    ``send``: takes a list of ``b"KEY=value"`` fields, raises OSError; the
    default is libsystemd's sd_journal_sendv (_Sendv). ``journal_path``: the
    socket the reachability test connects to before each send. ``clock``:
    seconds, monotonic."""

    def __init__(self, target: str = "auto", level: str = "info", *,
                 journal_path: str = JOURNAL_SOCKET, clock=time.monotonic,
                 send: Callable[[Sequence[bytes]], None] | None = None,
                 queue_max: int = JOURNAL_QUEUE):
        self.journal_path = journal_path
        self.clock = clock
        if target == "auto":
            target = "journal" if journald_reachable(journal_path) is None else "stderr"
        self.target = target
        self.threshold = LEVELS[level]
        self._lock = threading.Lock()  # guards the outage state, shared with the logger thread
        self._down_since: float | None = None  # journald failing: stderr meanwhile
        self._retry_at = 0.0
        self._send_failed = False  # the outage is a failed send, not only a full queue
        self._queue: queue.Queue | None = None
        self._sending: tuple[int, str] | None = None  # (priority, message) of the entry in a send
        self._thread: threading.Thread | None = None
        if target == "journal":
            if send is None:
                try:
                    send = _Sendv()
                except OSError as exc:  # no libsystemd: stderr, said once
                    send = self._no_library(exc)
            self._send = send
            self._queue = queue.Queue(maxsize=queue_max)
            self._thread = threading.Thread(target=self._run, args=(self._queue,), name="wgnapid-journal",
                                            daemon=True)
            self._thread.start()
            atexit.register(self.close)

    @staticmethod
    def _no_library(exc: OSError) -> Callable[[Sequence[bytes]], None]:
        def send(fields):
            raise OSError(errno.ENOSYS, f"libsystemd: {exc}")
        return send

    def set_level(self, level: str) -> None:
        self.threshold = LEVELS[level]

    @property
    def journal_down(self) -> bool:
        return self._down_since is not None

    def event(self, kind: str, priority: int, message: str, **fields) -> None:
        """Log one event. ``fields`` become journal fields (upper-cased keys;
        bytes values go out exactly, others as UTF-8 text)."""
        if priority > self.threshold:
            return
        if self._queue is None:
            self._stderr(priority, message)
            return
        entry = [_field("MESSAGE", message), _field("PRIORITY", priority),
                 _field("MESSAGE_ID", MESSAGE_IDS[kind]), _field("SYSLOG_IDENTIFIER", IDENTIFIER)]
        entry += [_field(k.upper(), v) for k, v in fields.items() if v is not None]
        now = self.clock()
        try:
            # Even during an outage (divert): the logger thread writes it to
            # stderr, after what was queued before, so order is kept.
            self._queue.put_nowait((self._waiting(now), now, priority, message, entry))
        except queue.Full:  # journald does not read: the logger thread is stuck in a send
            self._failed(now, f"{self.journal_path}: not reading, {self._queue.maxsize} entries waiting")
            self._stderr(priority, message)

    def _waiting(self, now: float) -> bool:
        """True while an outage is known and the retry delay has not passed."""
        with self._lock:
            return self._down_since is not None and now < self._retry_at

    def _failed(self, now: float, why: str, send: bool = False) -> None:
        """An outage seen at ``now``: a full queue, or (``send``) a failed send,
        which also diverts entries already queued until the retry time."""
        with self._lock:
            self._retry_at = now + JOURNAL_RETRY
            self._send_failed = self._send_failed or send
            if self._down_since is not None:
                return  # once per outage, not once per entry
            self._down_since = now
        self._stderr(syslog.LOG_WARNING, f"journald is not reachable ({why}); logging to stderr until it is")

    def _run(self, entries: queue.Queue) -> None:
        """The logger thread: entries in queue order, to journald or stderr."""
        while (item := entries.get()) is not None:
            self._deliver(*item)

    def _deliver(self, divert: bool, now: float, priority: int, message: str, entry: list[bytes]) -> None:
        """One entry; ``divert``: logged during an outage, before its retry
        time; ``now``: the clock when it was logged (retry decisions follow
        the log calls, not the thread's pace)."""
        if divert or (self._send_failed and self._waiting(now)):
            self._stderr(priority, message)
            return
        # A real connect() first: libsystemd drops an entry silently when the
        # socket file is missing (ENOENT), and this names a refused one too.
        problem = journald_reachable(self.journal_path)
        if problem is None:
            self._sending = (priority, message)
            try:
                self._send(entry)
            except Exception as exc:  # OSError from libsystemd; never let this thread die
                problem = f"{self.journal_path}: {getattr(exc, 'strerror', None) or exc}"
            finally:
                self._sending = None
        if problem is not None:
            self._failed(now, problem, send=True)
            self._stderr(priority, message)
            return
        with self._lock:
            if self._down_since is None:
                return
            # After a full queue, journald is back once the backlog is out
            # (else a slow journald under a burst would flap: one pair of lines
            # per queue-full, not one per outage).
            if not self._send_failed and self._queue is not None and not self._queue.empty():
                return
            back, self._down_since, self._send_failed = True, None, False
        if back:
            text = "journald is reachable again; logging to the journal"
            self._deliver(False, now, syslog.LOG_NOTICE, text,
                          [_field("MESSAGE", text), _field("PRIORITY", syslog.LOG_NOTICE),
                           _field("MESSAGE_ID", MESSAGE_IDS["journal-back"]),
                           _field("SYSLOG_IDENTIFIER", IDENTIFIER)])

    def close(self, timeout: float = JOURNAL_FLUSH) -> None:
        """Get queued entries out and end the logger thread: waits at most
        ``timeout`` seconds (journald may not be reading); what is still queued
        then goes to stderr. Safe to call more than once; at exit it is called
        for you (atexit)."""
        if self._thread is None:
            return
        thread, self._thread = self._thread, None
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():  # stuck in a send: that entry and the rest to stderr, in order
            self._failed(self.clock(), f"{self.journal_path}: not reading at exit")
            if (stuck := self._sending) is not None:
                self._stderr(*stuck)
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self._stderr(item[2], item[3])
        atexit.unregister(self.close)
        self._queue = None

    @staticmethod
    def _stderr(priority: int, message: str) -> None:
        try:
            sys.stderr.write(f"wgnapid: {_NAMES.get(priority, priority)}: {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # nowhere left to log: enforcement goes on

    def link(self, kind: str, priority: int, message: str, *, name: str, ifindex: int,
             rule: str | None, state: str, netns: int | None = None,
             netns_name: str | None = None) -> None:
        """One entry about one link; ``name`` as wgnapid.ifname keeps it (str,
        surrogateescape), ``netns`` the namespace's nsfs inode, ``netns_name`` its
        name (wgnapid.discovery: "self", a /run/netns name, "docker:<id>",
        "pid:<pid>"), also shown in the text for any namespace but the daemon's own."""
        where = f" [netns {netns_name} {netns}]" if netns_name and netns_name != "self" else ""
        self.event(
            kind,
            priority,
            f"{ifname.printable(name)}: {message}{where}",
            interface=ifname.encode(name),
            ifindex=ifindex,
            wgnapid_netns=netns,
            wgnapid_netns_name=netns_name,
            wgnapid_rule=rule or "",
            wgnapid_state=state,
        )

    def info(self, kind: str, message: str, **fields) -> None:
        self.event(kind, syslog.LOG_INFO, message, **fields)

    def warning(self, kind: str, message: str, **fields) -> None:
        self.event(kind, syslog.LOG_WARNING, message, **fields)

    def error(self, kind: str, message: str, **fields) -> None:
        self.event(kind, syslog.LOG_ERR, message, **fields)
