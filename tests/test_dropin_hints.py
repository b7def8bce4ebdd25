"""Every drop-in a message of the daemon names exists where the messages say:
systemd/drop-ins/ in the source, and (all but the venv install's) in the
Debian package's examples (debian/wgnapid.examples)."""

import errno
import re
from pathlib import Path

from wgnapid import DROP_INS
from wgnapid.placement import _why

TOP = Path(__file__).resolve().parents[1]


def _named_in_code() -> set[str]:
    names = set()
    for path in (TOP / "wgnapid").glob("*.py"):
        names |= set(re.findall(r"\b([a-z][a-z-]*\.conf)\b", path.read_text()))
    return names


def test_every_drop_in_the_code_names_is_shipped():
    named = _named_in_code()
    assert {"namespaces-all.conf", "placement.conf", "realtime.conf", "metrics.conf"} <= named, named
    examples = set((TOP / "debian" / "wgnapid.examples").read_text().split())
    for name in named:
        assert (TOP / "systemd" / "drop-ins" / name).is_file(), name
        assert f"systemd/drop-ins/{name}" in examples, name
    assert "systemd/drop-ins/" in DROP_INS and "/usr/share/doc/wgnapid/examples/" in DROP_INS


def test_a_refused_placement_names_its_drop_ins_and_where_they_are():
    why = _why(OSError(errno.EPERM, "Operation not permitted"), "affinity")
    assert "CAP_SYS_NICE" in why and "placement.conf" in why and "realtime.conf" in why, why
    assert DROP_INS in why, why
