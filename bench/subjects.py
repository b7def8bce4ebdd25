"""The programs under test, started by the worker inside the benchmark
namespace: wgnapid itself and the alternatives (bench/alternatives.py).

Every subject answers sample() with the same fields, read from /proc or (for
the alternatives, whose forked shells count too) from getrusage:
cpu_ns (user+system, including reaped children), voluntary and involuntary
context switches (a voluntary switch is a sleep: a wake-up later), VmRSS and
VmHWM in KiB.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

POLICY = """\
[daemon]
source = "netlink"
resync_interval = 30
pending_max_delay = 2
log_level = "info"
kernel_guard = "strict"

[[rules]]
name = "bench"
kinds = ["tun", "veth"]
interfaces = ["b*"]
threaded = "on"
"""


def proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
            elif key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                out[key] = int(value)
    return {
        "rss_kb": out.get("VmRSS", 0),
        "hwm_kb": out.get("VmHWM", 0),
        "vol": out.get("voluntary_ctxt_switches", 0),
        "invol": out.get("nonvoluntary_ctxt_switches", 0),
    }


def proc_cpu_ns(pid: int) -> int:
    """CPU time of every thread of pid, from schedstat (nanoseconds)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError):
            pass
    return total


def wgnapid_env(snapshot: str | None) -> dict:
    """The daemon runs from the orchestrator's snapshot of wgnapid/ when there is
    one (PYTHONPATH wins over the editable install), so a commit landing during
    a run cannot mix two versions into one RESULTS.md."""
    env = dict(os.environ)
    if snapshot:
        env["PYTHONPATH"] = snapshot
    return env


def wgnapid_command() -> list[str]:
    # What the `wgnapid` entry point does (wgnapid/__main__.py calls cli.main).
    return [sys.executable, "-m", "wgnapid"]


def terminate(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 10 s; reaped."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Wgnapid:
    name = "wgnapid"

    def __init__(self, workdir: str, profile: str | None = None, snapshot: str | None = None) -> None:
        self.workdir = workdir
        self.snapshot = snapshot
        self.profile = profile  # None | "cprofile" | "pyspy": for finding hot spots, not for figures
        self.pyspy: subprocess.Popen | None = None
        self.config = os.path.join(workdir, "wgnapid.toml")
        with open(self.config, "w") as f:
            f.write(POLICY)
        self.runtime = os.path.join(workdir, "run")
        os.makedirs(self.runtime, exist_ok=True)
        self.notify_path = os.path.join(workdir, "notify")
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.ready_ns = 0

    def start(self) -> float:
        """Start; return seconds from spawn to READY=1."""
        try:
            os.unlink(self.notify_path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind(self.notify_path)
        env = dict(wgnapid_env(self.snapshot), NOTIFY_SOCKET=self.notify_path,
                   RUNTIME_DIRECTORY=self.runtime)
        self.starts += 1
        log = open(os.path.join(self.workdir, f"wgnapid-{self.starts}.log"), "wb")
        cmd = wgnapid_command() + ["--config", self.config, "--log-target", "stderr", "run"]
        if self.profile == "cprofile":
            out = os.path.join(self.workdir, f"wgnapid-{self.starts}.pstats")
            cmd = [sys.executable, "-m", "cProfile", "-o", out, "-m", "wgnapid"] + cmd[-5:]
        t0 = time.monotonic()
        # cwd: not the repository, whose wgnapid/ would shadow the snapshot
        # (`python -m` puts the working directory first on sys.path).
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        poller = select.poll()  # not select(): the worker may hold 20,000 fds
        poller.register(sock, select.POLLIN)
        try:
            while True:
                left = 60 - (time.monotonic() - t0)
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"wgnapid did not send READY=1 (exit {self.proc.poll()}); "
                                       f"see {self.workdir}")
                if poller.poll(min(left, 0.5) * 1000) and b"READY=1" in sock.recv(4096).split(b"\n"):
                    ready = time.monotonic() - t0
                    self.ready_ns = time.monotonic_ns()
                    if self.profile == "pyspy":
                        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
                        out = os.path.join(self.workdir, f"wgnapid-{self.starts}.pyspy.txt")
                        self.pyspy = subprocess.Popen(
                            [spy, "record", "--pid", str(self.proc.pid), "--rate", "2000", "--idle",
                             "--nonblocking", "--format", "raw", "--output", out],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(1.0)
                    return ready
        finally:
            sock.close()

    def sample(self) -> dict:
        return {"cpu_ns": proc_cpu_ns(self.proc.pid), **proc_status(self.proc.pid)}

    def status(self) -> dict:
        # status-<netns inode>.json (one per namespace); status.json before that.
        names = sorted(n for n in os.listdir(self.runtime) if n.startswith("status")
                       and n.endswith(".json")) if os.path.isdir(self.runtime) else []
        try:
            with open(os.path.join(self.runtime, names[0] if names else "status.json")) as f:
                doc = json.load(f)
            return {"stats": doc.get("stats", {}), "summary": doc.get("summary", {})}
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        if self.pyspy and self.pyspy.poll() is None:
            self.pyspy.send_signal(signal.SIGINT)
            self.pyspy.wait(30)
        terminate(self.proc)


class Alternative:
    """hook | udev | timer1 | timer10"""

    def __init__(self, kind: str, workdir: str) -> None:
        self.name = kind
        self.workdir = workdir
        self.args = ["timer", kind[5:]] if kind.startswith("timer") else [kind]
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        log = open(os.path.join(self.workdir, f"{self.name}.log"), "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.alternatives", *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True,
        )
        log.close()
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{self.name} did not start; see {self.workdir}")
        return time.monotonic() - t0

    def sample(self) -> dict:
        status = proc_status(self.proc.pid)
        self.proc.send_signal(signal.SIGUSR1)
        fields = self.proc.stdout.readline().split()
        if not fields or fields[0] != "cpu":
            raise RuntimeError(f"{self.name}: no cpu report")
        me, kids, spawned, ok, failed, overflows = (int(x) for x in fields[1:7])
        return {"cpu_ns": me + kids, "cpu_children_ns": kids, "spawned": spawned,
                "ok": ok, "failed": failed, "overflows": overflows, **status}

    def status(self) -> dict:
        return {}

    def stop(self) -> None:
        terminate(self.proc)


def make(kind: str, workdir: str, profile: str | None = None, snapshot: str | None = None):
    return Wgnapid(workdir, profile, snapshot) if kind == "wgnapid" else Alternative(kind, workdir)
