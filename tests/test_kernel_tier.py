"""The real-WireGuard tier: Debian's own kernels under qemu (virtme-ng, TCG).

Each kernel found under /boot is booted ONCE; inside, pytest runs the
scenarios of tests/guest/ against real wireguard.ko with the real `wg`, `ip`
and the installed `wgnapid`. Each (kernel, scenario) pair is its own host
test here, with the guest's output when it fails. The guest scenario names
are collected on the host (pytest --collect-only) so the ids are known at
collection time; a host test selection (-k) boots only the kernels it needs
and runs only the selected scenarios inside.

Run alone: `./dev test-kernel` (docs/kernel-tier.md).

Without a kernel, qemu or vng this tier FAILS when CI=true and skips (with the
reason) elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GUEST_DIR = REPO / "tests" / "guest"
VENV = REPO / ".venv-debian13"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Per boot. Measured here: well under 5 minutes per kernel (docs/kernel-tier.md).
BOOT_TIMEOUT = float(os.environ.get("WGNAPID_KERNEL_TIER_TIMEOUT", "600"))
GUEST_MEMORY = os.environ.get("WGNAPID_GUEST_MEMORY", "1G")
FIRST_SAFE = (6, 10)  # KERNEL-FACTS.md: below this the kernel guard holds WireGuard
# Debian's 7.x from trixie-backports, unpacked by tests/backports_kernel.sh
# (./dev setup): <root>/usr/lib/modules/<release>/vmlinuz with its modules beside.
BACKPORTS_ROOT = Path(os.environ.get("WGNAPID_BACKPORTS_CACHE",
                                     "/var/cache/wgnapid-ci/trixie-backports-kernel")) / "root"
# The scenarios for kernels that thread WireGuard themselves; every other guest
# file is for the kernels that do not (their scenarios expect a fresh link to read 0).
NATIVE_MODULE = "test_guest_native"

pytestmark = pytest.mark.kernel


def _python() -> str:
    """The project's venv python: the guest runs it from the read-only host root."""
    venv_python = VENV / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


# -- discovery (at collection time) -------------------------------------------------

@dataclass(frozen=True)
class Kernel:
    release: str
    image: Path
    rodir: Path | None = None  # a directory the guest must see (modules outside /lib/modules)

    @property
    def version(self) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", self.release)[:3])

    @property
    def risky(self) -> bool:
        return self.version[:2] < FIRST_SAFE

    @property
    def native(self) -> bool:
        """Threads WireGuard devices at creation, by its release (wgnapid.kernel)."""
        from wgnapid import kernel as wgkernel

        return wgkernel.verdict_for(self.release).creation_default is True

    @property
    def short(self) -> str:
        return self.release


def discover_kernels(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")
                     ) -> list[Kernel]:
    """Installed kernels that can run WireGuard, except the running one."""
    running = os.uname().release
    found = []
    for image in sorted(boot.glob("vmlinuz-*")):
        release = image.name[len("vmlinuz-"):]
        if release == running or not re.match(r"\d+\.\d+", release):
            continue
        wg_dir = modules / release / "kernel" / "drivers" / "net" / "wireguard"
        if not (modules / release / "modules.dep").exists() or not any(wg_dir.glob("wireguard.ko*")):
            continue
        found.append(Kernel(release, image))
    # Unpacked packages (not installed with dpkg): vng finds the modules beside
    # the image; the guest sees them through --rodir (virtme-ng mounts a tmpfs
    # over /var/cache).
    for image in sorted(BACKPORTS_ROOT.glob("usr/lib/modules/*/vmlinuz")):
        release = image.parent.name
        if (image.parent / "modules.dep").exists() and any(
                (image.parent / "kernel" / "drivers" / "net" / "wireguard").glob("wireguard.ko*")):
            found.append(Kernel(release, image, BACKPORTS_ROOT))
    return sorted(found, key=lambda k: k.version)


def find_vng() -> str | None:
    vng = VENV / "bin" / "vng"
    return str(vng) if vng.exists() else shutil.which("vng")


def prerequisite_problems(kernels: list[Kernel]) -> list[str]:
    problems = []
    if not kernels:
        problems.append("no kernel with wireguard.ko under /boot + /lib/modules other than the "
                        "running one (apt-get install linux-image-amd64 linux-image-6.12-amd64)")
    else:
        if not any(k.risky for k in kernels):
            problems.append("no kernel older than 6.10 (Debian 12's linux-image-amd64, 6.1)")
        if all(k.risky or k.native for k in kernels):
            problems.append("no kernel 6.10 or newer that leaves WireGuard unthreaded "
                            "(linux-image-6.12-amd64)")
        if not any(k.native for k in kernels):
            problems.append("no kernel that threads WireGuard from birth (Debian's 7.x from "
                            "trixie-backports: tests/backports_kernel.sh, run by ./dev setup)")
    if not shutil.which("qemu-system-x86_64"):
        problems.append("qemu-system-x86_64 missing (apt-get install qemu-system-x86)")
    if not find_vng():
        problems.append(f"vng missing ({VENV}/bin/pip install virtme-ng)")
    if not shutil.which("wg"):
        problems.append("wg missing (apt-get install wireguard-tools)")
    if not (VENV / "bin" / "wgnapid").exists():
        problems.append(f"{VENV}/bin/wgnapid missing (./dev setup)")
    return problems


def collect_guest_scenarios() -> tuple[list[str], str]:
    """Node ids of the guest scenarios (relative to the repo), and any collection error."""
    argv = [_python(), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
            f"--confcutdir={GUEST_DIR}", f"--rootdir={REPO}", "-m", "guest", str(GUEST_DIR)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("WGNAPID_GUEST", None)
    try:
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120,
                              env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"collecting the guest scenarios failed: {e}"
    ids = [line.strip() for line in proc.stdout.splitlines() if "::" in line]
    if proc.returncode != 0 or not ids:
        return ids, (f"collecting the guest scenarios failed (exit {proc.returncode}):\n"
                     f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return ids, ""


KERNELS = discover_kernels()
PROBLEMS = prerequisite_problems(KERNELS)
SCENARIOS, COLLECT_ERROR = collect_guest_scenarios()


def _scenario_id(nodeid: str) -> str:
    # tests/guest/test_guest_scenarios.py::test_s01_wg_quick_order -> s01_wg_quick_order
    module, _, name = nodeid.partition("::")
    name = name.removeprefix("test_")
    stem = Path(module).stem
    return name if stem == "test_guest_scenarios" else f"{stem}::{name}"


def applies(kernel: Kernel, nodeid: str) -> bool:
    """test_guest_native runs on kernels that thread WireGuard themselves, every
    other guest file on the kernels that do not (a fresh link reads 0 there)."""
    return (Path(nodeid.partition("::")[0]).stem == NATIVE_MODULE) == kernel.native


CASES = [pytest.param(k, s, id=f"{k.short}/{_scenario_id(s)}")
         for k in KERNELS for s in SCENARIOS if applies(k, s)]


# -- one boot per kernel -----------------------------------------------------------------

@dataclass
class GuestRun:
    kernel: Kernel
    outdir: Path
    selected: list[str]
    returncode: int | None = None
    timed_out: bool = False
    launch_error: str = ""
    boot_seconds: float | None = None  # vng launched -> guest entry script running
    total_seconds: float = 0.0  # vng launched -> vng exited
    results: dict[str, dict] = field(default_factory=dict)

    @property
    def console(self) -> Path:
        return self.outdir / "console.log"

    def console_tail(self, chars: int = 6000) -> str:
        try:
            return self.console.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no console output)"

    @property
    def never_started(self) -> bool:
        """The guest's entry script never ran (its first act is to write
        `timings`): vng started and exited without a guest userland."""
        return not (self.launch_error or self.timed_out or (self.outdir / "timings").exists())

    def describe(self) -> str:
        if self.launch_error:
            return f"vng could not be started: {self.launch_error}"
        if self.timed_out:
            return f"the guest did not finish within {BOOT_TIMEOUT:.0f} s and was killed"
        return f"the guest exited {self.returncode}"


def _read_results(path: Path) -> dict[str, dict]:
    """Fold the guest's per-phase reports into one result per node id."""
    results: dict[str, dict] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return results
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        res = results.setdefault(rec["nodeid"], {"outcome": "passed", "reports": [],
                                                 "properties": [], "duration": 0.0})
        res["reports"].append(rec)
        res["duration"] += rec.get("duration", 0.0)
        if rec.get("properties"):
            res["properties"] = rec["properties"]
        if rec["outcome"] == "failed":
            res["outcome"] = "failed" if rec["when"] == "call" else "error"
        elif rec["outcome"] == "skipped" and res["outcome"] == "passed":
            res["outcome"] = "skipped"
            res["skip_reason"] = rec.get("longrepr", "")
    for res in results.values():
        # A passed set-up with no call report: the guest was killed or died
        # during the scenario. That is no pass.
        if res["outcome"] == "passed" and not any(r["when"] == "call" for r in res["reports"]):
            res["outcome"] = "failed"
            res["reports"].append({"when": "call", "outcome": "failed", "sections": [],
                                   "longrepr": "the guest reported no result for this "
                                               "scenario's test itself (killed or died during it)"})
    return results


def boot_and_run(kernel: Kernel, selected: list[str], outdir: Path, verbose: bool = False) -> GuestRun:
    """One boot of ``kernel`` running ``selected`` in the guest. ``verbose``:
    the kernel's own console too (vng --verbose), to see why a boot died."""
    run = GuestRun(kernel, outdir, selected)
    (outdir / "pytest-args").write_text("".join(f"{s}\n" for s in selected))
    argv = [find_vng() or "vng", "--run", str(kernel.image), "--memory", GUEST_MEMORY,
            "--cpus", "2", "--rwdir", str(outdir), "--cwd", str(REPO),
            *(["--verbose"] if verbose else []),
            "--exec", f"bash {GUEST_DIR / 'guest_main.sh'} {outdir}"]
    if kernel.rodir is not None:
        argv[3:3] = ["--rodir", str(kernel.rodir)]
    if os.environ.get("WGNAPID_KVM") != "1":
        argv.insert(3, "--disable-kvm")
    env = dict(os.environ)
    # vng runs virtme-run from its own venv; the guest finds the venv by path.
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    for var in ("WGNAPID_GUEST", "WGNAPID_GUEST_RESULTS", "NOTIFY_SOCKET"):
        env.pop(var, None)
    t0 = time.monotonic()
    timings = outdir / "timings"
    with open(run.console, "wb") as console:
        console.write(f"$ {' '.join(argv)}\n".encode())
        console.flush()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                    stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                    start_new_session=True)
        except OSError as e:
            run.launch_error = str(e)
            return run
        deadline = t0 + BOOT_TIMEOUT
        while proc.poll() is None:
            if run.boot_seconds is None and timings.exists():
                run.boot_seconds = time.monotonic() - t0
            if time.monotonic() > deadline:
                run.timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.2)
        run.returncode = proc.returncode
    run.total_seconds = time.monotonic() - t0
    run.results = _read_results(outdir / "results.jsonl")
    return run


class KernelTier:
    """Boots each kernel lazily, once, for the scenarios selected on the host."""

    def __init__(self, session, tmp_path_factory):
        self.session = session
        self.tmp = tmp_path_factory
        self.runs: dict[str, GuestRun] = {}

    def selected_for(self, kernel: Kernel) -> list[str]:
        chosen = []
        for item in self.session.items:
            callspec = getattr(item, "callspec", None)
            if callspec and callspec.params.get("kernel") == kernel:
                chosen.append(callspec.params["scenario"])
        return chosen or [s for s in SCENARIOS if applies(kernel, s)]

    def run(self, kernel: Kernel) -> GuestRun:
        if kernel.release not in self.runs:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", kernel.release)
            outdir = self.tmp.mktemp(f"guest-{name}", numbered=True)
            self._say(f"booting {kernel.release} under qemu (TCG) for "
                      f"{len(self.selected_for(kernel))} scenario(s); output in {outdir}")
            run = boot_and_run(kernel, self.selected_for(kernel), outdir)
            if run.never_started:
                # A TCG boot that dies before userland (the 7.x kernel in 2 of
                # 12 whole-tier runs here, each right after the 6.1 and 6.12
                # sessions, exit 255 at ~17 s; 12 of 12 boots alone) says
                # nothing of wgnapid: one more, with the kernel's console this
                # time. Every result still comes from a guest that ran them.
                again = self.tmp.mktemp(f"guest-{name}-again", numbered=True)
                self._say(f"{kernel.release}: the guest never reached userland "
                          f"({run.describe()} after {run.total_seconds:.1f} s); booting it once "
                          f"more, the kernel's console in {again}/console.log")
                run = boot_and_run(kernel, self.selected_for(kernel), again, verbose=True)
            self.runs[kernel.release] = run
            self._say(f"{kernel.release}: {run.describe()}; boot "
                      f"{_fmt(run.boot_seconds)}, whole session {run.total_seconds:.1f} s")
        return self.runs[kernel.release]

    def _say(self, text: str) -> None:
        _announce(self.session, text)

    # pytest hook, registered as a plugin by the fixture below.
    def pytest_terminal_summary(self, terminalreporter):
        if not self.runs:
            return
        tr = terminalreporter
        tr.section("real WireGuard under qemu: timings")
        for run in self.runs.values():
            tr.write_line(f"{run.kernel.release}: boot {_fmt(run.boot_seconds)} (vng start -> "
                          f"guest userland), whole boot session {run.total_seconds:.1f} s, "
                          f"{run.describe()}")
            for nodeid, res in run.results.items():
                props = ", ".join(f"{k}={v}" for k, v in res["properties"])
                tr.write_line(f"    {_scenario_id(nodeid):<45} {res['outcome']:<8} "
                              f"{res['duration']:6.1f} s  {props}")
        summary = {r.kernel.release: {
            "boot_seconds": r.boot_seconds, "total_seconds": r.total_seconds,
            "returncode": r.returncode, "outdir": str(r.outdir),
            "scenarios": {n: {"outcome": x["outcome"], "duration": x["duration"],
                              "properties": dict(x["properties"])}
                          for n, x in r.results.items()}}
            for r in self.runs.values()}
        path = self.tmp.getbasetemp() / "kernel-tier-timings.json"
        path.write_text(json.dumps(summary, indent=2))
        tr.write_line(f"(also in {path})")


def _announce(session, text: str) -> None:
    """A line on the terminal now, past pytest's output capture."""
    plugins = session.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None:
        print(f"[kernel tier] {text}")
        return
    if capture is None:
        reporter.write_line(f"[kernel tier] {text}")
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[kernel tier] {text}")


def _fmt(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f} s"


@pytest.fixture(scope="session")
def kernel_tier(request, tmp_path_factory):
    tier = KernelTier(request.session, tmp_path_factory)
    request.config.pluginmanager.register(tier, "wgnapid-kernel-tier")
    return tier


# -- the tests ----------------------------------------------------------------------------

def test_prerequisites(request):
    """qemu, vng and both kinds of kernel are there (FAIL in CI, skip elsewhere)."""
    problems = PROBLEMS + ([COLLECT_ERROR] if COLLECT_ERROR else [])
    if not problems:
        return
    text = "real-WireGuard tier cannot run: " + "; ".join(problems)
    if IN_CI or COLLECT_ERROR:
        pytest.fail(text, pytrace=False)
    _announce(request.session, text + " (skipped: not in CI)")
    pytest.skip(text)


def test_a_boot_that_never_reaches_userland_is_tried_once_more(request, tmp_path, tmp_path_factory,
                                                                monkeypatch):
    """vng exits without the guest's entry script having run: the tier boots
    once more, with the kernel's console (--verbose), and reports that run;
    a guest that started and failed is not booted again. (A stand-in vng: no
    qemu here.)"""
    calls = tmp_path / "calls"
    vng = tmp_path / "vng"
    # Fails (255, no userland) while the file `fail` holds a count above 0.
    vng.write_text(f"""#!/bin/bash
echo "$*" >> {calls}
out=$(echo "$*" | sed -n 's/.*--rwdir \\([^ ]*\\).*/\\1/p')
left=$(cat {tmp_path}/fail)
if [ "$left" -gt 0 ]; then echo $((left - 1)) > {tmp_path}/fail; exit 255; fi
echo "guest_userland_uptime 1.0" > "$out/timings"
exit 3
""")
    vng.chmod(0o755)
    monkeypatch.setattr(sys.modules[__name__], "find_vng", lambda: str(vng))
    kernel = Kernel("7.0.0-stand-in", tmp_path / "vmlinuz")

    (tmp_path / "fail").write_text("1")
    run = KernelTier(request.session, tmp_path_factory).run(kernel)
    tries = calls.read_text().splitlines()
    assert len(tries) == 2 and "--verbose" not in tries[0] and "--verbose" in tries[1], tries
    assert run.outdir.name.startswith("guest-7.0.0-stand-in-again") and run.returncode == 3
    assert not run.never_started

    calls.unlink()
    (tmp_path / "fail").write_text("0")  # started, then failed: its result stands
    run = KernelTier(request.session, tmp_path_factory).run(kernel)
    assert len(calls.read_text().splitlines()) == 1 and run.returncode == 3


@pytest.mark.skipif(bool(PROBLEMS), reason="prerequisites missing (see test_prerequisites)")
@pytest.mark.parametrize("kernel,scenario", CASES)
def test_guest_scenario(kernel: Kernel, scenario: str, kernel_tier: KernelTier):
    run = kernel_tier.run(kernel)
    res = run.results.get(scenario)
    if res is None:
        pytest.fail(f"{kernel.release}: the guest reported nothing for {scenario}: "
                    f"{run.describe()}. Console tail ({run.console}):\n{run.console_tail()}",
                    pytrace=False)
    for key, value in res["properties"]:
        print(f"{kernel.release} {_scenario_id(scenario)}: {key} = {value}")
    if res["outcome"] == "skipped":
        pytest.skip(f"skipped in the guest: {res.get('skip_reason', '')}")
    if res["outcome"] != "passed":
        parts = [f"{kernel.release}: {scenario} {res['outcome']} in the guest"]
        for rep in res["reports"]:
            if rep["outcome"] == "failed":
                parts.append(f"--- {rep['when']} ---\n{rep['longrepr']}")
        sections: dict[str, str] = {}  # each phase repeats the earlier phases' sections
        for rep in res["reports"]:
            sections.update((title, text) for title, text in rep.get("sections", []))
        for title, text in sections.items():
            parts.append(f"--- {title} ---\n{text[-6000:]}")
        parts.append(f"(guest files: {run.outdir})")
        pytest.fail("\n".join(parts), pytrace=False)
