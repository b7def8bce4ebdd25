"""A real systemd as PID 1 in private namespaces: a throw-away test machine.

Use (root only; the method is /work/shared/SYSTEMD-TIER.md, seen working on
Debian 12's systemd 252 and with a Debian 13 root's systemd 257)::

    from machine import Machine

    with Machine(name="i11", lower="/") as m:        # boots; powers off + cleans up on exit
        m.install("/etc/wgnapid/wgnapid.toml", "...")  # a file in the guest (overlay only)
        m.run("ip", "link", "add", "va0", "type", "veth", "peer", "vb0")
        m.systemctl("start", "wgnapid")               # CompletedProcess; check=False
        print(m.unit_property("wgnapid", "ActiveState"))
        entries = m.journal("-u", "wgnapid")          # list of dicts (journalctl -o json)

What one Machine is:
- a child directory of the host's cgroup2 hierarchy (/sys/fs/cgroup/unified on
  a hybrid host, /sys/fs/cgroup on a unified one), delegated: the launcher
  moves itself there before unsharing, so with a new cgroup namespace that
  directory is the guest's cgroup root and systemd runs in pure cgroup2 mode
  (unit sandboxing, IPAddressDeny=, DevicePolicy= are really applied);
- `unshare --pid --fork --mount --uts --ipc --net --cgroup --propagation
  private`: a new network namespace (its own links, its own sysfs view), a
  new PID namespace (the daemon sees no kernel threads);
- an overlay with ``lower`` (default "/", or e.g. a debootstrap root) as the
  lower layer and a tmpfs as the upper: everything the guest installs or
  changes dies with it; all mounts live only in the guest's mount namespace,
  so none can leak onto the host;
- fresh proc, sysfs (read-write), cgroup2, a small /dev (null zero full
  random urandom tty net/tun, devpts, shm), tmpfs /run and /tmp;
- ``binds``: host directories bind-mounted read-only into the guest;
- the units in ``mask`` (default MASK: the ones that touch global kernel state
  or are heavy services enabled on the build machines) linked to /dev/null
  inside the overlay, plus ``extra_mask``;
- then `exec systemd --system --unit=multi-user.target` as PID 1.

Commands run inside with `nsenter -t PID -a` (all namespaces of the guest's
PID 1). Long-lived helpers should be started with `systemd-run` (``m.run(
"systemd-run", "--unit", NAME, ...)``), not as children of nsenter: those
hold up the guest's shutdown. The guest shares the host's boot ID, and with
lower="/" it also sees the host's persistent journal files: select journal
entries by unit or time (``since=m.booted_at``, the default), not with -b.

Cleanup (``close()``, also from ``__exit__`` and after a failed boot):
``systemctl poweroff``, wait for PID 1 to exit, SIGKILL the namespace's PID 1
if it does not (which ends every process in the PID namespace), then kill any
process still in the delegated cgroup, remove its directories bottom-up and
the empty host work directory. Every name carries ``name`` and a random token.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import tempfile
import time
from pathlib import Path

# Units that act on global kernel state or are heavy services enabled on the
# build machines (SYSTEMD-TIER.md, "Mask what touches the host").
MASK = (
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service", "systemd-sysctl.service",
    "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount",
    "systemd-modules-load.service", "kmod-static-nodes.service", "systemd-random-seed.service",
    "systemd-pstore.service", "systemd-journald-audit.socket", "apparmor.service",
    "systemd-repart.service", "systemd-timesyncd.service", "systemd-firstboot.service",
    "systemd-hwdb-update.service", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-kernel-config.mount", "sys-fs-fuse-connections.mount", "apt-daily.timer",
    "apt-daily-upgrade.timer", "man-db.timer", "fstrim.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "dpkg-db-backup.timer", "getty@.service", "getty@tty1.service",
    "console-getty.service", "serial-getty@.service", "postgresql.service", "sysstat.service",
    "systemd-remount-fs.service", "systemd-fsck-root.service", "dev-hugepages.mount",
    "dev-mqueue.mount", "systemd-logind.service", "systemd-tmpfiles-clean.timer",
    "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service", "cron.service",
    "ssh.service", "systemd-networkd-wait-online.service",
)

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs as the new PID namespace's PID 1 (before systemd), in the new mount
# namespace; its mounts never reach the host (propagation private).
_INIT = r"""
set -eu
W=$MACHINE_WORK
mount -t tmpfs -o mode=0755 machine-upper "$W"
mkdir "$W/upper" "$W/work" "$W/root"
mount -t overlay machine-root -o "lowerdir=$MACHINE_LOWER,upperdir=$W/upper,workdir=$W/work" "$W/root"
R=$W/root
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,size=16m,nosuid machine-dev "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3; mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7; mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9; mknod -m 666 "$R/dev/tty" c 5 0
mkdir "$R/dev/net" "$R/dev/pts" "$R/dev/shm"; mknod -m 666 "$R/dev/net/tun" c 10 200
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"; ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=1777,nosuid,nodev machine-shm "$R/dev/shm"
mount -t tmpfs -o mode=0755,nosuid,nodev machine-run "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev machine-tmp "$R/tmp"
printf '%s\n' "$MACHINE_BINDS" | while IFS='	' read -r src dst; do
    [ -n "$src" ] || continue
    mkdir -p "$R$dst"
    mount --bind "$src" "$R$dst"
    mount -o remount,bind,ro "$R$dst"
done
mkdir -p "$R/etc/systemd/system"
for u in $MACHINE_MASK; do ln -sfn /dev/null "$R/etc/systemd/system/$u"; done
# A machine-id of its own: the host's would make the guest journal into the host's files.
rm -f "$R/etc/machine-id"; : > "$R/etc/machine-id"
echo "$MACHINE_HOSTNAME" > "$R/etc/hostname"; hostname "$MACHINE_HOSTNAME"
cd "$R"
mkdir -p .machine-oldroot
pivot_root . .machine-oldroot
umount -l /.machine-oldroot
rmdir /.machine-oldroot
exec env -i container=wgnapid-ci PATH="$MACHINE_PATH" SYSTEMD_LOG_LEVEL=notice \
    /lib/systemd/systemd --system --unit=multi-user.target
"""


def cgroup2_root() -> str:
    """The host's cgroup2 mount: /sys/fs/cgroup/unified (hybrid) or /sys/fs/cgroup."""
    for path in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(path, "cgroup.procs")) and \
                os.path.exists(os.path.join(path, "cgroup.controllers")):
            return path
    raise RuntimeError("no cgroup2 hierarchy mounted (need /sys/fs/cgroup/unified or unified /sys/fs/cgroup)")


def problem(lower: str = "/") -> str | None:
    """Why a Machine over ``lower`` cannot boot here (None when it can): for skip reasons."""
    if os.geteuid() != 0:
        return "a systemd machine needs root"
    for tool in ("unshare", "nsenter", "pivot_root", "mknod"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in PATH.split(":")):
            return f"a systemd machine needs `{tool}` (util-linux/coreutils)"
    if not os.path.exists(os.path.join(lower, "lib/systemd/systemd")):
        return f"{os.path.join(lower, 'lib/systemd/systemd')} is missing (Debian package: systemd)"
    try:
        cgroup2_root()
    except RuntimeError as exc:
        return str(exc)
    return None



def wait_until(fn, timeout: float, what: str, interval: float = 0.1):
    """Poll ``fn`` until it returns something true, and return that; AssertionError
    naming ``what`` (and the last value) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {value!r}")
        time.sleep(interval)

class MachineError(RuntimeError):
    pass


class Machine:
    """systemd as PID 1 in private namespaces over an overlay of ``lower``.

    ``lower``: the root file system to boot (its /lib/systemd/systemd runs).
    ``mask``: units to mask (default MASK); ``extra_mask`` adds to it.
    ``binds``: {host dir: guest dir} bind-mounted read-only.
    ``name``: goes into every host-side name (cgroup dir, work dir, hostname).
    """

    def __init__(self, *, lower: str = "/", name: str = "machine", mask=MASK, extra_mask=(),
                 binds: dict[str, str] | None = None, boot_timeout: float = 60.0):
        self.lower = os.path.abspath(lower)
        self.token = f"wgnapid-ci-{name}-{secrets.token_hex(4)}"
        self.mask = tuple(mask) + tuple(extra_mask)
        self.binds = dict(binds or {})
        self.boot_timeout = boot_timeout
        self.cgroup = os.path.join(cgroup2_root(), self.token)
        self.work: str | None = None
        self.console: Path | None = None
        self.proc: subprocess.Popen | None = None  # the host-side `sh -> unshare` launcher
        self.pid: int | None = None  # the guest's PID 1, as the host sees it
        self.booted_at: str | None = None  # guest wall clock at boot, for journalctl --since
        self.boot_seconds: float | None = None

    # -- life cycle -------------------------------------------------------------

    def __enter__(self) -> "Machine":
        try:
            self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def boot(self) -> None:
        """Start the guest and wait until systemd reports running (or degraded)."""
        t0 = time.monotonic()
        os.mkdir(self.cgroup)
        self.work = tempfile.mkdtemp(prefix=f"{self.token}-")
        self.console = Path(tempfile.mkstemp(prefix=f"{self.token}-", suffix=".console")[1])
        env = {
            "PATH": PATH,
            "MACHINE_WORK": self.work,
            "MACHINE_LOWER": self.lower,
            "MACHINE_MASK": " ".join(self.mask),
            "MACHINE_BINDS": "\n".join(f"{s}\t{d}" for s, d in self.binds.items()),
            "MACHINE_HOSTNAME": self.token[:63],
            "MACHINE_PATH": PATH,
        }
        launcher = (
            f"echo $$ > {shlex.quote(os.path.join(self.cgroup, 'cgroup.procs'))} && "
            "exec unshare --pid --fork --mount --uts --ipc --net --cgroup --propagation private "
            f"sh -c {shlex.quote(_INIT)}"
        )
        with open(self.console, "wb") as out:
            self.proc = subprocess.Popen(["sh", "-c", launcher], env=env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.pid = self._wait(self._find_pid1, 20, "the guest's PID 1")
        self._wait(lambda: self._comm(self.pid) == "systemd", 20, "systemd to be exec'd as PID 1")
        # The private bus socket appears once the manager is up.
        self._wait(lambda: os.path.exists(f"/proc/{self.pid}/root/run/systemd/private"), 30,
                   "systemd's private socket")
        r = self.run("systemctl", "is-system-running", "--wait", timeout=self.boot_timeout)
        state = r.stdout.strip()
        if state not in ("running", "degraded"):
            raise MachineError(f"guest did not boot: {state!r}\n{self.console_text()}")
        if state == "degraded":
            failed = self.run("systemctl", "--failed", "--no-legend", "--plain").stdout
            print(f"machine {self.token}: degraded; failed units:\n{failed}")
        self.booted_at = self.run("date", "+%Y-%m-%d %H:%M:%S.%N").stdout.strip()[:-3]
        self.boot_seconds = time.monotonic() - t0

    def _find_pid1(self) -> int | None:
        if self.proc.poll() is not None:
            raise MachineError(f"the launcher exited ({self.proc.returncode}):\n{self.console_text()}")
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                kids = f.read().split()
        except OSError:
            return None
        # The launcher's sh has exec'd unshare, whose one child is the guest's PID 1.
        return int(kids[0]) if kids and self._comm(self.proc.pid) == "unshare" else None

    @staticmethod
    def _comm(pid: int) -> str | None:
        try:
            with open(f"/proc/{pid}/comm") as f:
                return f.read().strip()
        except OSError:
            return None

    def _wait(self, fn, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise MachineError(f"guest exited ({self.proc.returncode}) while waiting for {what}:\n"
                                   f"{self.console_text()}")
            if time.monotonic() > deadline:
                raise MachineError(f"timed out after {timeout} s waiting for {what}\n{self.console_text()}")
            time.sleep(0.05)

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")[-4000:] if self.console else ""
        except OSError:
            return ""

    def poweroff(self, timeout: float = 60.0) -> None:
        """`systemctl poweroff` and wait for the guest's PID 1 to exit; SIGKILL it after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.pid is not None and self._comm(self.pid) == "systemd":
            subprocess.run(["nsenter", "-t", str(self.pid), "-a", "systemctl", "poweroff", "--no-block"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"machine {self.token}: no poweroff within {timeout} s; killing its PID 1")
        self._kill()

    def _kill(self) -> None:
        # SIGKILL to a PID namespace's init ends every process in that namespace.
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)

    def close(self) -> None:
        """Power off (if up) and remove everything made on the host: safe to call twice."""
        try:
            if self.proc is not None:
                try:
                    self.poweroff()
                except Exception as exc:  # noqa: BLE001 - cleanup goes on
                    print(f"machine {self.token}: poweroff: {exc}")
                    self._kill()
        finally:
            self._remove_cgroup()
            if self.work and os.path.isdir(self.work):
                try:
                    os.rmdir(self.work)  # only the empty mount point: the tmpfs was in the guest's namespace
                except OSError as exc:
                    print(f"machine {self.token}: cannot remove {self.work}: {exc}")
                self.work = None
            if self.console and self.console.exists():
                self.console.unlink()
            self.proc = None

    def _remove_cgroup(self) -> None:
        if not os.path.isdir(self.cgroup):
            return
        deadline = time.monotonic() + 30
        while True:
            dirs = [d for d, _, _ in os.walk(self.cgroup)]
            left = []
            for d in dirs:
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        left += [int(p) for p in f.read().split()]
                except OSError:
                    pass
            for pid in left:  # only processes in our own cgroup
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for d in reversed(dirs):  # children first
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            if not os.path.exists(self.cgroup):
                return
            if time.monotonic() > deadline:
                print(f"machine {self.token}: cannot remove cgroup {self.cgroup} (processes: {left})")
                return
            time.sleep(0.05)

    # -- talking to the guest ---------------------------------------------------

    def run(self, *argv: str, check: bool = False, timeout: float = 120, input: str | None = None,
            env: dict | None = None) -> subprocess.CompletedProcess:
        """Run a command in all of the guest's namespaces (its root, its network, its PIDs)."""
        if self.pid is None:
            raise MachineError("the machine is not booted")
        prefix = ["nsenter", "-t", str(self.pid), "-a"]
        if env is not None:
            prefix += ["env", "-i", f"PATH={PATH}"] + [f"{k}={v}" for k, v in env.items()]
        r = subprocess.run(prefix + list(argv), capture_output=True, text=True, timeout=timeout,
                           input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise MachineError(f"{shlex.join(argv)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        """A shell script in the guest (bash -euo pipefail)."""
        return self.run("bash", "-euo", "pipefail", "-c", script, **kw)

    def systemctl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("systemctl", "--no-pager", *args, **kw)

    def unit_property(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-P", prop, unit).stdout.strip()

    def journal(self, *args: str, since: str | None = None) -> list[dict]:
        """journalctl -o json entries (since the boot unless ``since`` is given)."""
        r = self.run("journalctl", "--no-pager", "-o", "json", "--since", since or self.booted_at, *args)
        out = []
        for line in r.stdout.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def path(self, guest_path: str) -> str:
        """The host-side path of a guest path (through /proc/PID/root)."""
        return f"/proc/{self.pid}/root/{guest_path.lstrip('/')}"

    def install(self, guest_path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Write a file into the guest (the overlay's upper layer), making its directories."""
        host = self.path(guest_path)
        os.makedirs(os.path.dirname(host), exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        with open(host, "wb") as f:
            f.write(data)
        os.chmod(host, mode)

    def read(self, guest_path: str) -> str:
        with open(self.path(guest_path)) as f:
            return f.read()

    def guest_pid_to_host(self, guest_pid: int) -> int | None:
        """The host PID of a process the guest knows as ``guest_pid`` (NSpid in /proc)."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            ids = line.split()[1:]
                            if len(ids) >= 2 and int(ids[-1]) == guest_pid and \
                                    os.readlink(f"/proc/{entry}/ns/pid") == os.readlink(f"/proc/{self.pid}/ns/pid"):
                                return int(entry)
                            break
            except OSError:
                continue
        return None
