"""A sandbox for testing ``daemon.namespaces = "all"`` on a shared host.

A daemon in "all" mode enters every network namespace it can find. Under test it
must only ever find what the test made, so it runs in a sandbox:

- its own PID namespace, with its own /proc: the /proc/*/ns/net scan sees only
  processes started in the sandbox;
- its own mount namespace, with a tmpfs on /run: /run/netns and
  /run/docker/netns hold only namespaces made in the sandbox (the journal
  socket directory is bind-mounted back, so logging to journald still works);
- its own network namespace, with a sysfs mounted for it: the daemon's "self"
  holds no host link.

Killing the sandbox's PID 1 ends every process in it, and with the mount
namespace gone its named namespaces go too. On top of that, every test policy
names its namespaces by unique globs (a second belt).

Named namespaces are made with ``ip netns add`` inside the sandbox's mount
namespace; unnamed ones are held by an nsagent started with ``unshare --net``
inside the sandbox's PID namespace (its name there is ``pid:<its PID in the
sandbox>``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from wgtest import HERE, Agent, Daemon, Netns, wait_until

SANDBOX_SCRIPT = r"""
set -e
mount -t sysfs wgn-sysfs /sys
mkdir -p "$HOSTRUN"
mount --bind /run "$HOSTRUN"
mount -t tmpfs -o mode=755 wgn-run /run
mkdir -p /run/netns /run/docker/netns /run/systemd/journal
if [ -S "$HOSTRUN/systemd/journal/socket" ]; then
    mount --bind "$HOSTRUN/systemd/journal" /run/systemd/journal
fi
echo ready
exec sleep infinity
"""


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def inner_pid(host_pid: int) -> int:
    """The PID a process has in the innermost PID namespace (NSpid's last field)."""
    with open(f"/proc/{host_pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {host_pid}")


class Sandbox:
    def __init__(self, workdir: Path):
        self.token = secrets.token_hex(3)
        self.prefix = f"wgn10{self.token}"  # unique namespace names: <prefix>-<x>
        self.workdir = workdir
        self.hostrun = workdir / "hostrun"
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--net", "--propagation", "private",
             "sh", "-c", SANDBOX_SCRIPT],
            env=dict(os.environ, HOSTRUN=str(self.hostrun)), stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"sandbox did not start: {line!r}"
        # unshare --fork: the sandbox's PID 1 is unshare's child.
        self.init = wait_until(lambda: (c := _children(self.proc.pid)) and c[0], 10, "the sandbox's PID 1")
        self.holders: list[Unnamed] = []
        self.named: list[Named] = []

    def enter_argv(self, *, mnt=True, pid=True, net=False) -> list[str]:
        argv = ["nsenter", "-t", str(self.init)]
        if mnt:
            argv.append("-m")
        if pid:
            argv.append("-p")
        if net:
            argv.append("-n")
        return argv + ["--"]

    def run(self, *argv, check=True, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 300)
        res = subprocess.run(self.enter_argv() + [str(a) for a in argv], **kw)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, argv))} in the sandbox: rc {res.returncode}: {res.stderr}")
        return res

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def add_named(self, suffix: str) -> "Named":
        ns = Named(self, self.name(suffix))
        self.run("ip", "netns", "add", ns.name)
        ns.ip("link", "set", "lo", "up")
        self.named.append(ns)
        return ns

    def add_many_named(self, suffixes: list[str]) -> list["Named"]:
        made = [Named(self, self.name(s)) for s in suffixes]
        self.run("ip", "-batch", "-", input="".join(f"netns add {ns.name}\n" for ns in made))
        self.named += made
        return made

    def add_unnamed(self) -> "Unnamed":
        ns = Unnamed(self)
        self.holders.append(ns)
        return ns

    def ino(self, path_in_sandbox: str) -> int:
        return int(self.run("stat", "-L", "-c", "%i", path_in_sandbox).stdout)

    def close(self) -> None:
        for ns in self.holders + self.named:
            ns.close()
        if self.proc.poll() is None:
            try:
                os.kill(self.init, signal.SIGKILL)  # PID 1: every process in the sandbox goes
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _SandboxNs(Netns):
    """Netns's helpers (veth, make_settable, threaded, ...) for a namespace in the sandbox."""

    sandbox: Sandbox

    def ip(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(self.ip_argv(*map(str, args)), capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            raise AssertionError(f"ip {' '.join(map(str, args))} in {self.name}: {res.stderr}")
        return res

    def ip_batch(self, commands: list[str], check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(self.ip_argv("-force", "-batch", "-"), input="\n".join(commands) + "\n",
                             capture_output=True, text=True, timeout=300)
        if check and res.returncode != 0:
            raise AssertionError(f"ip -batch in {self.name}: {res.stderr[:2000]}")
        return res


class Named(_SandboxNs):
    def __init__(self, sandbox: Sandbox, name: str):
        super().__init__(name)
        self.sandbox = sandbox

    def ip_argv(self, *args) -> list[str]:
        return self.sandbox.enter_argv() + ["ip", "-n", self.name, *args]

    def exec_argv(self, *argv) -> list[str]:
        return self.sandbox.enter_argv() + ["ip", "netns", "exec", self.name, *map(str, argv)]

    @property
    def agent(self) -> Agent:
        if self._agent is None:
            self._agent = _ArgvAgent(self.exec_argv(sys.executable, str(HERE / "nsagent.py")), self.name)
        return self._agent

    @property
    def netns_name(self) -> str:
        return self.name

    @property
    def inode(self) -> int:
        return self.sandbox.ino(f"/run/netns/{self.name}")

    def delete(self) -> None:
        self.close()
        self.sandbox.run("ip", "netns", "del", self.name)


class Unnamed(_SandboxNs):
    """An unnamed namespace held by an nsagent (``unshare --net``) in the sandbox."""

    def __init__(self, sandbox: Sandbox):
        super().__init__("(unnamed)")
        self.sandbox = sandbox
        argv = sandbox.enter_argv(pid=True) + [
            "unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t sysfs wgn-sysfs /sys && ip link set lo up && exec "$0" "$1"',
            sys.executable, str(HERE / "nsagent.py")]
        self._agent = _ArgvAgent(argv, "an unnamed namespace")
        # nsenter --pid forks: the holder is nsenter's child.
        self.host_pid = wait_until(lambda: (c := _children(self._agent.proc.pid)) and c[0], 10, "the holder")
        self.pid = inner_pid(self.host_pid)
        self.name = f"pid:{self.pid}"
        self.ino = os.stat(f"/proc/{self.host_pid}/ns/net").st_ino

    @property
    def netns_name(self) -> str:
        return self.name

    @property
    def inode(self) -> int:
        return self.ino

    def ip_argv(self, *args) -> list[str]:
        return ["nsenter", "-t", str(self.host_pid), "-n", "--", "ip", *args]

    def run(self, *argv, check: bool = True, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        res = subprocess.run(["nsenter", "-t", str(self.host_pid), "-n", "--", *map(str, argv)], **kw)
        if check and res.returncode != 0:
            raise AssertionError(f"{argv} in {self.name}: {res.stderr}")
        return res

    def exit(self) -> None:
        """The holder exits: nothing holds the namespace any more but the daemon."""
        if self._agent is not None:
            self._agent.close()
            self._agent = None

    def close(self) -> None:
        self.exit()


class _ArgvAgent(Agent):
    def __init__(self, argv: list[str], what: str):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        hello = json.loads(self.proc.stdout.readline() or "{}")
        assert "ready" in hello, f"nsagent did not start in {what}"


class SandboxDaemon(Daemon):
    """`wgnapid run` in the sandbox (its PID, mount and network namespaces)."""

    def __init__(self, sandbox: Sandbox, policy: Path, workdir: Path, **kw):
        super().__init__(None, policy, workdir, **kw)
        self.sandbox = sandbox
        self.ns = _Shell(sandbox)
        self._pid = None

    def start(self, wait_ready: bool = True) -> "Daemon":
        self._pid = None
        return super().start(wait_ready)

    @property
    def pid(self) -> int:
        if self._pid is None:
            # nsenter --pid forks: the daemon is nsenter's child.
            self._pid = wait_until(lambda: (c := _children(self.proc.pid)) and c[0], 10, "the daemon's PID")
        return self._pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        t0 = time.monotonic()
        self.signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"daemon did not exit within {timeout} s of SIGTERM:\n{self.log()}")
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(self.pid, sig)
                except (ProcessLookupError, AssertionError):
                    pass
            self.proc.kill()
            self.proc.wait()


class _Shell:
    """What Daemon needs of a namespace (exec_argv, run) for the sandbox itself."""

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.name = "the sandbox"
        self.inode = os.stat(f"/proc/{sandbox.init}/ns/net").st_ino  # the daemon's "self"

    def exec_argv(self, *argv) -> list[str]:
        return self.sandbox.enter_argv(pid=True, net=True) + [str(a) for a in argv]

    def run(self, *argv, check: bool = True, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 120)
        res = subprocess.run(self.exec_argv(*argv), **kw)
        if check and res.returncode != 0:
            raise AssertionError(f"{argv} in the sandbox: rc {res.returncode}: {res.stderr}")
        return res


def write_ns_policy(path: Path, rules, *, namespaces: str = "all", resync_interval: float = 2,
                    pending_max_delay: float = 1, source: str = "netlink") -> Path:
    """A policy; ``rules`` are (name, kinds, interfaces, netns globs, threaded)."""
    lines = ["[daemon]", f'source = "{source}"', f"resync_interval = {resync_interval}",
             f"pending_max_delay = {pending_max_delay}", 'kernel_guard = "strict"',
             f'namespaces = "{namespaces}"']
    for name, kinds, interfaces, netns, threaded in rules:
        lines += ["", "[[rules]]", f'name = "{name}"', f"kinds = {json.dumps(list(kinds))}",
                  f"interfaces = {json.dumps(list(interfaces))}", f"netns = {json.dumps(list(netns))}",
                  f'threaded = "{threaded}"']
    path.write_text("\n".join(lines) + "\n")
    return path

