"""The one logging setup: journald's native protocol, or plain stderr lines.

Per-link entries carry INTERFACE, IFINDEX, WGNAPID_NETNS (the network
namespace's nsfs inode: a link is (netns, ifindex)), WGNAPID_RULE,
WGNAPID_STATE and a MESSAGE_ID that is stable per kind of event, so operators
can filter with ``journalctl MESSAGE_ID=...`` or ``journalctl INTERFACE=wg0``.
INTERFACE holds the kernel's bytes exactly (a name need not be UTF-8); the
MESSAGE text shows the name escaped (wgnapid.ifname.printable).

Logging never stops or blocks enforcement. systemd-python's journal.send()
uses a blocking socket (a journald that stopped reading would stall the event
loop until the watchdog kills it) and raises on a refused or missing socket.
So entries go out through JournalSocket: the same native protocol
(systemd.journal-fields(7), "KEY=value" lines, binary-safe form for values
with a newline) on a non-blocking datagram socket. When a send fails
(journald gone, its socket file left behind, socket buffer full: EAGAIN),
that entry and the following ones go to stderr, the outage is reported once,
and journald is tried again at most every JOURNAL_RETRY seconds.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import syslog
import time

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


def _field(key: str, value: str | bytes) -> bytes:
    # bytes go out exactly (INTERFACE= holds the kernel's bytes of a link name).
    data = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
    if b"\n" in data:
        # Binary-safe form: KEY\n, little-endian 64-bit length, data, \n.
        return key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key.encode() + b"=" + data + b"\n"


class JournalSocket:
    """journald's native protocol on a non-blocking datagram socket.

    ``send`` raises OSError (ECONNREFUSED, ENOENT, EAGAIN when journald's
    receive queue is full, EMSGSIZE) instead of ever blocking.
    """

    def __init__(self, path: str = JOURNAL_SOCKET):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    def send(self, fields: dict[str, str | bytes]) -> None:
        self.sock.sendto(b"".join(_field(k, v) for k, v in fields.items()), self.path)

    def close(self) -> None:
        self.sock.close()


class Log:
    """Events to journald (``target`` "journal"), stderr, or "auto" (journald when
    journald_reachable(), else stderr). With "journal", a journald that is not
    reachable (at start or later) means stderr until it is again, said once per
    outage (see the module docstring): a log call never raises and never blocks."""

    def __init__(self, target: str = "auto", level: str = "info", *,
                 journal_path: str = JOURNAL_SOCKET, clock=time.monotonic):
        self.journal_path = journal_path
        self.clock = clock
        if target == "auto":
            target = "journal" if journald_reachable(journal_path) is None else "stderr"
        self.target = target
        self.threshold = LEVELS[level]
        self._journal = JournalSocket(journal_path) if target == "journal" else None
        self._down_since: float | None = None  # journald failing: stderr meanwhile
        self._retry_at = 0.0

    def set_level(self, level: str) -> None:
        self.threshold = LEVELS[level]

    @property
    def journal_down(self) -> bool:
        return self._down_since is not None

    def event(self, kind: str, priority: int, message: str, **fields) -> None:
        """Log one event. ``fields`` become journal fields (upper-cased keys)."""
        if priority > self.threshold:
            return
        if self._journal is not None and (self._down_since is None or self.clock() >= self._retry_at):
            entry = {
                "MESSAGE": message,
                "PRIORITY": str(priority),
                "MESSAGE_ID": MESSAGE_IDS[kind],
                "SYSLOG_IDENTIFIER": IDENTIFIER,
                **{k.upper(): v if isinstance(v, bytes) else str(v)
                   for k, v in fields.items() if v is not None},
            }
            try:
                self._journal.send(entry)
            except OSError as exc:
                self._journal_failed(exc)
            else:
                if self._down_since is not None:
                    self._down_since = None
                    self.event("journal-back", syslog.LOG_NOTICE,
                               "journald is reachable again; logging to the journal")
                return
        self._stderr(priority, message)

    def _journal_failed(self, exc: OSError) -> None:
        self._retry_at = self.clock() + JOURNAL_RETRY
        if self._down_since is None:  # once per outage, not once per entry
            self._down_since = self.clock()
            self._stderr(syslog.LOG_WARNING,
                         f"journald is not reachable ({self.journal_path}: {exc.strerror or exc}); "
                         f"logging to stderr until it is")

    @staticmethod
    def _stderr(priority: int, message: str) -> None:
        try:
            sys.stderr.write(f"wgnapid: {_NAMES.get(priority, priority)}: {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # nowhere left to log: enforcement goes on

    def link(self, kind: str, priority: int, message: str, *, name: str, ifindex: int,
             rule: str | None, state: str, netns: int | None = None) -> None:
        """One entry about one link; ``name`` as wgnapid.ifname keeps it (str,
        surrogateescape), ``netns`` the namespace's nsfs inode."""
        self.event(
            kind,
            priority,
            f"{ifname.printable(name)}: {message}",
            interface=ifname.encode(name),
            ifindex=ifindex,
            wgnapid_netns=netns,
            wgnapid_rule=rule or "",
            wgnapid_state=state,
        )

    def info(self, kind: str, message: str, **fields) -> None:
        self.event(kind, syslog.LOG_INFO, message, **fields)

    def warning(self, kind: str, message: str, **fields) -> None:
        self.event(kind, syslog.LOG_WARNING, message, **fields)

    def error(self, kind: str, message: str, **fields) -> None:
        self.event(kind, syslog.LOG_ERR, message, **fields)
