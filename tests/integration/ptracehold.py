"""Hold one of a process's pwrite64 calls at its entry, with ptrace, until released.

The real-kernel way to make "a write in flight" deterministic: the daemon's
writer thread is stopped at the entry of its pwrite64 on a chosen file (the
fd already open, the write not yet made); the test changes links meanwhile,
then lets the write go on. x86_64 only (register layout and syscall number);
``supported()`` says why not elsewhere.

All ptrace requests come from one tracer thread (the kernel requires it).
Only the process's threads other than the main one are traced: the writer
threads, which start at the daemon's first write.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
import time

PTRACE_SYSCALL, PTRACE_DETACH, PTRACE_GETREGS = 24, 17, 12
PTRACE_SEIZE, PTRACE_INTERRUPT = 0x4206, 0x4207
PTRACE_O_TRACESYSGOOD = 1
WALL = 0x40000000
SYS_PWRITE64 = 18  # x86_64
ENOSYS = 38
_RAX, _RDI, _ORIG_RAX = 10, 14, 15  # struct user_regs_struct, x86_64


def supported() -> str | None:
    """None when this can run here, else the reason."""
    if platform.machine() != "x86_64":
        return f"ptrace syscall holding is written for x86_64, not {platform.machine()}"
    if os.geteuid() != 0:
        return "needs root"
    return None


class HoldWrite:
    """Trace ``pid``'s non-main threads; hold the first pwrite64 whose fd is
    a file whose path ends with ``suffix`` (readlink /proc/PID/fd/N)."""

    def __init__(self, pid: int, suffix: str):
        self.pid = pid
        self.suffix = suffix
        self.held = threading.Event()
        self.error: BaseException | None = None
        self._release = threading.Event()
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.ptrace.restype = ctypes.c_long
        self._libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self._attached = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ptrace-hold", daemon=True)
        self._thread.start()
        if not self._attached.wait(10):
            raise AssertionError("ptrace: could not attach in 10 s")
        if self.error:
            raise self.error

    def _ptrace(self, req: int, tid: int, addr=None, data=None) -> int:
        r = self._libc.ptrace(req, tid, addr, data)
        if r == -1:
            err = ctypes.get_errno()
            raise OSError(err, f"ptrace({req}, {tid}): {os.strerror(err)}")
        return r

    def _regs(self, tid: int) -> list[int]:
        buf = (ctypes.c_ulonglong * 27)()
        self._ptrace(PTRACE_GETREGS, tid, None, ctypes.addressof(buf))
        return list(buf)

    def _path_of(self, fd: int) -> str:
        try:
            return os.readlink(f"/proc/{self.pid}/fd/{fd}")
        except OSError:
            return ""

    def _run(self) -> None:
        tids: list[int] = []
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.pid}/task") if int(t) != self.pid]
            if not tids:
                raise AssertionError("no writer threads to trace (no write made yet)")
            for tid in tids:
                self._ptrace(PTRACE_SEIZE, tid, None, PTRACE_O_TRACESYSGOOD)
                self._ptrace(PTRACE_INTERRUPT, tid)
            self._attached.set()
            held_tid = None
            while True:
                if held_tid is not None and self._release.is_set():
                    break
                progressed = False
                for tid in tids:
                    if tid == held_tid:
                        continue
                    try:
                        got, status = os.waitpid(tid, WALL | os.WNOHANG)
                    except ChildProcessError:
                        continue
                    if got == 0:
                        continue
                    progressed = True
                    if not os.WIFSTOPPED(status):
                        continue  # the thread exited
                    sig = os.WSTOPSIG(status)
                    if sig == (0x80 | 5):  # a syscall stop (TRACESYSGOOD)
                        regs = self._regs(tid)
                        entering = regs[_RAX] == (1 << 64) - ENOSYS
                        if (held_tid is None and entering and regs[_ORIG_RAX] == SYS_PWRITE64
                                and self._path_of(regs[_RDI]).endswith(self.suffix)):
                            held_tid = tid
                            self.held.set()
                            continue
                        self._ptrace(PTRACE_SYSCALL, tid, None, None)
                    elif status >> 16:  # PTRACE_EVENT_STOP (the interrupt, or a group stop)
                        self._ptrace(PTRACE_SYSCALL, tid, None, None)
                    else:  # a signal for the thread: deliver it
                        self._ptrace(PTRACE_SYSCALL, tid, None, sig)
                if not progressed:
                    time.sleep(0.001)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
            self._attached.set()
        finally:
            self._detach_all(tids)

    def _detach_all(self, tids: list[int]) -> None:
        for tid in tids:
            try:
                self._ptrace(PTRACE_INTERRUPT, tid)
            except OSError:
                pass
        for tid in tids:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    self._ptrace(PTRACE_DETACH, tid, None, None)
                    break
                except OSError:
                    try:  # not stopped yet: collect the stop, then detach
                        os.waitpid(tid, WALL | os.WNOHANG)
                    except ChildProcessError:
                        break
                    time.sleep(0.001)

    def release(self) -> None:
        """Let the held write go on; detach from every thread."""
        self._release.set()
        self._thread.join(15)
        if self.error:
            raise self.error
