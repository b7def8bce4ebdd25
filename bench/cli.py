"""python -m bench [--quick] [--only KEY,...] [--subjects S,...] [--keep] [--profile P]
                 [--report RAW.json]

Runs every scenario of bench/plan.py, each in fresh network namespaces, prints
the tables, and writes RESULTS.md and latency.png: into bench/ for a full run,
into bench/out/ (not committed) for --quick or a partial run.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from bench import orchestrate, plan, report
from bench.procevents import ForkWatcher

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "out")


def _qemu_running() -> bool:
    return subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True).returncode == 0


def _tests_running() -> bool:
    """Another engineer's test suite (pytest) sharing the CPUs."""
    return subprocess.run(["pgrep", "-f", "python.* -m pytest"],
                          capture_output=True).returncode == 0


def _cpu_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_meta() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    try:
        import wgnapid

        wg_version = wgnapid.__version__
    except ImportError:
        wg_version = "?"
    git = subprocess.run(["git", "-C", os.path.dirname(HERE), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    return {
        "cpu": model, "cpus": os.cpu_count(), "mem_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "wgnapid": wg_version, "git": git or "?",
        "pyroute2": _version("pyroute2"), "pydantic": _version("pydantic"),
        "matplotlib": _version("matplotlib"),
    }


def snapshot_wgnapid(repo: str, worktree: bool, ref: str = "HEAD") -> tuple[str, dict]:
    """A private copy of the daemon's code, used for the whole run: by default
    wgnapid/ as committed at HEAD (results belong to a commit); with --ref,
    as committed at that revision (before/after comparisons); with
    --worktree, the working tree as it is now."""
    top = tempfile.mkdtemp(prefix="wgnapid-bench-snapshot-")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True).stdout.strip()

    if worktree:
        shutil.copytree(os.path.join(repo, "wgnapid"), os.path.join(top, "wgnapid"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        dirty = bool(git("status", "--porcelain", "--", "wgnapid"))
    else:
        archive = subprocess.run(["git", "-C", repo, "archive", ref, "wgnapid"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", top], input=archive, check=True)
        dirty = False
    compileall.compile_dir(os.path.join(top, "wgnapid"), quiet=1)  # start-up timing: no compiling
    return top, {"wgnapid_commit": git("log", "-1", "--format=%h", "HEAD" if worktree else ref, "--",
                                       "wgnapid") or "?",
                 "wgnapid_dirty": dirty, "hotpath": build_hotpath(top)}


def build_hotpath(top: str) -> str:
    """Compile the snapshot's wgnapid/_hotpath.c in place (as an editable install
    does), so the daemon runs what that commit would: "compiled", or "Python"
    when the snapshot has no C source (an older commit). A build failure stops
    the run (RuntimeError) rather than measuring the Python references unsaid."""
    pkg = os.path.join(top, "wgnapid")
    for name in os.listdir(pkg):
        if name.startswith("_hotpath.") and name.endswith(".so"):
            os.unlink(os.path.join(pkg, name))  # copied from a working tree: maybe stale
    if not os.path.exists(os.path.join(pkg, "_hotpath.c")):
        return "Python"
    code = ("from setuptools import Extension, setup; setup(name='wgnapid-bench', script_args=["
            "'build_ext', '--inplace', '--build-temp', 'build'], "
            "ext_modules=[Extension('wgnapid._hotpath', ['wgnapid/_hotpath.c'])])")
    r = subprocess.run([sys.executable, "-c", code], cwd=top, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building wgnapid/_hotpath.c for the snapshot failed:\n{r.stdout}{r.stderr}")
    shutil.rmtree(os.path.join(top, "build"), ignore_errors=True)
    return "compiled"


def render(runs: list[dict], meta: dict) -> tuple[str, str]:
    """(RESULTS.md text, plot title)."""
    res = report.Results(runs)
    figures, goals = report.build(res, meta)
    m = meta
    idle_machine = not m["qemu_runs"] and not m.get("test_runs") and m["load_before"][0] < 0.5
    lines = [
        "# wgnapid benchmark results",
        "",
        f"Produced by `./dev bench{' --quick' if m['quick'] else ''}` (bench/README.md says how "
        "each figure is measured). Do not edit by hand.",
        "",
        f"- Date: {m['date']} (UTC), {m['duration_s'] / 60:.1f} min",
        f"- Machine: {m['cpu']}, {m['cpus']} CPUs, {m['mem_gb']} GB RAM",
        f"- Kernel: {m['kernel']} (no WireGuard module; tun and veth stand in)",
        f"- Python {m['python']}, wgnapid {m['wgnapid']} (daemon code as of commit "
        f"{m.get('wgnapid_commit', '?')}{', with uncommitted changes' if m.get('wgnapid_dirty') else ''}, "
        f"snapshotted for the whole run; repository at {m['git']}; hot path {m.get('hotpath', 'Python')}), "
        f"pyroute2 {m['pyroute2']}, "
        f"pydantic {m['pydantic']}, matplotlib {m['matplotlib']}",
        f"- Load average before: {' '.join(f'{x:.2f}' for x in m['load_before'])}; after: "
        f"{' '.join(f'{x:.2f}' for x in m['load_after'])}; whole-machine CPU busy during the run: "
        f"{m['busy_pct']:.0f}% (bench included)",
        f"- Other load: qemu-system running during {m['qemu_runs']} of {m['runs']} runs, another "
        f"pytest run during {m.get('test_runs', 0)}; machine otherwise idle: "
        f"{'yes' if idle_machine else 'no'}",
        "",
        "## Goals",
        "",
        report.goals_table(goals),
        "",
        *([f"**{len(m['failures'])} run(s) failed** and are missing from the figures: "
           + "; ".join(f"{f['key']}/{f['subject']} #{f['repeat'] + 1}: {f['error']}" for f in m["failures"]),
           ""] if m.get("failures") else []),
        figures,
        "",
        "![latency distributions](latency.png)",
        "",
    ]
    title = (f"wgnapid bench {m['date'][:10]}, kernel {m['kernel']}, {m['cpus']} CPUs"
             f"{', QUICK sizes' if m['quick'] else ''}")
    return "\n".join(lines), title


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="small sizes, results into bench/out/")
    p.add_argument("--only", help="comma-separated scenario keys (see bench/plan.py)")
    p.add_argument("--subjects", help="comma-separated subjects: " + ",".join(plan.SUBJECTS))
    p.add_argument("--keep", action="store_true", help="keep the per-run work directories in /tmp")
    p.add_argument("--profile", choices=["cprofile", "pyspy"],
                   help="run wgnapid under a profiler (keeps the work directories; figures not valid)")
    p.add_argument("--worktree", action="store_true",
                   help="run the daemon from the working tree (default: wgnapid/ as committed at HEAD)")
    p.add_argument("--ref", metavar="REV", default="HEAD",
                   help="run the daemon as committed at REV (e.g. main, for a before/after comparison)")
    p.add_argument("--report", metavar="RAW", help="only render the report from a raw.json")
    p.add_argument("--write", metavar="DIR", help="with --report: also write RESULTS.md and "
                   "latency.png into DIR (re-rendering a real run after a report change)")
    args = p.parse_args(argv)

    if args.report:
        with open(args.report) as f:
            doc = json.load(f)
        text, title = render(doc["runs"], doc["meta"])
        print(text)
        if args.write:
            with open(os.path.join(args.write, "RESULTS.md"), "w") as f:
                f.write(text)
            report.plot(report.Results(doc["runs"]), os.path.join(args.write, "latency.png"), title)
        return 0
    if os.geteuid() != 0:
        print("bench: run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    orchestrate.install_signal_handlers()
    items = plan.build(args.quick)
    partial = bool(args.only or args.subjects or args.profile or args.worktree or args.ref != "HEAD")
    if args.only:
        keys = set(args.only.split(","))
        items = [i for i in items if i.key in keys]
    if args.subjects:
        subs = set(args.subjects.split(","))
        items = [i for i in items if i.subject in subs]
    out_dir = OUT if (args.quick or partial) else HERE
    os.makedirs(OUT, exist_ok=True)

    meta = machine_meta()
    meta.update(quick=args.quick, big=2000 if args.quick else 10000,
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                load_before=list(os.getloadavg()), qemu_runs=0, test_runs=0, runs=0)
    total = sum(i.repeats for i in items)
    snapshot, snap_info = snapshot_wgnapid(orchestrate.REPO, args.worktree, args.ref)
    meta.update(snap_info)
    print(f"bench: wgnapid daemon code of commit {meta['wgnapid_commit']}"
          f"{' + uncommitted changes' if meta['wgnapid_dirty'] else ''}, hot path {meta['hotpath']}, "
          f"snapshot in {snapshot}",
          flush=True)
    print(f"bench: {total} runs on kernel {meta['kernel']}, {meta['cpus']} CPUs; "
          f"load {meta['load_before'][0]:.2f}; qemu {'RUNNING' if _qemu_running() else 'not running'}; "
          f"other tests {'RUNNING' if _tests_running() else 'not running'}",
          flush=True)
    watcher = ForkWatcher()
    runs: list[dict] = []
    failures: list[dict] = []
    started = time.monotonic()
    busy0 = _cpu_busy()
    interrupted = False
    try:
        for item in items:
            for r in range(item.repeats):
                spec = dict(item.full_spec(seed=r + 1), snapshot=snapshot)
                if args.profile:
                    spec["profile"] = args.profile
                qemu, tests = _qemu_running(), _tests_running()
                t = time.monotonic()
                watcher_cpu = watcher.cpu_ns()
                counts0 = dict(watcher.counts)
                try:
                    res = orchestrate.run(spec, watcher, keep=args.keep or bool(args.profile))
                except orchestrate.WorkerFailed as exc:
                    # Keep going: one broken scenario should not cost the others.
                    print(f"[{len(runs) + len(failures) + 1:3}/{total}] {item.key:11} {item.subject:8} "
                          f"run {r + 1}: FAILED: {exc}", file=sys.stderr, flush=True)
                    failures.append({"key": item.key, "subject": item.subject, "repeat": r,
                                     "error": str(exc).splitlines()[0]})
                    continue
                res["watcher_cpu_ns"] = watcher.cpu_ns() - watcher_cpu
                res["watcher_counts"] = {k: v - counts0[k] for k, v in watcher.counts.items()}
                qemu = qemu or _qemu_running()
                tests = tests or _tests_running()
                res.update(key=item.key, subject=item.subject, repeat=r, qemu=qemu, tests=tests)
                runs.append(res)
                meta["runs"] += 1
                meta["qemu_runs"] += qemu
                meta["test_runs"] += tests
                lat = sorted(lk["lat_ms"] for lk in res.get("links", []) if lk.get("lat_ms") is not None)
                n = len(res.get("links", []))
                summary = f"{len(lat)}/{n} threaded" if n else ""
                if lat:
                    summary += (f", p50 {report.fmt_ms(report.pct(lat, 50))}, "
                                f"max {report.fmt_ms(lat[-1])}")
                print(f"[{len(runs):3}/{total}] {item.key:11} {item.subject:8} run {r + 1}: "
                      f"{time.monotonic() - t:5.1f} s  {summary}{'  (qemu running)' if qemu else ''}{'  (tests running)' if tests else ''}",
                      flush=True)
                if args.keep or args.profile:
                    print(f"      work directory: {res.get('workdir')}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        watcher.close()
        shutil.rmtree(snapshot, ignore_errors=True)
        busy1 = _cpu_busy()
        meta.update(duration_s=time.monotonic() - started, load_after=list(os.getloadavg()),
                    busy_pct=100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
                    qemu_seen=meta["qemu_runs"] > 0, watcher_lost=watcher.lost,
                    watcher_unnamed=watcher.unnamed, failures=failures, interrupted=interrupted)
        with open(os.path.join(OUT, "raw.json"), "w") as f:
            json.dump({"meta": meta, "runs": runs}, f)
    if interrupted:
        print("bench: interrupted; the namespaces are deleted, nothing was written "
              "but bench/out/raw.json", file=sys.stderr)
        return 130
    if watcher.lost or watcher.unnamed:
        print(f"bench: WARNING: the fork watcher lost events ({watcher.lost} overflows, "
              f"{watcher.unnamed} unnamed kthreads): some latencies are missing", file=sys.stderr)
    text, title = render(runs, meta)
    print()
    print(text)
    with open(os.path.join(out_dir, "RESULTS.md"), "w") as f:
        f.write(text)
    report.plot(report.Results(runs), os.path.join(out_dir, "latency.png"), title)
    print(f"\nbench: wrote {os.path.relpath(os.path.join(out_dir, 'RESULTS.md'))} and latency.png",
          file=sys.stderr)
    return 1 if failures else 0
