"""Helpers for the scenarios that run inside the qemu guest (tests/guest/).

Everything here drives the real tools: `ip`, `wg`, the installed `wgnapid`
console script, journald's `journalctl`. Nothing is mocked. Every wait is a
poll against a deadline: under TCG everything is 10-20x slower than on the
host, so fixed sleeps are either flaky or wasteful.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The project's venv (the guest sees the host's filesystem read-only). The
# guest entry point runs pytest with this venv's python, so sys.prefix is it.
VENV = Path(os.environ.get("WGNAPID_VENV", sys.prefix))
WGNAPID = VENV / "bin" / "wgnapid"
SYSFS_NET = Path("/sys/class/net")
IN_GUEST = os.environ.get("WGNAPID_GUEST") == "1"

# Under TCG a python process that imports pydantic and pyroute2 needs 10-15 s.
DAEMON_READY_TIMEOUT = float(os.environ.get("WGNAPID_READY_TIMEOUT", "120"))
CLI_TIMEOUT = 120.0


# -- kernel -------------------------------------------------------------------

def kernel_version() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def kernel_is_risky() -> bool:
    """WireGuard threaded NAPI has unrecovered stall reports below 6.10 (KERNEL-FACTS.md)."""
    return kernel_version() < (6, 10)


# -- polling ------------------------------------------------------------------

def wait_until(what: str, predicate: Callable[[], object], timeout: float,
               interval: float = 0.05) -> tuple[object, float]:
    """Poll ``predicate`` until it returns something truthy; return (value, seconds).

    Raises AssertionError naming ``what`` and the last value when the deadline passes.
    """
    start = time.monotonic()
    deadline = start + timeout
    value = None
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - start
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}; "
                                 f"last value: {value!r}")
        time.sleep(interval)


def hold_for(what: str, predicate: Callable[[], object], seconds: float,
             interval: float = 0.1) -> None:
    """Assert ``predicate`` stays truthy for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        assert value, f"{what} stopped holding: {value!r}"
        time.sleep(interval)


# -- commands -----------------------------------------------------------------

def run(*argv: str, input: str | None = None, check: bool = True,
        timeout: float = 60.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def ip_batch(lines: Iterable[str], check: bool = True) -> None:
    text = "".join(line + "\n" for line in lines)
    if text:
        run("ip", "-batch", "-", input=text, check=check, timeout=300)


# -- WireGuard ----------------------------------------------------------------

class Keys:
    """A few real key pairs made with `wg genkey`/`wg pubkey`, reused across links.

    A peer's public key only has to be unique within one device, so a handful
    of keys serve any number of tunnels.
    """

    def __init__(self, count: int = 4):
        self.private: list[str] = []
        self.public: list[str] = []
        for _ in range(count):
            priv = run("wg", "genkey").stdout.strip()
            self.private.append(priv)
            self.public.append(run("wg", "pubkey", input=priv + "\n").stdout.strip())
        self._dir = tempfile.mkdtemp(prefix="wgkeys-")
        os.chmod(self._dir, 0o700)
        self.private_file = os.path.join(self._dir, "private")
        with open(self.private_file, "w") as f:
            f.write(self.private[0] + "\n")


def wg_set_args(dev: str, keys: Keys, peers: int, net: int) -> list[str]:
    """Arguments for `wg set`: the device's private key and ``peers`` peers.

    Peers use keys 1..peers (key 0 is the device's own key).
    """
    assert 0 < peers < len(keys.public)
    argv = ["wg", "set", dev, "private-key", keys.private_file, "listen-port", "0"]
    for i in range(peers):
        argv += ["peer", keys.public[1 + i], "allowed-ips", f"10.{net % 250}.{i}.2/32"]
    return argv


def add_peers(dev: str, keys: Keys, peers: int, net: int = 0) -> None:
    run(*wg_set_args(dev, keys, peers, net))


def peer_count(dev: str) -> int:
    out = run("wg", "show", dev, "peers").stdout
    return len(out.split())


class LinkSet:
    """Links a test creates; all deleted (in one `ip -batch`) at tear-down."""

    def __init__(self):
        self.names: list[str] = []

    def add(self, name: str) -> str:
        assert len(name) <= 10, "keep names short: napi/<dev>-0 must fit in a 15-char comm"
        run("ip", "link", "add", name, "type", "wireguard")
        self.names.append(name)
        return name

    def add_many(self, names: list[str]) -> list[str]:
        ip_batch(f"link add {n} type wireguard" for n in names)
        self.names.extend(names)
        return names

    def delete(self, name: str) -> None:
        run("ip", "link", "del", name)
        self.names.remove(name)

    def cleanup(self) -> None:
        present = [n for n in self.names if (SYSFS_NET / n).exists()]
        ip_batch((f"link del {n}" for n in present), check=False)
        self.names.clear()


def wg_quick_up(links: LinkSet, name: str, keys: Keys, peers: int, net: int) -> None:
    """What wg-quick does: add the link, set key and peers, add the address, link up."""
    links.add(name)
    add_peers(name, keys, peers, net)
    run("ip", "address", "add", f"10.{net % 250}.255.1/24", "dev", name)
    run("ip", "link", "set", name, "up")


# -- sysfs and kthreads -----------------------------------------------------------

def threaded(dev: str) -> str | None:
    try:
        return (SYSFS_NET / dev / "threaded").read_text().strip()
    except OSError:
        return None


def write_threaded(dev: str, value: str) -> None:
    (SYSFS_NET / dev / "threaded").write_text(value + "\n")


def napi_threads(dev: str | None = None) -> dict[str, list[int]]:
    """Kernel threads (PPid 2) named napi/<dev>-N, as {comm: [pid, ...]}.

    With ``dev`` only that device's threads. On 6.1 and 6.12 every WireGuard
    peer's NAPI id is 0, so all of a device's peer threads are napi/<dev>-0.
    """
    found: dict[str, list[int]] = {}
    prefix = f"napi/{dev}-" if dev else "napi/"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                fields = dict(line.split(":\t", 1) for line in f.read().splitlines()
                              if ":\t" in line)
        except OSError:
            continue
        name = fields.get("Name", "").strip()
        if fields.get("PPid", "").strip() == "2" and name.startswith(prefix):
            found.setdefault(name, []).append(int(entry.name))
    return found


def napi_thread_count(dev: str) -> int:
    return sum(len(pids) for pids in napi_threads(dev).values())


# -- journald -------------------------------------------------------------------

def journal(**match: object) -> list[dict]:
    """Entries from the guest's journald, filtered by exact field matches."""
    argv = ["journalctl", "-o", "json", "--no-pager", "-q"]
    argv += [f"{k}={v}" for k, v in match.items()]
    out = run(*argv, check=False, timeout=60).stdout
    entries = []
    for line in out.splitlines():
        line = line.strip()
        if line:
            entries.append(json.loads(line))
    return entries


def journal_sync() -> None:
    """Ask journald to have written everything it received (journalctl --sync)."""
    run("journalctl", "--sync", check=False, timeout=30)


# -- the daemon -----------------------------------------------------------------

def policy_toml(*, source: str = "netlink", resync_interval: float = 1,
                pending_max_delay: float = 2, kernel_guard: str | None = None,
                rules: list[dict] | None = None, namespaces: str | None = None) -> str:
    lines = ["[daemon]", f'source = "{source}"', f"resync_interval = {resync_interval}",
             f"pending_max_delay = {pending_max_delay}", 'log_level = "info"']
    if kernel_guard is not None:
        lines.append(f'kernel_guard = "{kernel_guard}"')
    if namespaces is not None:
        lines.append(f'namespaces = "{namespaces}"')
    if rules is None:
        rules = [{"name": "tunnels", "interfaces": ["*"], "threaded": "on"}]
    for rule in rules:
        lines += ["", "[[rules]]", f'name = "{rule["name"]}"',
                  f'kinds = {json.dumps(rule.get("kinds", ["wireguard"]))}',
                  f'interfaces = {json.dumps(rule["interfaces"])}',
                  f'threaded = "{rule["threaded"]}"']
        if "netns" in rule:
            lines.append(f'netns = {json.dumps(rule["netns"])}')
    return "\n".join(lines) + "\n"


class Daemon:
    """`wgnapid --config FILE --log-target journal run`, from the installed console script.

    Started with a NOTIFY_SOCKET bound here; start() returns after READY=1.
    """

    def __init__(self, policy: str, workdir: Path, tag: str):
        self.policy = policy
        self.dir = workdir / tag
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "wgnapid.toml"
        self.config.write_text(policy)
        self.runtime = self.dir / "run"
        self.runtime.mkdir(exist_ok=True)
        self.log_file = self.dir / "daemon.stderr"
        self.proc: subprocess.Popen | None = None
        self.ready_after: float | None = None
        self.stop_seconds: float | None = None
        self.returncode: int | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RUNTIME_DIRECTORY"] = str(self.runtime)
        env.pop("NOTIFY_SOCKET", None)
        return env

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> "Daemon":
        sock_path = str(self.dir / "notify.sock")
        if os.path.exists(sock_path):
            os.unlink(sock_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind(sock_path)
        env = self.env
        env["NOTIFY_SOCKET"] = sock_path
        t0 = time.monotonic()
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [str(WGNAPID), "--config", str(self.config), "--log-target", "journal", "run"],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        try:
            deadline = t0 + DAEMON_READY_TIMEOUT
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"wgnapid run exited {self.proc.returncode} before READY=1:\n"
                        f"{self.stderr()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no READY=1 within {DAEMON_READY_TIMEOUT:.0f} s:\n{self.stderr()}")
                sock.settimeout(min(left, 0.5))
                try:
                    data = sock.recv(4096).decode(errors="replace")
                except TimeoutError:
                    continue
                if "READY=1" in data.split("\n"):
                    break
        except BaseException:
            self.kill()
            raise
        finally:
            sock.close()
        self.ready_after = time.monotonic() - t0
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until it exited)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            self.returncode = self.proc.returncode
            return self.returncode, 0.0
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"wgnapid did not exit within {timeout} s of SIGTERM")
        self.stop_seconds = time.monotonic() - t0
        return self.returncode, self.stop_seconds

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def status_path(self) -> Path:
        """The daemon's published view: $RUNTIME_DIRECTORY/status-<netns inode>.json."""
        return self.runtime / f"status-{os.stat('/proc/self/ns/net').st_ino}.json"

    def status_file(self) -> dict | None:
        """The daemon's published view, or None."""
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None

    def published_state(self, name: str) -> str | None:
        view = self.status_file() or {}
        for link in view.get("links", []):
            if link.get("name") == name:
                return link.get("state")
        return None

    def journal(self, **match: object) -> list[dict]:
        return journal(_PID=self.pid, **match)

    def cli(self, *args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess:
        """`wgnapid --config <this daemon's policy> ARGS`, seeing this daemon's status file."""
        return wgnapid_cli(*args, config=self.config, env=self.env, check_rc=check_rc)


CLI_SECONDS: list[tuple[str, float]] = []  # (command, seconds) of every CLI run, for the report


def wgnapid_cli(*args: str, config: Path | None, env: dict | None = None,
                check_rc: int | None = 0) -> subprocess.CompletedProcess:
    argv = [str(WGNAPID)]
    if config is not None:
        argv += ["--config", str(config)]
    argv += ["--log-target", "journal", *args]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT,
                          env=env, stdin=subprocess.DEVNULL)
    CLI_SECONDS.append((" ".join(args), time.monotonic() - t0))
    if check_rc is not None and proc.returncode != check_rc:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}, expected "
                             f"{check_rc}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def cli_json(*args: str, config: Path | None, env: dict | None = None,
             check_rc: int | None = 0) -> dict:
    proc = wgnapid_cli(*args, config=config, env=env, check_rc=check_rc)
    try:
        return json.loads(proc.stdout)
    except ValueError as e:
        raise AssertionError(f"not JSON from wgnapid {' '.join(args)}: {e}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}") from None


def links_by_name(report: dict) -> dict[str, dict]:
    return {link["name"]: link for link in report.get("links", [])}


class DaemonPool:
    """At most one daemon at a time, reused by consecutive scenarios with the same policy.

    Starting wgnapid costs 10-15 s under TCG, so scenarios that share a policy
    share the daemon. Every stop is recorded: the SIGTERM scenario asserts them all.
    """

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.current: Daemon | None = None
        self.stopped: list[Daemon] = []
        self.started: list[Daemon] = []

    def get(self, policy: str) -> Daemon:
        if self.current is not None and self.current.policy == policy and self.current.alive():
            return self.current
        self.stop()
        daemon = Daemon(policy, self.workdir, f"daemon{len(self.started)}")
        self.started.append(daemon)
        self.current = daemon
        return daemon.start()

    def stop(self) -> Daemon | None:
        daemon, self.current = self.current, None
        if daemon is not None and daemon.proc is not None:
            daemon.stop()
            self.stopped.append(daemon)
        return daemon
