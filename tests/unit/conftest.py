"""Fixtures for the unit tests (helpers are in helpers.py).

Nothing here touches the real /sys, /proc or netlink.
"""

import pytest

from .helpers import Attr, Clock, FakeSysfs, RecordingLog


@pytest.fixture
def fakesys(tmp_path):
    return FakeSysfs(tmp_path / "net")


@pytest.fixture
def rlog():
    return RecordingLog()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def attr(fakesys):
    """The real ThreadedAttr on the fake tree, recording writes (helpers.Attr)."""
    return Attr(fakesys)
