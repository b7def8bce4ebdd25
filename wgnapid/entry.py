"""The console script's entry point: signals are caught from the first instant.

`wgnapid` imports pydantic, pyroute2 and the policy before `run` reaches its
event loop, which takes about half a second (ten times that under qemu). A
SIGHUP in that window would kill the process with the default disposition,
and systemd counts death by SIGHUP as a clean exit, so ``Restart=on-failure``
would leave the service down. This module imports nothing heavy: it installs
handlers that only record SIGHUP, SIGTERM and SIGINT, then imports the rest.
`wgnapid run` acts on what was recorded once its own handlers are in place
(a reload after READY=1, a stop at once); every other command restores the
default dispositions and honours a recorded SIGTERM/SIGINT.
"""

from __future__ import annotations

import signal

# Signal numbers received before the command took over, in order.
PENDING: list[int] = []
EARLY_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


def _record(signum: int, _frame) -> None:
    PENDING.append(signum)


def install_early_handlers() -> None:
    """Record SIGHUP/SIGTERM/SIGINT into PENDING (no side effect besides)."""
    for signum in EARLY_SIGNALS:
        signal.signal(signum, _record)


def restore_default_handlers() -> int | None:
    """Default dispositions again; returns a recorded SIGTERM/SIGINT, if any."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return next((s for s in PENDING if s in (signal.SIGTERM, signal.SIGINT)), None)


def main() -> int:
    install_early_handlers()
    from wgnapid.cli import main as cli_main  # the heavy imports start here

    return cli_main(early=PENDING)
