"""The systemd tier: fixtures, skip reasons, and the measured times in the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

import machine as machine_mod

from tierlog import MEASURED

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    problem = machine_mod.problem()
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            if problem:
                item.add_marker(pytest.mark.skip(reason=f"systemd tier: {problem}"))


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("systemd tier: measured (no timed assertions)")
        for name, (value, unit) in MEASURED.items():
            terminalreporter.write_line(f"{name}: {value:.3f} {unit}")
