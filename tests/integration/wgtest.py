"""Helpers for the host-kernel integration tests (the fixtures are in conftest.py).

Every test gets its own network namespace (``ip netns add wgtest-<random>``)
and drives the real ``wgnapid run`` inside it with ``ip netns exec``, which
remounts /sys so that /sys/class/net shows that namespace. The console script
is the one beside the running interpreter, so each dependency set (.venv-*)
tests itself. Links are veth pairs (settable once up with GRO on) and tun
links with IFF_NAPI (settable at once), both kept inside the namespace; see
KERNEL-FACTS.md, "Testing without WireGuard in the host kernel".

No fixed sleeps: readiness is READY=1 on a NOTIFY_SOCKET bound here, and
every other condition is polled with a deadline (``wait_until``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
WGNAPID = os.path.join(os.path.dirname(sys.executable), "wgnapid")
NS_PREFIX = "wgtest-"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
JOURNALD = "/lib/systemd/systemd-journald"

# Generous: another engineer runs qemu on the same 2 cores.
READY_TIMEOUT = 30.0


def environment_problem() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root (they create network namespaces)"
    for tool in ("ip", "ethtool", "setpriv", "journalctl"):
        if shutil.which(tool) is None:
            return f"integration tests need `{tool}` on PATH"
    if not os.path.exists(WGNAPID):
        return f"the wgnapid console script is missing beside {sys.executable}: {WGNAPID}"
    if not os.path.exists("/dev/net/tun"):
        return "integration tests need /dev/net/tun"
    if not os.path.exists("/sys/class/net/lo/threaded"):
        return "this kernel has no /sys/class/net/*/threaded (needs 5.12+)"
    return None


# -- small helpers ------------------------------------------------------------------


def wait_until(fn, timeout: float, what: str, interval: float = 0.05):
    """Poll ``fn`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def napi_threads(dev: str) -> list[tuple[int, str]]:
    """Kernel threads (PPid 2) whose comm starts with napi/<dev>-: (pid, comm)."""
    prefix = f"napi/{dev}-"[:15]
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            # Link names may hold bytes that are not UTF-8 (other tests make such links).
            with open(f"/proc/{entry}/status", errors="surrogateescape") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        comm, ppid = fields.get("Name", "").strip(), fields.get("PPid", "").strip()
        if ppid == "2" and comm.startswith(prefix):
            found.append((int(entry), comm))
    return found


def write_policy(path: Path, *, source: str = "netlink", resync_interval: float = 1,
                 pending_max_delay: float = 1, kernel_guard: str = "strict",
                 log_level: str | None = None, rules=(("veths", ["veth"], ["va*"], "on"),)) -> Path:
    """A policy file; ``rules`` are (name, kinds, interfaces, threaded)."""
    lines = [
        "[daemon]",
        f'source = "{source}"',
        f"resync_interval = {resync_interval}",
        f"pending_max_delay = {pending_max_delay}",
        f'kernel_guard = "{kernel_guard}"',
    ]
    if log_level:
        lines.append(f'log_level = "{log_level}"')
    for name, kinds, interfaces, threaded in rules:
        lines += [
            "",
            "[[rules]]",
            f'name = "{name}"',
            f"kinds = {json.dumps(list(kinds))}",
            f"interfaces = {json.dumps(list(interfaces))}",
            f'threaded = "{threaded}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- the namespace and its helper process ------------------------------------------


class Agent:
    """nsagent.py running inside the namespace: sysfs reads/writes and tun links."""

    def __init__(self, ns: str):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(HERE / "nsagent.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        hello = json.loads(self.proc.stdout.readline() or "{}")
        assert "ready" in hello, f"nsagent did not start in {ns}"

    def call(self, op: str, **kw):
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"nsagent died during {op}"
        reply = json.loads(line)
        if "error" in reply and op != "write":
            raise AssertionError(f"nsagent {op}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Netns:
    def __init__(self, name: str):
        self.name = name
        self._agent: Agent | None = None

    @property
    def inode(self) -> int:
        """The namespace's nsfs inode (what wgnapid calls its netns)."""
        return os.stat(f"/run/netns/{self.name}").st_ino

    def exec_argv(self, *argv) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def run(self, *argv, check: bool = True, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("errors", "surrogateescape")
        kw.setdefault("timeout", 120)
        res = subprocess.run(self.exec_argv(*argv), **kw)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, argv))} in {self.name}: rc {res.returncode}: {res.stderr}")
        return res

    def ip(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        # Link names are bytes (not always UTF-8): decoded losslessly, as wgnapid does.
        res = subprocess.run(["ip", "-n", self.name, *map(str, args)], capture_output=True, text=True,
                             errors="surrogateescape", timeout=120)
        if check and res.returncode != 0:
            raise AssertionError(f"ip {' '.join(map(str, args))} in {self.name}: {res.stderr}")
        return res

    def ip_batch(self, commands: list[str], check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(["ip", "-n", self.name, "-force", "-batch", "-"], input="\n".join(commands) + "\n",
                             capture_output=True, text=True, timeout=300)
        if check and res.returncode != 0:
            raise AssertionError(f"ip -batch in {self.name}: {res.stderr[:2000]}")
        return res

    @property
    def agent(self) -> Agent:
        if self._agent is None:
            self._agent = Agent(self.name)
        return self._agent

    # links

    def veth(self, name: str, peer: str) -> None:
        self.ip("link", "add", name, "type", "veth", "peer", "name", peer)

    def make_settable(self, dev: str) -> None:
        """A veth gets a NAPI instance (threaded becomes writable) when up with GRO on."""
        self.ip("link", "set", dev, "up")
        self.run("ethtool", "-K", dev, "gro", "on")

    def ifindex(self, dev: str) -> int:
        return json.loads(self.ip("-j", "link", "show", "dev", dev).stdout)[0]["ifindex"]

    def threaded(self, dev: str):
        """0, 1, or an errno name (e.g. 'ENOENT') when it cannot be read."""
        return self.agent.call("read", names=[dev])["values"][dev]

    def values(self, *devs: str) -> dict:
        return self.agent.call("read", names=list(devs))["values"]

    def set_threaded(self, dev: str, value: int) -> None:
        reply = self.agent.call("write", name=dev, value=value)
        assert reply.get("ok"), f"writing threaded={value} to {dev}: {reply}"

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None


# -- the daemon --------------------------------------------------------------------


class Daemon:
    """One `wgnapid run` inside a namespace, with its own NOTIFY_SOCKET,
    RUNTIME_DIRECTORY and log file."""

    def __init__(self, ns: Netns, policy: Path, workdir: Path, *, log_target: str = "stderr",
                 log_level: str | None = None, runtime_dir: Path | None = None,
                 prefix: list[str] | None = None, run_args: tuple[str, ...] = (),
                 extra_env: dict | None = None):
        self.ns = ns
        self.extra_env = extra_env or {}
        # A command the daemon runs under inside the namespace; it must exec its
        # arguments (e.g. `unshare --mount sh -c '...; exec "$@"' sh`), so that
        # self.pid stays the daemon's.
        self.prefix = list(prefix or [])
        self.policy = policy
        self.workdir = workdir
        self.log_target = log_target
        self.log_level = log_level
        self.run_args = run_args  # options of `run`, e.g. --watch-policy
        self.runtime_dir = runtime_dir or workdir / "run"
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        workdir.mkdir(parents=True, exist_ok=True)
        # sun_path is limited to 108 bytes: keep the socket in a short directory.
        self._sockdir = tempfile.mkdtemp(prefix="wgn-", dir="/tmp")
        self.notify_path = os.path.join(self._sockdir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.notifications: list[tuple[float, str]] = []  # (monotonic time, datagram)
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "daemon.log"
        self.started_wall = 0.0
        self.runs = 0

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env.update(NOTIFY_SOCKET=self.notify_path, RUNTIME_DIRECTORY=str(self.runtime_dir), PYTHONUNBUFFERED="1")
        env.update(self.extra_env)
        return env

    def start(self, wait_ready: bool = True) -> "Daemon":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        argv = [WGNAPID, "--config", str(self.policy), "--log-target", self.log_target]
        if self.log_level:
            argv += ["--log-level", self.log_level]
        argv += ["run", *self.run_args]
        self.started_wall = time.time()
        self._mark = len(self.notifications)
        with open(self.log_path, "a") as log:
            log.write(f"--- start {self.runs}\n")
            log.flush()
            # ip netns exec execs the command: self.proc.pid is the daemon's pid.
            self.proc = subprocess.Popen(self.ns.exec_argv(*self.prefix, *argv), env=self.env, stdout=log, stderr=log)
        if wait_ready:
            self.wait_ready()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # notifications

    def _drain(self, timeout: float) -> None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            return
        self.notifications.append((time.monotonic(), data.decode(errors="replace")))
        self.sock.setblocking(False)
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            self.notifications.append((time.monotonic(), data.decode(errors="replace")))

    def wait_notify(self, line: str, *, after: int | None = None, timeout: float = READY_TIMEOUT,
                    prefix: bool = False) -> int:
        """Index of the first datagram at or after ``after`` holding ``line`` (or a
        line starting with it, with ``prefix``)."""
        start = self._mark if after is None else after
        deadline = time.monotonic() + timeout
        while True:
            for i in range(start, len(self.notifications)):
                lines = self.notifications[i][1].split("\n")
                if any(l.startswith(line) if prefix else l == line for l in lines):
                    return i
            start = len(self.notifications)
            if not self.alive():
                self._drain(0.05)
                if start == len(self.notifications):
                    raise AssertionError(f"daemon exited ({self.proc.returncode}) before {line!r}:\n{self.log()}")
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {line!r} within {timeout} s; got {[n for _, n in self.notifications]};\n{self.log()}"
                )
            self._drain(min(left, 0.2))

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> int:
        return self.wait_notify("READY=1", timeout=timeout)

    # control

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until it exited)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not exit within {timeout} s of SIGTERM:\n{self.log()}")
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test stopped it
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.sock.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)

    # views

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def log_lines(self) -> list[str]:
        return [l for l in self.log().splitlines() if not l.startswith("--- start ")]

    def status_path(self) -> Path:
        """The daemon's status document: one per daemon, named by its network
        namespace (status-<netns inode>.json)."""
        return self.runtime_dir / f"status-{self.ns.inode}.json"

    def status_file(self) -> dict | None:
        try:
            return json.loads(self.status_path().read_text())
        except (OSError, ValueError):
            return None

    def link_state(self, name: str) -> str | None:
        doc = self.status_file()
        for link in (doc or {}).get("links", []):
            if link["name"] == name:
                return link["state"]
        return None

    def reload(self, timeout: float = 20.0) -> tuple[str, int]:
        """SIGHUP, then wait for RELOADING=1 and a READY=1 after it. Returns (the
        RELOADING datagram, index of READY=1). A reload re-lists every link before
        READY=1, so this is also a barrier when periodic resyncs are far apart."""
        mark = len(self.notifications)
        self.signal(signal.SIGHUP)
        i = self.wait_notify("RELOADING=1", after=mark, timeout=timeout)
        j = self.wait_notify("READY=1", after=i + 1, timeout=timeout)
        return self.notifications[i][1], j

    def barrier(self, control: str, timeout: float = 10.0) -> None:
        """Wait for a full resync that started after this call: knock the control
        link (policy "on", settable) to 0 and wait until the daemon re-asserts it.
        Writing `threaded` emits no event, so only a resync can fix it, and a
        resync evaluates every link."""
        self.ns.set_threaded(control, 0)
        wait_until(lambda: self.ns.threaded(control) == 1, timeout, f"a resync re-asserting {control}")

    def cli(self, *args, check: bool = False, user: str | None = None) -> subprocess.CompletedProcess:
        """Another wgnapid command in the same namespace, with the daemon's
        RUNTIME_DIRECTORY (so `status` sees this daemon)."""
        return run_cli(self.ns, self.policy, *args, check=check, user=user,
                       env={"RUNTIME_DIRECTORY": str(self.runtime_dir)})


def run_cli(ns: Netns, policy: Path | str, *args, check: bool = False, user: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """``wgnapid --config POLICY ARGS`` inside the namespace; ``user``: as that uid/gid
    with no groups (setpriv), i.e. without root's capabilities."""
    argv = [WGNAPID, "--config", str(policy), *args]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    full_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "RUNTIME_DIRECTORY")}
    full_env.update(env or {})
    return ns.run(*argv, check=check, env=full_env)


def assert_clean_log(d: Daemon) -> None:
    """No error-priority line and no traceback in a stderr-target daemon log."""
    text = d.log()
    bad = [l for l in text.splitlines() if l.startswith("wgnapid: error:") or "Traceback" in l]
    assert not bad, f"error lines in the daemon log:\n" + "\n".join(bad[:20])


# -- journald ------------------------------------------------------------------------


def journald_running() -> bool:
    res = subprocess.run(["pgrep", "-x", "systemd-journal"], capture_output=True)
    return res.returncode == 0


def connectable(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
        return True
    except OSError:
        return False


def journal_entries(pid: int, since_wall: float) -> list[dict]:
    """wgnapid's journal entries from one daemon process."""
    res = subprocess.run(
        ["journalctl", "--no-pager", "-o", "json", "--since", f"@{int(since_wall) - 1}",
         "SYSLOG_IDENTIFIER=wgnapid", f"_PID={pid}"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def wait_journal(d: Daemon, pred, what: str, timeout: float = 20.0) -> list[dict]:
    """Poll the journal until ``pred(entries)`` holds; returns the entries."""
    return wait_until(lambda: (e := journal_entries(d.pid, d.started_wall)) and pred(e) and e,
                      timeout, what, interval=0.2)
