"""wgnapid._hotpath (C) against its Python references: the same answers on every input.

link_messages: wgnapid.links._link_messages_py, on hand-built and randomly
damaged netlink datagrams. pwrite_each: wgnapid.sysfs._pwrite_each_py, on
real files that accept, refuse (ENOSPC, EBADF) or cut writes. EOPNOTSUPP, the
answer of a link without a NAPI instance, needs root and a tun link:
tests/integration/test_waiting.py compares both there.

The compiled module is optional in a source tree (accel.py); `./dev test` and
the Debian build set WGNAPID_REQUIRE_HOTPATH=1, so there a missing build fails
instead of skipping (unless WGNAPID_PURE_PYTHON=1 turns it off on purpose: the
suite's run on the Debian 13 dependency set).
"""

from __future__ import annotations

import errno
import os
import random
import struct

import pytest

from .test_links_parser import ifinfomsg, link_body, nlmsg, rta
from wgnapid import accel, links, sysfs
from wgnapid.links import (IFLA_ADDRESS, IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINKINFO, NLM_F_MULTI,
                           NLMSG_DONE, NLMSG_ERROR, RTM_DELLINK, RTM_NEWLINK, Link)


def _hotpath():
    if accel.hotpath is None:
        if os.environ.get("WGNAPID_REQUIRE_HOTPATH") == "1" and not accel.forced_off():
            pytest.fail(f"WGNAPID_REQUIRE_HOTPATH=1 but the hot path is {accel.describe()}")
        pytest.skip(f"wgnapid._hotpath is not built here: {accel.describe()}")
    return accel.hotpath


# -- link_messages ----------------------------------------------------------------

IFLA_MTU, IFLA_INFO_DATA = 4, 2
NLA_F_NESTED = 0x8000


def _random_link_message(rng: random.Random) -> bytes:
    """A link message as the kernel could send it, or close to one."""
    name = rng.choice(["wg0", "", "a" * 15, "ä-\u00e9", None])
    kind = rng.choice(["wireguard", "tun", "veth", "", None])
    filler = b"".join(rta(rng.choice([IFLA_MTU, 13, 30, 40]), os.urandom(rng.choice([0, 1, 4, 8])))
                      for _ in range(rng.randrange(0, 6)))
    extra = rta(IFLA_ADDRESS, os.urandom(rng.choice([0, 6, 32]))) if rng.random() < 0.4 else b""
    body = link_body(rng.randrange(-3, 1 << 20), name, kind,
                     nested_flag=rng.choice([0, NLA_F_NESTED]), extra_before=filler + extra,
                     extra_after=rta(IFLA_IFNAME, b"second\0") if rng.random() < 0.1 else b"")
    if name is not None and rng.random() < 0.1:
        body += rta(IFLA_IFNAME, b"\xff\xfe\0tail")  # not UTF-8, and bytes after the NUL
    mtype = rng.choice([RTM_NEWLINK, RTM_NEWLINK, RTM_DELLINK])
    return nlmsg(mtype, body, flags=rng.choice([0, NLM_F_MULTI]), seq=rng.randrange(0, 1 << 32))


def _random_datagram(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randrange(0, 5)):
        r = rng.random()
        if r < 0.7:
            parts.append(_random_link_message(rng))
        elif r < 0.8:
            parts.append(nlmsg(NLMSG_ERROR, struct.pack("=i", -rng.randrange(0, 140)) + os.urandom(16)))
        elif r < 0.85:
            parts.append(nlmsg(NLMSG_ERROR, os.urandom(rng.randrange(0, 4))))  # too short for the error
        else:
            parts.append(nlmsg(NLMSG_DONE, struct.pack("=i", 0), flags=NLM_F_MULTI))
    buf = bytearray(b"".join(parts))
    damage = rng.random()
    if buf and damage < 0.3:
        for _ in range(rng.randrange(1, 8)):  # flip bytes anywhere, headers included
            buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif buf and damage < 0.45:
        del buf[rng.randrange(len(buf)):]  # a cut datagram
    elif damage < 0.5:
        buf += os.urandom(rng.randrange(0, 24))  # trailing bytes
    return bytes(buf)


def test_link_messages_same_answers_on_random_datagrams():
    hot = _hotpath()
    rng = random.Random(16)
    for _ in range(20000):
        buf = _random_datagram(rng)
        assert hot.link_messages(buf) == links._link_messages_py(buf), buf.hex()


def test_link_messages_same_answers_on_every_cut():
    hot = _hotpath()
    buf = (nlmsg(RTM_NEWLINK, link_body(7, "wg0", "wireguard", extra_before=rta(IFLA_MTU, b"\0" * 4)))
           + nlmsg(RTM_DELLINK, link_body(8, "wg1", None)) + nlmsg(NLMSG_ERROR, struct.pack("=i", -19)))
    for n in range(len(buf) + 1):
        assert hot.link_messages(buf[:n]) == links._link_messages_py(buf[:n]), n


@pytest.mark.parametrize("impl", ["c", "python"])
def test_link_messages_answers(impl):
    f = _hotpath().link_messages if impl == "c" else links._link_messages_py
    buf = (nlmsg(RTM_NEWLINK, link_body(7, "wg0", "wireguard"), seq=5)
           + nlmsg(RTM_DELLINK, ifinfomsg(9) + rta(IFLA_IFNAME, b"v\xffa\0") + rta(IFLA_ADDRESS, b"\1\2"))
           + nlmsg(RTM_NEWLINK, b"\0" * 8)  # shorter than an ifinfomsg
           + nlmsg(NLMSG_ERROR, struct.pack("=i", -19))
           + nlmsg(NLMSG_DONE, struct.pack("=i", 0), flags=NLM_F_MULTI, seq=5))
    assert f(buf) == [
        (RTM_NEWLINK, 0, 5, (7, "wg0", "wireguard", None)),
        (RTM_DELLINK, 0, 0, (9, "v\udcffa", "", b"\1\2")),
        (RTM_NEWLINK, 0, 0, None),
        (NLMSG_ERROR, 0, 0, -19),
        (NLMSG_DONE, NLM_F_MULTI, 5, None),
    ]
    # What the callers build from a body: the Link parse_link gives.
    assert Link(*f(buf)[0][3]) == links.parse_link(memoryview(buf), 16, 16 + len(link_body(7, "wg0", "wireguard")))


def test_link_messages_reads_any_buffer():
    hot = _hotpath()
    buf = nlmsg(RTM_NEWLINK, link_body(3, "wg0", "wireguard"))
    assert hot.link_messages(bytearray(buf)) == hot.link_messages(memoryview(buf)) == hot.link_messages(buf)
    with pytest.raises(TypeError):
        hot.link_messages("not bytes")


def test_linkinfo_kind_stops_at_the_first():
    hot = _hotpath()
    info = rta(IFLA_INFO_DATA, b"\0" * 4) + rta(IFLA_INFO_KIND, b"tun\0") + rta(IFLA_INFO_KIND, b"veth\0")
    buf = nlmsg(RTM_NEWLINK, ifinfomsg(4) + rta(IFLA_IFNAME, b"t0\0") + rta(IFLA_LINKINFO, info))
    assert hot.link_messages(buf) == links._link_messages_py(buf) == [(RTM_NEWLINK, 0, 0, (4, "t0", "tun", None))]


# -- pwrite_each ------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    """Open fds: two regular files, /dev/full (ENOSPC), a closed fd (EBADF) and
    a read-only fd (EBADF), in a known order; closed afterwards."""
    opened = []
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(b"0\n")
        opened.append(os.open(tmp_path / name, os.O_RDWR))
    opened.append(os.open("/dev/full", os.O_WRONLY))
    closed = os.open(tmp_path / "a", os.O_RDONLY)
    os.close(closed)
    opened.append(os.open(tmp_path / "b", os.O_RDONLY))
    yield opened, closed, tmp_path
    for fd in opened:
        os.close(fd)


def _both(fds, data, max_written, tmp_path):
    hot = _hotpath()
    out = []
    for f in (hot.pwrite_each, sysfs._pwrite_each_py):
        for name in ("a", "b"):
            (tmp_path / name).write_bytes(b"0\n")
        out.append(f(list(fds), data, max_written))
        out.append(((tmp_path / "a").read_bytes(), (tmp_path / "b").read_bytes()))
    return out


def test_pwrite_each_answers_every_write(files):
    (a, b, full, ro), closed, tmp = files
    c, c_files, py, py_files = _both([a, full, closed, ro, b], b"1\n", 10, tmp)
    assert c == py == ([(0, 2), (1, -errno.ENOSPC), (2, -errno.EBADF), (3, -errno.EBADF), (4, 2)], 5)
    assert c_files == py_files == (b"1\n", b"1\n")  # at offset 0: the old content replaced


def test_pwrite_each_stops_after_max_written(files):
    (a, b, full, ro), closed, tmp = files
    # Failed writes do not count; the second success stops the loop before `b`.
    c, c_files, py, py_files = _both([full, a, closed, a, b], b"1\n", 2, tmp)
    assert c == py == ([(0, -errno.ENOSPC), (1, 2), (2, -errno.EBADF), (3, 2)], 4)
    assert c_files == py_files == (b"1\n", b"0\n")
    assert _both([a, b], b"1\n", 0, tmp)[0] == ([], 0)  # nothing may be written: nothing is tried


def test_pwrite_each_empty_and_bad_arguments(files):
    hot = _hotpath()
    assert hot.pwrite_each([], b"1\n", 5) == sysfs._pwrite_each_py([], b"1\n", 5) == ([], 0)
    with pytest.raises(TypeError):
        hot.pwrite_each([None], b"1\n", 1)
    with pytest.raises(OverflowError):
        hot.pwrite_each([1 << 40], b"1\n", 1)
    with pytest.raises(TypeError):
        hot.pwrite_each((1, 2), b"1\n", 1)  # a list, as ThreadedAttr passes


def test_retry_each_classifies_as_a_single_write(files):
    (a, b, full, ro), closed, tmp = files
    ops = [sysfs.Opened("a", a, True), sysfs.Opened("full", full, True), sysfs.Opened("gone", closed, True)]
    answers, tried = sysfs.ThreadedAttr().retry_each(ops, 1, 10)
    assert tried == 3
    assert [(i, r.outcome) for i, r in answers] == [
        (0, sysfs.Outcome.OK), (1, sysfs.Outcome.ERROR), (2, sysfs.Outcome.ERROR)]
    assert answers[0][1].value == 1
    assert "No space left" in answers[1][1].detail
    single = sysfs.ThreadedAttr().pwrite(ops[1], 1)
    assert answers[1][1] == single  # the same Result a single pwrite gives
