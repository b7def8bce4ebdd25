"""python -m bench.scale [--quick] [--daemon-src DIR] [--out FILE.md]

What links already there cost each new one (issue 16, "cost at scale"),
printed as a table and written to bench/SCALE.md (bench/out/ with --quick
or another --daemon-src):

- N links exist and are threaded (0 and 10,000; tun with IFF_NAPI), then one
  new link every 100 ms for 10 s: the daemon's CPU over that window, as % of
  one core and per new link; with the default kind of policy (threaded on),
  with a rule that also places NAPI threads (``cpus``), and with the metrics
  file (written at most every max(5 s, 50 x the CPU its last write cost):
  a 10 s window holds at most one write at 10,000 links). Work done for
  every link on each change (the status document, the /proc scans of
  placement) shows as the difference between the two sizes;
- ``wgnapid status --json`` with those links: wall time (it looks up every
  link's NAPI threads).

Each case runs in a network and mount namespace of its own with a fresh
sysfs (the daemon sees only the bench's links). The process-events connector
works only in the initial network namespace, so placement here takes the path
without it: a scan for news after each change (wgnapid/placement.py).
CPU: utime + stime of the daemon from /proc/PID/stat (clock ticks, 10 ms).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

VARIANTS = {"on": "threaded on", "placement": "threaded on + cpus (placement)",
            "metrics": "threaded on + daemon.metrics_file"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICY = """[daemon]
resync_interval = 30
log_level = "info"
{daemon}

[[rules]]
name = "bench"
kinds = ["tun"]
interfaces = ["b*"]
threaded = "on"
{extra}
"""


def inner(existing: int, new: int, interval: float, variant: str, src: str) -> dict:
    """One case, inside its own network + mount namespace (see main); the
    daemon's code from ``src`` (a checkout's root)."""
    subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
    sys.path.insert(0, ROOT)
    from bench import netdev

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fds = []  # a tun link keeps its NAPI instance while its queue is open
    work = tempfile.mkdtemp(prefix="wgnapid-scale-")
    cpus = f"0-{os.cpu_count() - 1}" if os.cpu_count() > 1 else "0"
    with open(f"{work}/policy.toml", "w") as f:
        f.write(POLICY.format(extra=f'cpus = "{cpus}"' if variant == "placement" else "",
                              daemon=f'metrics_file = "{work}/wgnapid.prom"' if variant == "metrics" else ""))
    for i in range(existing):
        fds.append(netdev.tun_napi(f"be{i}")[0])
    # (cwd=src too: `python -m` puts the working directory before PYTHONPATH.)
    env = dict(os.environ, PYTHONPATH=src, RUNTIME_DIRECTORY=work)
    env.pop("NOTIFY_SOCKET", None)
    daemon = subprocess.Popen([sys.executable, "-m", "wgnapid", "--config", f"{work}/policy.toml",
                               "--log-target", "stderr", "run"], env=env, cwd=src,
                              stderr=open(f"{work}/log", "w"))
    try:
        deadline = time.monotonic() + 600
        while _threaded(work) < existing or not glob.glob(f"{work}/status-*.json"):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not thread {existing} links:\n" + open(f"{work}/log").read()[-2000:])
            time.sleep(0.5)
        time.sleep(3)  # the start-up's placement and status writes are done
        t0 = time.monotonic()
        status = subprocess.run([sys.executable, "-m", "wgnapid", "status", "--json"], env=env,
                                cwd=src, capture_output=True, text=True)
        status_s = time.monotonic() - t0
        if status.returncode != 0:
            raise RuntimeError(f"wgnapid status failed: {status.stderr}")
        a, t0 = _ticks(daemon.pid), time.monotonic()
        for i in range(new):
            fds.append(netdev.tun_napi(f"bn{i}")[0])
            time.sleep(interval)
        time.sleep(1.5)  # the last link's status write and placement scan
        b, window = _ticks(daemon.pid), time.monotonic() - t0
        missed = sum(1 for i in range(new) if _read(f"/sys/class/net/bn{i}/threaded") != "1")
    finally:
        daemon.terminate()
        daemon.wait()
        for fd in fds:
            os.close(fd)
    cpu = (b - a) / os.sysconf("SC_CLK_TCK")
    return {"existing": existing, "new": new, "variant": variant, "window_s": window,
            "cpu_s": cpu, "missed": missed, "status_s": status_s}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _threaded(work: str) -> int:
    for path in glob.glob(f"{work}/status-*.json"):
        try:
            with open(path) as f:
                return json.load(f)["summary"].get("threaded", 0)
        except (OSError, ValueError, KeyError):
            pass
    return 0


def case(existing: int, new: int, interval: float, variant: str, src: str) -> dict:
    """Run inner() in fresh network and mount namespaces; its result."""
    out = subprocess.run(
        ["unshare", "--net", "--mount", sys.executable, "-m", "bench.scale", "--inner",
         json.dumps([existing, new, interval, variant, src])],
        cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"case {existing}/{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    rows = ["| links already there | policy | new links (one per 100 ms) | threaded 1.5 s after the last | daemon CPU, % of one core | per new link | `wgnapid status --json` |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        rows.append(
            f"| {r['existing']:,} | {VARIANTS[r['variant']]} "
            f"| {r['new']} | {r['new'] - r['missed']}/{r['new']} "
            f"| {100 * r['cpu_s'] / r['window_s']:.2f}% | {1e3 * r['cpu_s'] / r['new']:.1f} ms "
            f"| {r['status_s']:.2f} s |")
    return "\n".join(rows)


def _commit(src: str) -> str:
    try:
        return subprocess.run(["git", "-C", src, "log", "-1", "--format=%h", "--", "wgnapid"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[2])
    p.add_argument("--quick", action="store_true", help="2,000 links instead of 10,000 (not the committed figures)")
    p.add_argument("--out", help="where to write the table (default bench/SCALE.md, bench/out/ with --quick)")
    p.add_argument("--daemon-src", default=ROOT, metavar="DIR",
                   help="run the daemon from this checkout (e.g. a git worktree of an older commit; "
                        "default: this one's working tree)")
    p.add_argument("--inner", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.inner:
        print(json.dumps(inner(*json.loads(args.inner))))
        return 0
    if os.geteuid() != 0:
        print("bench.scale: run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    big = 2000 if args.quick else 10000
    new = 30 if args.quick else 100
    started = time.time()
    results = []
    for variant in VARIANTS:
        for existing in (0, big):
            r = case(existing, new, 0.1, variant, os.path.abspath(args.daemon_src))
            results.append(r)
            print(table([r]).splitlines()[-1], flush=True)
    text = (f"# wgnapid at scale: what links already there cost each new one\n\n"
            f"Produced by `python -m bench.scale` (`./dev bench` runs it; the module's docstring "
            f"says how). Do not edit by hand.\n\n"
            f"- Date: {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} (UTC), "
            f"{(time.time() - started) / 60:.1f} min\n"
            f"- Machine: {os.cpu_count()} CPUs, kernel {platform.release()}, Python {platform.python_version()}\n"
            f"- wgnapid daemon code as of commit {_commit(args.daemon_src)} (its working tree)\n"
            f"- Load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n\n"
            + table(results) + "\n")
    partial = args.quick or os.path.abspath(args.daemon_src) != ROOT
    out = args.out or os.path.join(ROOT, "bench", "out" if partial else "", "SCALE.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
