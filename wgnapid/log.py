"""The one logging setup: journald through systemd-python, or plain stderr lines.

Per-link entries carry INTERFACE, IFINDEX, WGNAPID_RULE, WGNAPID_STATE and a
MESSAGE_ID that is stable per kind of event, so operators can filter with
``journalctl MESSAGE_ID=...`` or ``journalctl INTERFACE=wg0``.
"""

from __future__ import annotations

import os
import sys
import syslog

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


def journal_available() -> bool:
    if not os.path.exists(JOURNAL_SOCKET):
        return False
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        return False
    return True


class Log:
    def __init__(self, target: str = "auto", level: str = "info"):
        if target == "auto":
            target = "journal" if journal_available() else "stderr"
        if target == "journal" and not journal_available():
            raise RuntimeError(
                f"journald is not reachable ({JOURNAL_SOCKET} missing or systemd-python "
                "not installed); use --log-target stderr"
            )
        self.target = target
        self.threshold = LEVELS[level]
        if target == "journal":
            from systemd import journal

            self._send = journal.send

    def set_level(self, level: str) -> None:
        self.threshold = LEVELS[level]

    def event(self, kind: str, priority: int, message: str, **fields) -> None:
        """Log one event. ``fields`` become journal fields (upper-cased keys)."""
        if priority > self.threshold:
            return
        if self.target == "journal":
            extra = {k.upper(): str(v) for k, v in fields.items() if v is not None}
            self._send(
                message,
                PRIORITY=str(priority),
                MESSAGE_ID=MESSAGE_IDS[kind],
                SYSLOG_IDENTIFIER=IDENTIFIER,
                **extra,
            )
        else:
            sys.stderr.write(f"wgnapid: {_NAMES.get(priority, priority)}: {message}\n")
            sys.stderr.flush()

    def link(self, kind: str, priority: int, message: str, *, name: str, ifindex: int,
             rule: str | None, state: str) -> None:
        self.event(
            kind,
            priority,
            f"{name}: {message}",
            interface=name,
            ifindex=ifindex,
            wgnapid_rule=rule or "",
            wgnapid_state=state,
        )

    def info(self, kind: str, message: str, **fields) -> None:
        self.event(kind, syslog.LOG_INFO, message, **fields)

    def warning(self, kind: str, message: str, **fields) -> None:
        self.event(kind, syslog.LOG_WARNING, message, **fields)

    def error(self, kind: str, message: str, **fields) -> None:
        self.event(kind, syslog.LOG_ERR, message, **fields)
