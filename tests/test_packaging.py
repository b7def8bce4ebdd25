"""The sdist and the wheel build without a warning, and carry the licence.

`python -m build` (PEP 517, build isolation: the build requirements come from
the package registry) on a copy of the tree, with the newest setuptools and
with the one Debian 13 ships (78.1.1, which the Debian package builds with):
PEP 639 (`license = "GPL-2.0-or-later"`, `license-files`) needs setuptools
77 or newer, and the older table form printed a deprecation warning on every
build.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
DEBIAN13_SETUPTOOLS = "78.1.1"  # python3-setuptools 78.1.1-0.1 in trixie

# What setuptools and the build frontend print when something is off. pip's own
# notes about this machine's configuration ("WARNING: Location ... is ignored")
# are not the project's and are not counted.
BAD = re.compile(r"deprecat|SetuptoolsWarning|BuildBackendWarning|SetuptoolsDeprecationWarning", re.I)


def _copy_tree(dst: Path) -> Path:
    """The files a clone would have (tracked and new, not ignored): no venvs, no build output."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=TOP, capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, files):
        src = TOP / os.fsdecode(rel)
        if src.is_file():
            (dst / os.fsdecode(rel)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / os.fsdecode(rel))
    return dst


@pytest.mark.parametrize("setuptools", ["newest", DEBIAN13_SETUPTOOLS])
def test_sdist_and_wheel_build_without_warnings(tmp_path, setuptools):
    pytest.importorskip("build", reason="the `build` package is in tests/requirements-*.txt")
    tree = _copy_tree(tmp_path / "src")
    out = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_CONSTRAINT")}
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("" if setuptools == "newest" else f"setuptools=={setuptools}\n")
    env["PIP_CONSTRAINT"] = str(constraints)
    res = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(tree)],
                         env=env, capture_output=True, text=True, timeout=600)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-4000:]
    # build lists what it installed: "* Installed build dependency versions:" / "- setuptools==78.1.1"
    used = re.findall(r"^\s*- setuptools==(\S+)$", text, re.M)
    print(f"setuptools used for the build: {used}")
    assert used, text[-4000:]
    if setuptools != "newest":
        assert all(v == setuptools for v in used), text[-4000:]
    bad = [line for line in text.splitlines() if BAD.search(line)]
    assert not bad, "\n".join(bad)

    (sdist,) = out.glob("wgnapid-*.tar.gz")
    (wheel,) = out.glob("wgnapid-*.whl")
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        assert any(n.endswith("/LICENSE") for n in names), names
        # The compiled hot path builds from the sdist (its source and setup.py ride along).
        assert any(n.endswith("/wgnapid/_hotpath.c") for n in names), names
        assert any(n.endswith("/setup.py") for n in names), names
        (pkg_info,) = [n for n in names if n.count("/") == 1 and n.endswith("/PKG-INFO")]
        sdist_meta = tar.extractfile(pkg_info).read().decode()
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        assert any(re.fullmatch(r"wgnapid-[^/]+\.dist-info/licenses/LICENSE", n) for n in names), names
        assert any(re.fullmatch(r"wgnapid/_hotpath\.cpython-[^/]+\.so", n) for n in names), names
        assert not any(n.endswith(".c") for n in names), names
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        wheel_meta = whl.read(meta).decode()
    for doc in (sdist_meta, wheel_meta):
        assert "License-Expression: GPL-2.0-or-later" in doc, doc[:1500]
        assert "License-File: LICENSE" in doc, doc[:1500]
        assert not re.search(r"^License: ", doc, re.M), "the deprecated License: field is still there"
    copying = (TOP / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in copying and "Version 2, June 1991" in copying
