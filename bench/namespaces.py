"""python -m bench.namespaces [--quick] [--out FILE.md]

The cost of ``daemon.namespaces = "all"`` (issue 10), printed as a table and
written to bench/NAMESPACES.md (bench/out/ with --quick):

- 1,000 namespaces with one link each, and 10 namespaces with 1,000 links
  each, all there before the daemon starts: time from start to READY=1 (the
  daemon has entered every namespace and threaded every link by then), peak
  RSS, daemon CPU per link at start; then one more link in every namespace
  (1,000 in both cases) made while it runs: daemon CPU per link for those;
- idle wake-ups: context switches of every daemon thread over an idle window
  shorter than resync_interval (goal: none);
- a link in a namespace made while the daemon runs: in a watched directory
  (``ip netns add``, inotify) and in an unnamed namespace (``unshare --net``,
  found by the /proc scan of the resync), time from the link's creation to
  threaded = 1.

Everything runs in a sandbox of its own PID, mount and network namespaces
(the daemon then finds only the bench's namespaces; see
tests/integration/nstest.py for the same idea), with a tmpfs on /run. Links
are tun with IFF_NAPI (settable at once), made from a thread that setns()es
into each namespace. Values are read back through a sysfs instance of each
namespace (wgnapid.nsenter, as the daemon does; the integration tests check
that mechanism against `ip netns exec`).
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TUNSETIFF, TUNSETPERSIST = 0x400454CA, 0x400454CB
IFF_TUN, IFF_NO_PI, IFF_NAPI = 0x0001, 0x1000, 0x0010
GOALS = {"ready_s": 3.0, "rss_mb": 120.0, "cpu_us": 300.0}


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def in_threads(work):
    out = {}

    def run():
        try:
            out["value"] = work()
        except BaseException as exc:  # noqa: BLE001
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class Links:
    """tun links (fds kept) in namespaces given by nsfs path, and readers of
    their `threaded` values through a sysfs instance of each namespace."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.views: dict[str, int] = {}

    def make(self, paths: list[str], names: list[str]) -> float:
        def work():
            t0 = time.perf_counter()
            for path in paths:
                nsfd = os.open(path, os.O_RDONLY)
                try:
                    _setns(nsfd)
                finally:
                    os.close(nsfd)
                for name in names:
                    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
                    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI | IFF_NAPI))
                    # Persistent: closing the fd then leaves the link, which goes in
                    # one batch with its namespace (closing 10,000 plain tun fds
                    # unregisters them one by one, an rcu_barrier each: minutes).
                    fcntl.ioctl(fd, TUNSETPERSIST, 1)
                    self.fds.append(fd)
            return time.perf_counter() - t0
        return in_threads(work)

    def view(self, path: str) -> int:
        if path not in self.views:
            from wgnapid import nsenter

            fd = os.open(path, os.O_RDONLY)
            try:
                (got,) = nsenter.run_in([(fd, nsenter.class_net_fd)])
            finally:
                os.close(fd)
            if isinstance(got, BaseException):
                raise got
            self.views[path] = got
        return self.views[path]

    def value(self, path: str, name: str) -> str | None:
        try:
            fd = os.open(f"{name}/threaded", os.O_RDONLY, dir_fd=self.view(path))
        except OSError:
            return None
        try:
            return os.pread(fd, 8, 0).strip().decode()
        finally:
            os.close(fd)

    def unthreaded(self, paths: list[str], names: list[str]) -> int:
        return sum(1 for p in paths for n in names if self.value(p, n) != "1")

    def close(self) -> None:
        for fd in self.fds + list(self.views.values()):
            os.close(fd)
        self.fds, self.views = [], {}


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_field(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def ctx_switches(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += proc_field(f"{pid}/task/{tid}", "voluntary_ctxt_switches")  # type: ignore[arg-type]
            total += proc_field(f"{pid}/task/{tid}", "nonvoluntary_ctxt_switches")  # type: ignore[arg-type]
        except OSError:
            pass
    return total


class Daemon:
    def __init__(self, workdir: str, resync: float) -> None:
        self.workdir = workdir
        self.policy = os.path.join(workdir, "p.toml")
        with open(self.policy, "w") as f:
            f.write(f'[daemon]\nresync_interval = {resync}\npending_max_delay = 2\nnamespaces = "all"\n'
                    'log_level = "notice"\n\n[[rules]]\nname = "tuns"\nkinds = ["tun"]\n'
                    'interfaces = ["b*"]\nnetns = ["bns-*", "pid:*"]\nthreaded = "on"\n')
        self.sock_path = os.path.join(workdir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        env = dict(os.environ, NOTIFY_SOCKET=self.sock_path, RUNTIME_DIRECTORY=self.workdir)
        wgnapid = os.path.join(os.path.dirname(sys.executable), "wgnapid")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([wgnapid, "--config", self.policy, "--log-target", "stderr", "run"],
                                     env=env, stderr=open(os.path.join(self.workdir, "daemon.log"), "ab"))
        self.sock.settimeout(300)
        while True:
            data = self.sock.recv(65536).decode()
            if "READY=1" in data.split("\n"):
                return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("the daemon did not stop within 60 s of SIGTERM") from None
        self.sock.close()


def ip_batch(lines: list[str]) -> None:
    subprocess.run(["ip", "-batch", "-"], input="".join(l + "\n" for l in lines), text=True, check=True)


def wait_threaded(links: Links, paths, names, timeout: float, interval: float = 0.005) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if links.unthreaded(paths, names) == 0:
            return time.monotonic() - t0
        time.sleep(interval)
    return None


def baseline(workdir: str) -> dict:
    """The daemon with no namespace but its own: what start-up costs anyway
    (interpreter, imports, policy), subtracted from the per-link figures."""
    d = Daemon(tempfile.mkdtemp(dir=workdir), resync=30)
    try:
        ready = d.start()
        return {"ready_s": ready, "cpu_s": proc_cpu_s(d.proc.pid),
                "rss_mb": proc_field(d.proc.pid, "VmHWM") / 1024}
    finally:
        d.stop()


def scale(n_ns: int, per_ns: int, workdir: str, base: dict) -> dict:
    """n_ns namespaces x per_ns links before start, then one more link in each."""
    names_ns = [f"bns-{n_ns}x{per_ns}-{i}" for i in range(n_ns)]
    ip_batch([f"netns add {n}" for n in names_ns])
    paths = [f"/run/netns/{n}" for n in names_ns]
    links = Links()
    d = None
    try:
        names = [f"b{i}" for i in range(per_ns)]
        links.make(paths, names)
        d = Daemon(tempfile.mkdtemp(dir=workdir), resync=30)
        ready = d.start()
        cpu_start = proc_cpu_s(d.proc.pid)
        left = links.unthreaded(paths, names)
        # Idle: nothing happens for 10 s (resync_interval is 30 s).
        time.sleep(1.0)
        before = ctx_switches(d.proc.pid)
        time.sleep(10.0)
        idle_switches = ctx_switches(d.proc.pid) - before
        # 1,000 more links while it runs, spread over every namespace.
        cpu0 = proc_cpu_s(d.proc.pid)
        more = [f"bz{i}" for i in range(max(1, 1000 // n_ns))]
        links.make(paths, more)
        took = wait_threaded(links, paths, more, 120, interval=0.05)
        time.sleep(0.5)  # the daemon's status write etc. after the last link
        cpu_more = proc_cpu_s(d.proc.pid) - cpu0
        rss = proc_field(d.proc.pid, "VmHWM") / 1024
        threads = len(os.listdir(f"/proc/{d.proc.pid}/task"))
        fds = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
        return {
            "namespaces": n_ns, "links_per_ns": per_ns, "ready_s": ready,
            "unthreaded_at_ready": left, "cpu_start_us_per_link": (cpu_start - base["cpu_s"]) / (n_ns * per_ns) * 1e6,
            "cpu_us_per_link": cpu_more / (n_ns * len(more)) * 1e6, "later_links_threaded_s": took,
            "more_links": n_ns * len(more),
            "peak_rss_mb": rss, "idle_switches_10s": idle_switches, "threads": threads, "fds": fds,
        }
    finally:
        if d:
            d.stop()
        links.close()
        ip_batch([f"netns del {n}" for n in names_ns])


def new_namespaces(workdir: str, repeats: int) -> dict:
    """Latency for a link in a namespace made while the daemon runs."""
    resync = 5.0
    d = Daemon(tempfile.mkdtemp(dir=workdir), resync=resync)
    links = Links()
    watched, unnamed, holders = [], [], []
    try:
        d.start()
        time.sleep(1.0)
        for i in range(repeats):
            name = f"bns-new-{i}"
            subprocess.run(["ip", "netns", "add", name], check=True)
            path = f"/run/netns/{name}"
            links.make([path], ["b0"])
            watched.append(wait_threaded(links, [path], ["b0"], 30))
            subprocess.run(["ip", "netns", "del", name], check=True)
        for i in range(repeats):
            holder = subprocess.Popen(["unshare", "--net", "sleep", "600"])
            holders.append(holder)
            path = f"/proc/{holder.pid}/ns/net"
            while os.stat(path).st_ino == os.stat("/proc/self/ns/net").st_ino:
                time.sleep(0.001)  # unshare has not unshared yet
            links.make([path], ["b0"])
            unnamed.append(wait_threaded(links, [path], ["b0"], resync * 3, interval=0.01))
        return {"resync_interval_s": resync, "watched_s": watched, "unnamed_s": unnamed}
    finally:
        d.stop()
        links.close()
        for h in holders:
            h.kill()
            h.wait()


def render(res: dict, meta: dict) -> str:
    def fmt(v, unit="", digits=2):
        return "-" if v is None else f"{v:.{digits}f}{unit}"

    lines = ["# wgnapid: namespaces = \"all\" (bench/namespaces.py)", "",
             f"- Date: {meta['date']} UTC; kernel {meta['kernel']}; {meta['cpus']} CPUs; "
             f"load average before {meta['load_before']}, after {meta['load_after']}",
             f"- Daemon code: {meta['git']}; {'quick sizes' if meta['quick'] else 'full sizes'}",
             f"- Machine shared during the run: {meta['shared']}", "",
             "| figure | " + " | ".join(f"{r['namespaces']} ns x {r['links_per_ns']} links" for r in res["scale"])
             + " | goal |", "| --- |" + " --- |" * len(res["scale"]) + " --- |"]
    rows = [
        ("start to READY=1 (every namespace entered, every link threaded)", "ready_s", " s", 2, "≤ 3 s"),
        ("links not threaded at READY=1", "unthreaded_at_ready", "", 0, "0"),
        ("peak RSS (VmHWM)", "peak_rss_mb", " MB", 1, "≤ 120 MB"),
        ("daemon CPU per link at start (less the start-up of a daemon with no namespace)",
         "cpu_start_us_per_link", " µs", 0, "≤ 300 µs"),
        ("daemon CPU per link, 1,000 more links made while it runs (spread over the namespaces)",
         "cpu_us_per_link", " µs", 0, "≤ 300 µs"),
        ("those links all threaded after", "later_links_threaded_s", " s", 2, ""),
        ("context switches of all daemon threads in 10 s idle (resync 30 s)", "idle_switches_10s", "", 0,
         "0"),
        ("threads / open fds", None, "", 0, ""),
    ]
    for label, key, unit, digits, goal in rows:
        if key is None:
            cells = [f"{r['threads']} / {r['fds']}" for r in res["scale"]]
        else:
            cells = [fmt(r[key], unit, digits) for r in res["scale"]]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {goal} |")
    b = res["baseline"]
    lines += ["", f"Baseline, the same daemon with no namespace but its own: READY=1 after {b['ready_s']:.2f} s, "
              f"{b['cpu_s'] * 1000:.0f} ms of CPU, peak RSS {b['rss_mb']:.1f} MB. CPU is read from "
              "/proc/PID/stat (10 ms ticks: per-link figures are exact to 10 µs with 1,000 links)."]
    nn = res["new"]

    def dist(xs):
        ok = [x for x in xs if x is not None]
        if not ok:
            return "never"
        missed = len(xs) - len(ok)
        return (f"median {statistics.median(ok) * 1000:.0f} ms, max {max(ok) * 1000:.0f} ms "
                f"({len(ok)} runs{f', {missed} never' if missed else ''})")

    lines += ["", "A link in a namespace made while the daemon runs, from the link's creation to "
              "threaded = 1:", "",
              f"- named (`ip netns add`, /run/netns watched with inotify): {dist(nn['watched_s'])} "
              "(goal ≤ 100 ms)",
              f"- unnamed (`unshare --net`, found by the /proc scan of the resync, resync_interval = "
              f"{nn['resync_interval_s']:.0f} s): {dist(nn['unnamed_s'])} (goal ≤ resync_interval)", ""]
    return "\n".join(lines)


def inner(args) -> int:
    # In the sandbox: a sysfs for our network namespace, a private /run.
    subprocess.run(["mount", "-t", "sysfs", "bench-sysfs", "/sys"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "bench-run", "/run"], check=True)
    os.makedirs("/run/netns", exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = tempfile.mkdtemp(prefix="wgnapid-bench-ns-")
    sizes = [(100, 1), (2, 100)] if args.quick else [(1000, 1), (10, 1000)]
    res = {"scale": [], "new": None, "baseline": baseline(workdir)}
    for n_ns, per_ns in sizes:
        print(f"bench.namespaces: {n_ns} namespaces x {per_ns} links ...", file=sys.stderr, flush=True)
        res["scale"].append(scale(n_ns, per_ns, workdir, res["baseline"]))
    print("bench.namespaces: new namespaces ...", file=sys.stderr, flush=True)
    res["new"] = new_namespaces(workdir, 3 if args.quick else 10)
    json.dump(res, sys.stdout)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.namespaces")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        return inner(args)
    load_before = os.getloadavg()
    shared = subprocess.run(["pgrep", "-f", "qemu-system|python.* -m pytest"],
                            capture_output=True).returncode == 0
    argv = ["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--net", "--propagation", "private",
            sys.executable, "-m", "bench.namespaces", "--inner"] + (["--quick"] if args.quick else [])
    out = subprocess.run(argv, cwd=os.path.dirname(HERE), stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        print(f"bench.namespaces failed (rc {out.returncode})", file=sys.stderr)
        return 1
    res = json.loads(out.stdout)
    shared = shared or subprocess.run(["pgrep", "-f", "qemu-system|python.* -m pytest"],
                                      capture_output=True).returncode == 0
    # The daemon's code: the last commit that changed wgnapid/, and whether
    # wgnapid/ has changes beside it (the bench's own outputs do not count).
    top = os.path.dirname(HERE)
    git = subprocess.run(["git", "-C", top, "log", "-1", "--format=%h", "--", "wgnapid"],
                         capture_output=True, text=True).stdout.strip()
    if subprocess.run(["git", "-C", top, "status", "--porcelain", "--", "wgnapid"],
                      capture_output=True, text=True).stdout.strip():
        git += " with uncommitted changes"
    meta = {"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "kernel": os.uname().release,
            "cpus": os.cpu_count(), "load_before": " ".join(f"{x:.1f}" for x in load_before),
            "load_after": " ".join(f"{x:.1f}" for x in os.getloadavg()), "git": git,
            "quick": args.quick,
            "shared": "yes (qemu or other test suites ran; the figures are upper bounds)" if shared else "no"}
    text = render(res, meta)
    print(text)
    path = args.out or os.path.join(HERE, "out" if args.quick else "", "NAMESPACES.md")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "namespaces-raw.json"), "w") as f:  # not committed
        json.dump({"results": res, "meta": meta}, f, indent=1)
    print(f"written: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
