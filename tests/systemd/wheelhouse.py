"""Wheels for installing wgnapid inside a guest that has no network.

The README's install runs `pip install .` in the guest; the guest's network
namespace has no route out, so pip is pointed (PIP_NO_INDEX, PIP_FIND_LINKS:
the commands stay the README's) at a directory of wheels built here on the
host: the runtime dependencies of pyproject.toml and the build backend. It is
cached under /var/cache/wgnapid-ci/, keyed by the Python version and the
dependency list, and rebuilt on a fresh machine by this code.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

CACHE = Path("/var/cache/wgnapid-ci")
PROJECT = Path(__file__).resolve().parents[2]


def requirements() -> list[str]:
    """The runtime dependencies and the build-system requirements of pyproject.toml."""
    with open(PROJECT / "pyproject.toml", "rb") as f:
        meta = tomllib.load(f)
    return list(meta["project"]["dependencies"]) + list(meta["build-system"]["requires"]) + ["wheel"]


def wheelhouse(python: str = sys.executable) -> Path:
    """The cached wheel directory for ``python`` (built on first use)."""
    reqs = requirements()
    version = subprocess.run([python, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
                             capture_output=True, text=True, check=True).stdout.strip()
    key = hashlib.sha256("\n".join([version, *reqs]).encode()).hexdigest()[:12]
    dest = CACHE / f"wheels-{version}-{key}"
    if (dest / ".complete").exists():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{dest.name}.", dir=CACHE))
    try:
        subprocess.run([python, "-m", "pip", "wheel", "-q", "--wheel-dir", str(tmp), *reqs],
                       check=True, timeout=900, env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
        (tmp / ".complete").write_text("\n".join(reqs) + "\n")
        try:
            os.rename(tmp, dest)
        except OSError:  # another run made it meanwhile
            if not (dest / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
