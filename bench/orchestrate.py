"""Namespaces and workers: each run gets a fresh pair of network namespaces,
a worker inside one of them, and is cleaned up whatever happens.

bench-XXXXXX     the links and the subject under test
bench-XXXXXX-p   veth peers and a canary, out of the subject's sight

Deleting a namespace unregisters its links in one batch, in the background;
the canary (a veth pair with one end in each namespace) vanishes from the
helper namespace when that batch has run, so the next run does not start
while the kernel is still busy with the last one.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench.procevents import ForkWatcher

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_live: set[str] = set()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _delete(name: str) -> None:
    if name in _live:
        _ip("netns", "del", name, check=False)
        _live.discard(name)


@atexit.register
def _cleanup_all() -> None:
    for name in sorted(_live, reverse=True):  # bench-X before bench-X-p
        _delete(name)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP end the bench like Ctrl-C does: through the finally
    blocks that delete the namespaces."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)


class Namespaces:
    def __init__(self) -> None:
        token = secrets.token_hex(3)
        self.name = f"bench-{token}"
        self.peer = f"bench-{token}-p"
        # Link names b<prefix><group><index, base 36> stay within 8 bytes, so their
        # kthreads' names ("napi/" + name + "-0") fit the 15 bytes of task->comm
        # and the fork watcher never has to wait for the full name.
        self.prefix = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(2))

    def __enter__(self) -> "Namespaces":
        for name in (self.name, self.peer):
            _live.add(name)
            _ip("netns", "add", name)
        _ip("-n", self.name, "link", "add", "zcanary", "type", "veth",
            "peer", "name", "zcanary", "netns", self.peer)
        return self

    def __exit__(self, *exc) -> None:
        _delete(self.name)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _ip("-n", self.peer, "link", "show", "zcanary", check=False).returncode != 0:
                break
            time.sleep(0.05)
        _delete(self.peer)


class WorkerFailed(RuntimeError):
    pass


def run(spec: dict, watcher: ForkWatcher, keep: bool = False) -> dict:
    """One run: namespaces, worker, kthread-fork bookkeeping. Returns the
    worker's result with a latency (ms, None when never threaded) per link."""
    workdir = tempfile.mkdtemp(prefix="wgnapid-bench-")
    try:
        result = _run(spec, watcher, workdir)
    except WorkerFailed:
        raise  # keep the work directory: the daemon's log is there
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)  # interrupted
        raise
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _run(spec: dict, watcher: ForkWatcher, workdir: str) -> dict:
    with Namespaces() as ns:
        spec = dict(spec, prefix=ns.prefix, peer_netns=ns.peer, workdir=workdir)
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, "-m", "bench.worker"],
            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True,  # Ctrl-C reaches only us; we end the worker
        )
        result = None
        try:
            proc.stdin.write(json.dumps(spec) + "\n")
            proc.stdin.flush()
            for line in proc.stdout:
                msg = json.loads(line)
                if msg.get("op") == "wait":
                    missing = watcher.wait(msg["names"], msg["since"], msg["timeout"])
                    proc.stdin.write(json.dumps({"missing": missing}) + "\n")
                    proc.stdin.flush()
                elif msg.get("op") == "result":
                    result = msg
                    break
            proc.wait(60)
        finally:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    proc.wait()
    if result is None:
        raise WorkerFailed(f"worker for {spec['type']}/{spec['subject']} ended without a result "
                           f"(work directory {workdir})")
    if not result.get("ok"):
        raise WorkerFailed(f"{spec['type']}/{spec['subject']}: {result.get('error')} (work directory "
                           f"{workdir})\n{result.get('trace', '')}")
    for link in result.get("links", []):
        fork = watcher.first_fork(link["name"], since=link["t0"] - 100_000_000)
        link["lat_ms"] = None if fork is None else (fork - link["t0"]) / 1e6
        if link.get("t_read") is not None:
            link["read_ms"] = (link["t_read"] - link["t0"]) / 1e6
    return result
