"""systemd/drop-ins/namespaces-all.conf: the drop-in for daemon.namespaces = "all".

The unit itself is tested in test_systemd_unit.py (and stays as hardened as it
is for "self"); here the unit plus this drop-in, laid out as systemd finds them
(wgnapid.service.d/ beside the unit), must verify, score at most MAX_EXPOSURE
with `systemd-analyze security --offline=yes`, and add exactly what "all" needs.
"""

import re
import shutil

import pytest

from test_systemd_unit import MAX_EXPOSURE, UNIT, analyze, needs_analyze, parse_unit, runnable_unit, words

DROPIN = UNIT.parent / "drop-ins" / "namespaces-all.conf"
# The README states the measured score (2.3 with systemd 252).


@pytest.fixture
def unit_with_dropin(tmp_path):
    unit = runnable_unit(tmp_path)
    (tmp_path / "wgnapid.service.d").mkdir()
    shutil.copy(DROPIN, tmp_path / "wgnapid.service.d" / DROPIN.name)
    return unit


def test_dropin_adds_only_what_all_needs():
    drop = parse_unit(DROPIN.read_text())
    assert set(drop) == {"Service"}
    assert sorted(words(drop, "Service", "CapabilityBoundingSet")) == [
        "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]
    assert words(drop, "Service", "RestrictNamespaces") == ["net"]
    assert sorted(words(drop, "Service", "SystemCallFilter")) == ["fsconfig", "fsmount", "fsopen"]
    # The main unit is untouched by "all": still CAP_NET_ADMIN only, no namespaces.
    unit = parse_unit(UNIT.read_text())
    assert words(unit, "Service", "CapabilityBoundingSet") == ["CAP_NET_ADMIN"]
    assert words(unit, "Service", "RestrictNamespaces") == ["yes"]


@needs_analyze
def test_unit_with_dropin_verifies(unit_with_dropin):
    # --man=no: the man pages come with the Debian package (test_systemd_unit.py).
    r = analyze("verify", "--man=no", "--recursive-errors=no", str(unit_with_dropin))
    out = r.stdout + r.stderr
    ours = [l for l in out.splitlines() if str(unit_with_dropin.parent) in l]
    assert r.returncode == 0, out
    assert ours == [], "\n".join(ours)


@needs_analyze
def test_unit_with_dropin_security_score(unit_with_dropin):
    r = analyze("security", "--offline=yes", str(unit_with_dropin))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # The drop-in was read: its capabilities are counted against the unit.
    assert re.search(r"✗ CapabilityBoundingSet=~CAP_SYS_ADMIN", out), out
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert m, out
    score = float(m.group(1))
    print(f"systemd-analyze security exposure with the namespaces-all drop-in: {score}")
    assert score <= MAX_EXPOSURE, out
