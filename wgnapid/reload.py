"""`wgnapid reload`: ask the running daemon to reload, and wait for its answer.

systemd 252's ``ExecReload=kill -HUP $MAINPID`` returns as soon as the signal
is sent, and a refused policy still counts as a successful reload. This
command (the unit's ExecReload=, after the caller validated the policy with
the same checks the daemon applies) reads the daemon's status document
($RUNTIME_DIRECTORY/status-<netns>.json), sends SIGHUP to the PID named there, and
waits until the document shows a reload generation newer than before: exit 0
when the daemon applied the policy, non-zero when it refused it (its error is
printed) or did not answer in time.
"""

from __future__ import annotations

import json
import os
import signal
import time

POLL_INTERVAL = 0.05  # seconds between reads of the status document


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_reload(timeout: float = 60.0, path: str | None = None) -> tuple[bool, str]:
    """SIGHUP the daemon of ``path`` (default: the status document of the daemon
    in this process's network namespace, wgnapid.status.status_path) and wait for its
    answer. Returns (applied, one line to show). Raises nothing: a missing
    daemon or a timeout is (False, why)."""
    from wgnapid.status import status_path
    from wgnapid.netns import NsId

    path = path or status_path(NsId.of().ino)
    doc = _read(path)
    if not doc or not isinstance(doc.get("pid"), int):
        return False, f"wgnapid: no running daemon (no status document at {path})"
    pid = doc["pid"]
    before = (doc.get("reload") or {}).get("generation", 0)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False, f"wgnapid: the daemon (pid {pid}) is not running"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = _read(path) or {}
        reload = doc.get("reload") or {}
        if doc.get("pid") == pid and reload.get("generation", 0) > before:
            if reload.get("ok"):
                return True, f"wgnapid: reloaded ({', '.join(doc.get('policy_files') or [])})"
            return False, f"wgnapid: the daemon refused the policy and keeps the running one: {reload.get('error')}"
        if not _alive(pid):
            return False, f"wgnapid: the daemon (pid {pid}) exited during the reload"
        time.sleep(POLL_INTERVAL)
    return False, f"wgnapid: no answer from the daemon (pid {pid}) within {timeout:g} s"
