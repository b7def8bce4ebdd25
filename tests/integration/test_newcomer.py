"""The README's first command, as a newcomer runs it: `./dev run` on a fresh clone.

The clone is of this tree (HEAD, plus uncommitted and new files that are not
ignored, so that a change is tested before it is committed): no virtualenv, no
`.dev.log`. `./dev run --config POLICY` runs in a terminal (a pty whose
controlling process is the command) inside the test's network namespace, which
already holds links that the test policy matches, and the test reads the
terminal: set-up, one line per step; what it runs and how to stop it; the start
line, what the first reconcile found and did. Then Ctrl-C on the terminal, as a
person would stop it.

Two things differ from a newcomer's machine, both because the test must not
reach outside what it made: the namespace has no network, so pip is pointed at
a wheelhouse the test fills beforehand (outside the namespace) from the same
requirements file (PIP_NO_INDEX, PIP_FIND_LINKS); and RUNTIME_DIRECTORY keeps
the daemon's status file out of /run/wgnapid. The Debian packages `./dev`
installs must be present already (the suite's own set-up installs them).
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from wgtest import write_policy

pytestmark = pytest.mark.newcomer

TOP = Path(__file__).resolve().parents[2]
SETUP_TIMEOUT = 900.0  # a venv and its packages, on 2 shared CPUs
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def _fresh_clone(dst: Path) -> str:
    """git clone of this repository at HEAD, with the working tree's changes laid
    on top; returns what was cloned, for the test's output."""
    def git(*args, cwd=TOP):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=True).stdout

    head = git("rev-parse", "HEAD").decode().strip()
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(TOP), str(dst)], check=True)
    git("checkout", "--quiet", "--detach", head, cwd=dst)
    changed = [os.fsdecode(p) for p in git("ls-files", "-z", "--modified", "--others",
                                           "--exclude-standard").split(b"\0") if p]
    deleted = [os.fsdecode(p) for p in git("ls-files", "-z", "--deleted").split(b"\0") if p]
    for rel in changed:
        if (TOP / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(TOP / rel, dst / rel)
    for rel in deleted:
        (dst / rel).unlink(missing_ok=True)
    extra = len(set(changed) | set(deleted))
    return f"{head[:12]}" + (f" + {extra} uncommitted file(s)" if extra else "")


def _wheelhouse(clone: Path, dst: Path) -> None:
    """Wheels for everything `./dev run` installs into .venv-latest: pip itself,
    the requirements, and the build requirement of the editable install."""
    build_req = re.search(r'requires = \["([^"]+)"\]', (clone / "pyproject.toml").read_text()).group(1)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(dst),
         "-r", str(clone / "tests/requirements-latest.txt"), "pip", build_req],
        capture_output=True, text=True, timeout=SETUP_TIMEOUT,
        env={**os.environ, "PIP_PROGRESS_BAR": "off"},
    )
    assert res.returncode == 0, f"filling the wheelhouse: {res.stderr[-3000:]}"


class Terminal:
    """A command on a pty of its own (session leader, pty as controlling terminal)."""

    def __init__(self, argv: list[str], cwd: Path, env: dict):
        master, slave = os.openpty()

        def controlling_tty():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                                     preexec_fn=controlling_tty, close_fds=True)
        os.close(slave)
        self.master = master
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                r, _, _ = select.select([self.master], [], [], 1.0)
                if not r:
                    if self.proc.poll() is not None:
                        return
                    continue
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every writer has closed the pty
                return
            if not data:
                return
            with self._lock:
                self._buf += data

    @property
    def text(self) -> str:
        with self._lock:
            return self._buf.decode(errors="replace").replace("\r\n", "\n")

    def wait_for(self, pattern: str, timeout: float, what: str) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text, re.M)
            if m:
                return m
            if self.proc.poll() is not None:
                self._reader.join(5)
                m = re.search(pattern, self.text, re.M)
                if m:
                    return m
                raise AssertionError(f"exited ({self.proc.returncode}) before {what}; terminal:\n{self.text}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {what} within {timeout:.0f} s; terminal:\n{self.text}")
            time.sleep(0.1)

    def ctrl_c(self) -> None:
        """What Ctrl-C does: the terminal sends SIGINT to its foreground process group."""
        os.write(self.master, b"\x03")

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._reader.join(5)
        os.close(self.master)


def test_dev_run_on_a_fresh_clone_tells_what_it_found_and_did(netns, tmp_path):
    clone = tmp_path / "wgnapid"
    term = None
    try:
        what = _fresh_clone(clone)
        wheels = tmp_path / "wheels"
        t0 = time.monotonic()
        _wheelhouse(clone, wheels)
        print(f"\nfresh clone of {what}; wheelhouse filled in {time.monotonic() - t0:.0f} s")

        # va0: settable (gets threaded); va1: down, not settable yet (waiting);
        # vx0: no rule matches it (left alone).
        for dev, peer in (("va0", "pa0"), ("va1", "pa1"), ("vx0", "px0")):
            netns.veth(dev, peer)
        netns.make_settable("va0")
        policy = write_policy(tmp_path / "policy.toml", rules=(("veths", ["veth"], ["va*"], "on"),))
        runtime = tmp_path / "run"
        runtime.mkdir()

        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
               and not k.startswith("PIP_")}
        env.update(TERM="xterm", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels),
                   RUNTIME_DIRECTORY=str(runtime))
        t0 = time.monotonic()
        term = Terminal(netns.exec_argv("./dev", "run", "--config", policy), clone, env)

        running = term.wait_for(r"^dev: running (.*)$", SETUP_TIMEOUT, "the `dev: running` line")
        t_setup = time.monotonic() - t0
        term.wait_for(r"start-up done: .*$", START_TIMEOUT, "the start-up summary")
        t_summary = time.monotonic() - t0
        text = term.text
        print(f"set-up took {t_setup:.0f} s, the start-up summary came {t_summary - t_setup:.1f} s later")
        print("--- terminal:\n" + text + "---")

        # Set-up: one line per step, each saying it is done; nothing else.
        before = text[:running.start()].splitlines()
        assert before, "no set-up line at all"
        assert len(before) <= 3, f"set-up printed {len(before)} lines:\n{text}"
        for line in before:
            assert re.fullmatch(r"dev: .+ \.\.\. done \(\d+ s\)", line), f"not a step line: {line!r}"
        assert "creating .venv-latest" in before[-1]
        assert not re.search(r"warning|deprecat|error", text[:running.start()], re.I), text
        assert "Traceback" not in text

        # What runs, and how to stop it.
        assert running.group(1) == f".venv-latest/bin/wgnapid --log-target stderr --config {policy} run"
        assert re.search(r"^dev: .*stop it with Ctrl-C$", text, re.M), text

        # The start line, what it found and did, and the kernel agrees.
        assert re.search(rf"^wgnapid: info: wgnapid \S+ started: source netlink, kernel {re.escape(os.uname().release)}, "
                         rf"policy {re.escape(str(policy))}, namespaces self, "
                         r"hot path compiled \(wgnapid\._hotpath\)$", text, re.M), text
        assert re.search(r"^wgnapid: info: va0: threaded NAPI on \[rule veths\]$", text, re.M), text
        assert re.search(r"^wgnapid: info: va1: waiting: no NAPI instance yet.*\[rule veths\]$", text, re.M), text
        assert not re.search(r"vx0:", text), "a link no rule matches was logged"
        summary = re.search(r"^wgnapid: info: start-up done: (\d+) of (\d+) links match the policy: "
                            r"1 threaded \(va0\), 1 waiting \(va1\); watching for changes$", text, re.M)
        assert summary, text
        assert int(summary.group(1)) == 2
        assert int(summary.group(2)) == len(netns.ip("-o", "link", "show").stdout.splitlines())
        assert netns.values("va0", "va1", "vx0") == {"va0": 1, "va1": 0, "vx0": 0}

        # Ctrl-C stops it cleanly.
        t_int = time.monotonic()
        term.ctrl_c()
        try:
            rc = term.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {STOP_TIMEOUT:.0f} s after Ctrl-C:\n{term.text}") from None
        print(f"exited {rc} {time.monotonic() - t_int:.2f} s after Ctrl-C")
        term._reader.join(5)
        assert rc == 0, term.text
        # The terminal echoes ^C, as it does for a person.
        assert re.search(r"^(\^C)?wgnapid: info: wgnapid stopping \(SIGINT\)$", term.text, re.M), term.text
        assert "Traceback" not in term.text
        left = sorted(p.name for p in runtime.glob("status-*.json"))
        assert not left, f"the status file outlived the daemon: {left}"
    finally:
        if term is not None:
            term.close()
        shutil.rmtree(clone, ignore_errors=True)  # a venv: do not keep it in pytest's tmp dirs
