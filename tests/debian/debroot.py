"""Debian 13 roots for the package tier: cached roots from ``mkroot``, throw-away
overlays over them, and commands chrooted into those overlays.

Every overlay lives in its own mount namespace (``unshare --mount``): nothing
stays mounted on the host when a command returns, even if the test dies. What
a command changed stays in the overlay's upper directory, on disk, so a later
step (or a booted machine, see tests/systemd/machine.py) can use
``upper:lower`` as its lower layers.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MKROOT = HERE / "mkroot"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def problem() -> str | None:
    """Why this tier cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "the Debian package tier needs root (debootstrap, overlay mounts, chroot)"
    for tool in ("debootstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (`./dev test-deb` installs it)"
    return None


def mkroot(name: str, *, packages: str = "", build_deps: Path | None = None) -> str:
    """The cached root NAME (built on first use); see tests/debian/mkroot."""
    argv = [str(MKROOT)]
    if packages:
        argv += ["--packages", packages]
    if build_deps:
        argv += ["--build-deps", str(build_deps)]
    r = subprocess.run(argv + [name], stdout=subprocess.PIPE, text=True, timeout=3600)
    assert r.returncode == 0, f"mkroot {name} failed ({r.returncode}); its log is above"
    return r.stdout.strip().splitlines()[-1]


def apt_archives() -> Path:
    """A .deb cache shared by the installs of this tier (apt's own archive layout),
    so a warm run downloads nothing; apt locks it while it works."""
    path = Path(os.environ.get("WGNAPID_CI_CACHE", "/var/cache/wgnapid-ci")) / "debian13" / "apt-archives"
    (path / "partial").mkdir(parents=True, exist_ok=True)
    return path


class Overlay:
    """An overlay root: ``lowers`` (read-only, first on top) under ``upper`` (on disk)."""

    def __init__(self, work: Path, name: str, *lowers: str):
        self.upper = work / f"{name}-upper"
        self.scratch = work / f"{name}-work"
        self.mnt = work / f"{name}-root"
        for d in (self.upper, self.scratch, self.mnt):
            d.mkdir(parents=True, exist_ok=True)
        self.lowers = lowers

    @property
    def as_lower(self) -> str:
        """This overlay's content, as overlayfs lowerdir= layers for another mount."""
        return ":".join([str(self.upper), *self.lowers])

    def put(self, guest_path: str, src: Path) -> None:
        """Copy a host file into the upper layer (before or between commands)."""
        dst = self.upper / guest_path.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)

    def host_path(self, guest_path: str) -> Path:
        """Where a file the commands wrote is found on the host (upper layer only)."""
        return self.upper / guest_path.lstrip("/")

    def sh(self, script: str, *, timeout: float = 1800, binds: dict[str, str] | None = None,
           rw_binds: dict[str, str] | None = None, log: Path | None = None) -> subprocess.CompletedProcess:
        """``bash -euo pipefail -c script`` chrooted into the overlay, with /proc, /sys,
        /dev, a tmpfs /tmp, the host's DNS (for apt), and ``binds`` {host: guest}
        read-only, ``rw_binds`` read-write. Output (stdout and stderr together) goes to ``log`` when given,
        and is returned in ``.stdout``."""
        binds = binds or {}
        bind_lines = "".join(
            f'mkdir -p "$R"{shlex.quote(dst)}; mount --bind {shlex.quote(src)} "$R"{shlex.quote(dst)}; '
            f'mount -o remount,bind,ro "$R"{shlex.quote(dst)}\n'
            for src, dst in binds.items())
        bind_lines += "".join(
            f'mkdir -p "$R"{shlex.quote(dst)}; mount --bind {shlex.quote(src)} "$R"{shlex.quote(dst)}\n'
            for src, dst in (rw_binds or {}).items())
        setup = f"""
set -eu
R={shlex.quote(str(self.mnt))}
mount -t overlay wgnapid-ci-deb -o lowerdir={shlex.quote(":".join(self.lowers))},upperdir={shlex.quote(str(self.upper))},workdir={shlex.quote(str(self.scratch))} "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/tmp"
mount -t tmpfs tmpfs "$R/run"
[ -e "$R/etc/resolv.conf" ] || : > "$R/etc/resolv.conf"
mount --bind -o ro /etc/resolv.conf "$R/etc/resolv.conf"
{bind_lines}
exec chroot "$R" env -i PATH={PATH} HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive \\
    bash -euo pipefail -c "$1"
"""
        r = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--fork", "--", "bash", "-c", setup,
             "overlay-sh", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=timeout)
        if log is not None:
            log.write_text(r.stdout)
        return r


def clean_tree(dst: Path) -> None:
    """The project as a fresh clone would have it: tracked files plus untracked ones
    that .gitignore does not exclude (no venvs, no build output)."""
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, check=True).stdout
    dst.mkdir(parents=True)
    for rel in sorted({f for f in files.decode().split("\0") if f}):
        src = REPO / rel
        if not src.exists():  # deleted in the work tree, not yet committed
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
