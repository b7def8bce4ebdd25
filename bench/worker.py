"""One benchmark run inside a private network namespace.

Started by the orchestrator as `ip netns exec bench-XXXX python -m bench.worker`
(so /sys/class/net shows that namespace). Reads one JSON spec line on stdin,
talks JSON lines on stdout:
  -> {"op": "wait", "names": [...], "since": NS, "timeout": S}
  <- {"missing": [...]}             (the orchestrator watches kthread forks)
  -> {"op": "result", ...}
The subject (wgnapid or an alternative) is started here, so it inherits the
namespace and the remounted sysfs.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import tempfile
import time
import traceback

from bench import netdev
from bench.subjects import make

_out = sys.stdout


def emit(obj: dict) -> None:
    _out.write(json.dumps(obj) + "\n")
    _out.flush()


def ask(obj: dict) -> dict:
    emit(obj)
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("orchestrator went away")
    return json.loads(line)


def wait_forks(names: list[str], since: int, timeout: float) -> list[str]:
    return ask({"op": "wait", "names": names, "since": since, "timeout": timeout})["missing"]


def sleep_until(t_ns: int) -> None:
    left = (t_ns - time.monotonic_ns()) / 1e9
    if left > 0:
        time.sleep(left)


class Run:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.prefix = spec["prefix"]  # per run: link names are b<prefix><group><i in base 36>
        self.workdir = spec.get("workdir") or tempfile.mkdtemp(prefix="wgnapid-bench-")
        self.subject = make(spec["subject"], self.workdir, spec.get("profile"), spec.get("snapshot"))
        self.fds: list[int] = []
        self.links: list[dict] = []  # {"name", "t0", "group", ["t_read"]}
        self.out: dict = {"workdir": self.workdir}
        self.rng = random.Random(spec.get("seed", 1))

    def name(self, group: str, i: int) -> str:
        return f"b{self.prefix}{group}{_b36(i)}"

    def sample(self) -> dict:
        s = self.subject.sample()
        s["t"] = time.monotonic_ns()
        s["kthreadd_ns"] = _kthreadd_ns()
        return s

    # -- scenarios -----------------------------------------------------------

    def single(self) -> None:
        """Links appear one at a time; the next only after the previous is done
        (or, for subjects without a bounded reaction, at random times: paced)."""
        sp = self.spec
        n, link, poll = sp["n"], sp.get("link", "tun"), sp.get("poll", False)
        lo, hi = sp.get("gap_ms", (5, 20))
        per_link = sp.get("per_link_wait", True)
        if link == "veth-up":
            self._make_veths(n, "v")
        for i in range(n):
            rec = {"group": "single"}
            if link == "tun":
                rec["name"] = self.name("s", i)
                fd, rec["t0"] = netdev.tun_napi(rec["name"])
                self.fds.append(fd)
            else:
                rec["name"] = self.name("v", i)
                self.ioctl.set_up(rec["name"])
                rec["t0"] = time.monotonic_ns()
            if poll:
                rec["t_read"] = _poll_until_one(rec["name"], 5.0)
            elif per_link:
                wait_forks([rec["name"]], rec["t0"] - 100_000_000, sp.get("timeout", 5.0))
            self.links.append(rec)
            time.sleep(self.rng.uniform(lo, hi) / 1000)
        if not per_link:
            self._final_wait([r["name"] for r in self.links], self.links[0]["t0"], sp["timeout"])

    def paced(self) -> None:
        """n links at uniformly random moments over window_s seconds."""
        sp = self.spec
        n, window, link = sp["n"], sp["window_s"], sp.get("link", "tun")
        if link == "veth-up":
            self._make_veths(n, "v")
        start = time.monotonic_ns() + 100_000_000
        times = sorted(start + int(self.rng.uniform(0, window) * 1e9) for _ in range(n))
        for i, t in enumerate(times):
            sleep_until(t)
            rec = {"group": "paced"}
            if link == "tun":
                rec["name"] = self.name("p", i)
                fd, rec["t0"] = netdev.tun_napi(rec["name"])
                self.fds.append(fd)
            else:
                rec["name"] = self.name("v", i)
                self.ioctl.set_up(rec["name"])
                rec["t0"] = time.monotonic_ns()
            self.links.append(rec)
        self._final_wait([r["name"] for r in self.links], start, sp["timeout"])

    def burst(self) -> None:
        """`size` tun links created back to back, `bursts` times."""
        sp = self.spec
        self.out["bursts"] = []
        for b in range(sp.get("bursts", 1)):
            group = chr(ord("a") + b)
            if sp.get("phase_s"):
                # A timer's latency depends on where the burst falls in its
                # period: start at a random phase, not at a fixed delay after it.
                time.sleep(self.rng.uniform(0, sp["phase_s"]))
            before = self.sample()
            names, recs = [], []
            for i in range(sp["size"]):
                name = self.name(group, i)
                fd, t0 = netdev.tun_napi(name)
                self.fds.append(fd)
                names.append(name)
                recs.append({"name": name, "t0": t0, "group": f"burst{b}"})
            created = time.monotonic_ns()
            missing = wait_forks(names, recs[0]["t0"] - 100_000_000, sp["timeout"])
            waited = time.monotonic_ns()
            time.sleep(sp.get("settle_s", 1.5))  # the status file is written at most once a second
            after = self.sample()
            threaded = sum(1 for n in names if netdev.read_threaded(n) == 1)
            self.links.extend(recs)
            self.out["bursts"].append({
                "size": sp["size"], "before": before, "after": after,
                "create_s": (created - recs[0]["t0"]) / 1e9, "waited_s": (waited - recs[0]["t0"]) / 1e9,
                "fork_missing": len(missing), "threaded": threaded,
                "not_threaded": sp["size"] - threaded, "status": self.subject.status(),
            })
            if b + 1 < sp.get("bursts", 1):
                time.sleep(sp.get("gap_s", 1.0))

    def waiting(self) -> None:
        """Links that cannot be set yet, then become settable with no event:
        multi-queue tun without NAPI, later a NAPI queue is attached."""
        sp = self.spec
        n = sp["n"]
        self.out["rounds"] = []
        for r in range(sp["rounds"]):
            group = chr(ord("w") + r)
            names = [self.name(group, i) for i in range(n)]
            for name in names:
                fd, _ = netdev.tun_mq_without_napi(name)
                self.fds.append(fd)
            time.sleep(sp["settle_s"])  # long enough for the retry back-off to reach its cap
            # Must all fail with EOPNOTSUPP (95): no NAPI yet.
            rnd = {"n": n, "not_settable": sum(1 for x in names if netdev.write_threaded(x, 1) == 95)}
            if r == 0 and sp.get("cpu_window_s"):
                before = self.sample()
                time.sleep(sp["cpu_window_s"])
                after = self.sample()
                rnd.update(before=before, after=after, load=os.getloadavg())
            if not sp.get("attach", True):
                self.out["rounds"].append(rnd)
                continue
            start = time.monotonic_ns() + 50_000_000
            times = sorted(start + int(self.rng.uniform(0, sp["attach_window_s"]) * 1e9) for _ in names)
            order = list(names)
            self.rng.shuffle(order)
            for name, t in zip(order, times):
                sleep_until(t)
                fd, t0 = netdev.tun_mq_attach_napi(name)
                self.fds.append(fd)
                self.links.append({"name": name, "t0": t0, "group": f"round{r}"})
            missing = wait_forks(names, start - 100_000_000, sp["timeout"])
            rnd["fork_missing"] = len(missing)
            rnd["threaded"] = sum(1 for x in names if netdev.read_threaded(x) == 1)
            self.out["rounds"].append(rnd)

    def parse(self) -> None:
        """Capture the RTM_NEWLINK events of tun creation, then time parsing them
        with pyroute2 and with wgnapid's reader, under each virtualenv."""
        import socket

        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        sock.bind((0, 1))
        for i in range(20):
            fd, _ = netdev.tun_napi(self.name("x", i))
            self.fds.append(fd)
        sock.setblocking(False)
        capture = b""
        while True:
            try:
                capture += sock.recv(1 << 20)
            except BlockingIOError:
                break
        sock.close()
        path = os.path.join(self.workdir, "newlink.bin")
        with open(path, "wb") as f:
            f.write(capture)
        self.out["parse"] = []
        for r, venv in self._under_each_venv("bench.parsecost", path):
            if r.returncode == 0:
                self.out["parse"].append(dict(json.loads(r.stdout), venv=venv))

    def _under_each_venv(self, module: str, *args: str):
        """Run ``python -m module args`` under this virtualenv and, when it is
        another one, .venv-debian13 too: yields (CompletedProcess, venv name)."""
        import subprocess

        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        pythons = [sys.executable]
        other = os.path.join(repo, ".venv-debian13", "bin", "python")
        if os.path.exists(other) and os.path.realpath(sys.prefix) != os.path.realpath(os.path.dirname(os.path.dirname(other))):
            pythons.append(other)
        pypath = os.pathsep.join(p for p in (self.spec.get("snapshot"), repo) if p)
        for py in pythons:
            r = subprocess.run([py, "-m", module, *args], capture_output=True, text=True,
                               cwd=self.workdir, env=dict(os.environ, PYTHONPATH=pypath))
            yield r, os.path.basename(sys.prefix if py == sys.executable else os.path.dirname(os.path.dirname(py)))

    def identity(self) -> None:
        """CPU per sysfs access with and without the identity proof (bench.identitycost),
        over ``n`` tun links of this namespace."""
        import subprocess

        names = [self.name("i", i) for i in range(self.spec.get("n", 200))]
        for name in names:
            fd, _ = netdev.tun_napi(name)
            self.fds.append(fd)
        path = os.path.join(self.workdir, "names.json")
        with open(path, "w") as f:
            json.dump(names, f)
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        pypath = os.pathsep.join(p for p in (self.spec.get("snapshot"), repo) if p)
        r = subprocess.run([sys.executable, "-m", "bench.identitycost", path], capture_output=True,
                           text=True, cwd=self.workdir, env=dict(os.environ, PYTHONPATH=pypath))
        self.out["identity"] = json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr[-2000:]}

    def stallcost(self) -> None:
        """The stall watch's decode + judge cost per window for 1,000 peers, and
        its RSS, under each virtualenv (bench/stallcost.py; no WireGuard here)."""
        self.out["stallcost"] = []
        for r, venv in self._under_each_venv("bench.stallcost", str(self.spec.get("peers", 1000))):
            if r.returncode == 0:
                self.out["stallcost"].append(dict(json.loads(r.stdout), venv=venv))
            else:
                self.out.setdefault("stallcost_errors", []).append(r.stderr[-2000:])

    def idle(self) -> None:
        time.sleep(self.spec.get("settle_s", 2.0))
        status0 = self.subject.status()
        before = self.sample()
        time.sleep(self.spec["window_s"])
        after = self.sample()
        self.out["idle"] = {"before": before, "after": after, "status_before": status0,
                            "status_after": self.subject.status(),
                            "ready_ns": getattr(self.subject, "ready_ns", 0)}

    def ready(self) -> None:
        """Time from spawn to READY=1 with `existing` links (tun, not threaded),
        `repeats` times; with `restart`, once more with every link already threaded."""
        sp = self.spec
        names = [self.name("r", i) for i in range(sp["existing"])]
        for name in names:
            fd, _ = netdev.tun_napi(name)
            self.fds.append(fd)
        self.out["ready"] = []
        for _ in range(sp["repeats"]):
            for name in names:
                netdev.write_threaded(name, 0)
            rec = {"cold_s": self.subject.start()}
            rec["cold_sample"] = self.sample()
            rec["threaded_at_ready"] = sum(1 for n in names if netdev.read_threaded(n) == 1)
            self.subject.stop()
            if sp.get("restart"):
                rec["warm_s"] = self.subject.start()
                rec["warm_sample"] = self.sample()
                self.subject.stop()
            self.out["ready"].append(rec)

    # -- helpers -------------------------------------------------------------

    def _make_veths(self, n: int, group: str) -> None:
        """veth pairs: `b...` here, down, GRO on (so they become settable when
        set up); the peers live in the helper namespace, out of sight."""
        rtnl = netdev.Rtnl()
        self.ioctl = netdev.Ioctl()
        peer_ns = os.open(f"/run/netns/{self.spec['peer_netns']}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for i in range(n):
                name = self.name(group, i)
                rtnl.veth(name, f"p{self.prefix}{group}{_b36(i)}", peer_ns)
                self.ioctl.set_gro(name, True)
        finally:
            os.close(peer_ns)
            rtnl.close()
        # Must be 0: a veth that is down has no NAPI instance.
        self.out["veth_settable_while_down"] = sum(
            1 for i in range(n) if netdev.write_threaded(self.name(group, i), 1) == 0)
        time.sleep(self.spec.get("settle_s", 1.5))

    def _final_wait(self, names: list[str], since: int, timeout: float) -> None:
        missing = wait_forks(names, since - 100_000_000, timeout)
        self.out["fork_missing"] = len(missing)
        self.out["threaded"] = sum(1 for n in names if netdev.read_threaded(n) == 1)

    def run(self) -> dict:
        kind = self.spec["type"]
        if kind not in ("ready", "parse", "identity", "stallcost"):
            self.out["start_s"] = self.subject.start()
            time.sleep(self.spec.get("warmup_s", 0.5))
            self.out["start_sample"] = self.sample()
        try:
            getattr(self, kind)()
            if kind not in ("ready", "parse", "identity", "stallcost"):
                self.out["end_sample"] = self.sample()
                self.out["status"] = self.subject.status()
        finally:
            self.subject.stop()
        self.out["links"] = self.links
        return self.out


def _poll_until_one(name: str, timeout: float) -> int | None:
    """Read `threaded` every ~50 us until it reads 1; the time of that read."""
    fd = os.open(f"/sys/class/net/{name}/threaded", os.O_RDONLY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic_ns() + int(timeout * 1e9)
        while True:
            value = os.pread(fd, 8, 0)
            now = time.monotonic_ns()
            if value.startswith(b"1"):
                return now
            if now > deadline:
                return None
            time.sleep(0.00002)
    finally:
        os.close(fd)


def _b36(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if not i:
            return out


def _kthreadd_ns() -> int:
    try:
        with open("/proc/2/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError):
        return 0


# What systemd/wgnapid.service gives the daemon (LimitNOFILE=): thousands of
# waiting links keep their `threaded` file open (wgnapid.retries).
UNIT_NOFILE = 65536


def main() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # As root the hard limit may rise too: the unit's, whatever the shell had.
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, UNIT_NOFILE),) * 2)
    except (OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spec = json.loads(sys.stdin.readline())
    try:
        out = Run(spec).run()
        emit({"op": "result", "ok": True, **out})
    except Exception as exc:  # report, so the orchestrator can say what failed
        emit({"op": "result", "ok": False, "error": f"{type(exc).__name__}: {exc}",
              "trace": traceback.format_exc()})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
