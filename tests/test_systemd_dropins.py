"""systemd/drop-ins/*.conf: each verifies, opens only what it says, and keeps the score.

Offline, a unit file's drop-ins are read from `<unit>.d/` beside it, as
systemd does; the combinations are scored with `systemd-analyze security
--offline=yes` (numbers printed; README "Placing NAPI threads" quotes them).
"""

import json
import shutil

import pytest

import re

from test_systemd_unit import MAX_EXPOSURE, UNIT, analyze, needs_analyze, parse_unit, runnable_unit

DROPINS = UNIT.parent / "drop-ins"


def _unit_with(tmp_path, names):
    path = runnable_unit(tmp_path)
    d = tmp_path / f"{UNIT.name}.d"
    d.mkdir()
    for name in names:
        shutil.copy(DROPINS / f"{name}.conf", d)
    return path


def _security(path):
    r = analyze("security", "--offline=yes", "--json=short", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    items = {i["name"]: i for i in json.loads(r.stdout)}
    r = analyze("security", "--offline=yes", str(path))
    score = float(re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout + r.stderr).group(1))
    return score, items


def test_dropins_only_add_what_they_say():
    placement = parse_unit((DROPINS / "placement.conf").read_text())["Service"]
    assert placement == {"CapabilityBoundingSet": ["CAP_SYS_NICE"],
                         "SystemCallFilter": ["sched_setaffinity sched_setscheduler setpriority"]}
    assert parse_unit((DROPINS / "realtime.conf").read_text())["Service"] == {"RestrictRealtime": ["no"]}
    metrics = parse_unit((DROPINS / "metrics.conf").read_text())["Service"]
    assert list(metrics) == ["ReadWritePaths"]
    # The default unit stays as hardened as before.
    main = parse_unit(UNIT.read_text())["Service"]
    assert main["RestrictRealtime"] == ["yes"]
    assert "CAP_SYS_NICE" not in " ".join(main["CapabilityBoundingSet"])


@needs_analyze
@pytest.mark.parametrize("names", [(), ("placement",), ("placement", "realtime"), ("metrics",),
                                   ("placement", "realtime", "metrics")])
def test_scores_and_verify(tmp_path, names):
    path = _unit_with(tmp_path, names)
    # --man=no: the man pages come with the Debian package (test_systemd_unit.py).
    r = analyze("verify", "--man=no", "--recursive-errors=no", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    score, items = _security(path)
    print(f"systemd-analyze security exposure with {'+'.join(names) or 'no drop-in'}: {score}")
    assert score <= MAX_EXPOSURE
    resources = items["SystemCallFilter=~@resources"]["description"]
    realtime = items["RestrictRealtime="]["description"]
    if "placement" in names:
        assert "sched_setaffinity is allowed" in resources, resources
    else:
        assert "@resources is not included" in resources, resources
    assert ("may acquire realtime" in realtime) == ("realtime" in names), realtime
