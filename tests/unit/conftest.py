"""Fixtures for the unit tests (helpers are in helpers.py).

Nothing here touches the real /sys, /proc or netlink.
"""

import pytest

from .helpers import FakeSysfs, RecordingLog


@pytest.fixture
def fakesys(tmp_path):
    return FakeSysfs(tmp_path / "net")


@pytest.fixture
def rlog():
    return RecordingLog()
