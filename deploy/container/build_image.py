#!/usr/bin/env python3
"""Build the wgnapid container image from Debian 13 packages only (run as root).

    deploy/container/build_image.py [--tag NAME] [--deb FILE]      (or: ./dev image)

1. The base: a Debian 13 root made by debootstrap with wgnapid's runtime
   dependencies (python3-pydantic, python3-pyroute2, python3-pyudev,
   libsystemd0), built and cached by tests/debian/mkroot (under
   /var/cache/wgnapid-ci/debian13), imported into podman (`podman import`)
   under a temporary name. No image registry is contacted, ever.
2. The wgnapid Debian package: --deb FILE, or built here from this tree with
   dpkg-buildpackage in mkroot's root of the package's Build-Depends
   (DEB_BUILD_OPTIONS=nocheck: the package tier, `./dev test-deb`, tests it).
3. `podman build --squash-all --network none --pull never` with
   deploy/container/Containerfile: apt installs the package from the local
   file, then what a daemon image does not need (systemd, man-db, docs, apt
   lists) is removed; one layer.

Prints the image's name on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "debian"))

import debroot  # noqa: E402  (issue 12's Debian 13 roots: mkroot, overlays, a clean tree)

# Root filesystem layer name in mkroot's cache, and what goes into it.
RUNTIME_PACKAGES = "python3-pydantic python3-pyroute2 python3-pyudev libsystemd0"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]


def log(message: str) -> None:
    print(f"build_image: {message}", file=sys.stderr, flush=True)


def version() -> str:
    text = (REPO / "wgnapid" / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1)


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, **kw)
    if r.returncode != 0:
        raise SystemExit(f"build_image: {' '.join(map(str, argv[:6]))} ... failed ({r.returncode})")
    return r


def base_image(work: Path) -> str:
    """The cached Debian 13 root with the runtime dependencies, imported into
    podman under a name of its own (removed again by main())."""
    tar = work / "base.tar"
    root = run([str(debroot.MKROOT), "--packages", RUNTIME_PACKAGES, "--tar", str(tar), "container"],
               stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    name = f"localhost/wgnapid-base-tmp-{secrets.token_hex(4)}:{Path(root).name}"
    log(f"podman import {root} as {name}")
    run(PODMAN + ["import", "--quiet", str(tar), name], stdout=subprocess.DEVNULL)
    tar.unlink()
    return name


def build_deb(work: Path) -> Path:
    """wgnapid_<version>_<arch>.deb, built from this tree's files as a fresh clone has them."""
    broot = debroot.mkroot("build-deb", build_deps=REPO / "debian" / "control")
    ov = debroot.Overlay(work, "deb", broot)
    src = f"/root/build/wgnapid-{version()}"
    debroot.clean_tree(ov.upper / src.lstrip("/"))
    log("dpkg-buildpackage -b (nocheck) in the Debian 13 build root")
    r = ov.sh(f"cd {src} && DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -us -uc -b", log=work / "deb.log")
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-6000:])
        raise SystemExit("build_image: dpkg-buildpackage failed")
    (deb,) = ov.host_path("/root/build").glob("wgnapid_*.deb")
    return deb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tag", default=f"localhost/wgnapid:{version()}", help="the image's name (default: %(default)s)")
    p.add_argument("--deb", type=Path, help="use this wgnapid .deb instead of building one from the tree")
    args = p.parse_args(argv)
    problem = debroot.problem() or (None if shutil.which("podman") else "podman is missing (`./dev image` installs it)")
    if problem:
        raise SystemExit(f"build_image: {problem}")

    with tempfile.TemporaryDirectory(prefix="wgnapid-image-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        context = work / "context"
        context.mkdir()
        deb = args.deb or build_deb(work)
        shutil.copy2(deb, context / "wgnapid.deb")
        base = base_image(work)
        try:
            log(f"podman build {args.tag} from {base} and {deb.name}")
            run(PODMAN + ["build", "--quiet", "--squash-all", "--network", "none", "--pull=never",
                          "--build-arg", f"BASE={base}", "--label", f"org.opencontainers.image.version={version()}",
                          "-f", str(HERE / "Containerfile"), "-t", args.tag, str(context)],
                stdout=subprocess.DEVNULL)
        finally:
            subprocess.run(PODMAN + ["rmi", "--force", base], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    size = run(PODMAN + ["image", "inspect", "--format", "{{.Size}}", args.tag],
               stdout=subprocess.PIPE, text=True).stdout.strip()
    log(f"{args.tag}: {int(size) / 1e6:.0f} MB")
    print(args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
