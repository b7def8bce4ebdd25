"""napithreads.py: finding napi/<dev>-<id> kthreads per link in a fake /proc."""

from __future__ import annotations

import os

import pytest

from wgnapid import napithreads
from wgnapid.napithreads import (CLK_TCK, NapiThreads, format_cpus, read_fork, read_thread, thread_matches,
                                 unnamed_fork)

from .helpers import stat_line


def test_counts_kernel_threads_of_the_device(fake_proc):
    for pid, comm, ppid in [
        # Debian 6.1: every WireGuard peer thread of wg0 is napi/wg0-0.
        (100, "napi/wg0-0", 2), (101, "napi/wg0-0", 2), (102, "napi/wg0-0", 2),
        (103, "napi/wg1-0", 2),
        (104, "napi/veth0-5", 2), (105, "napi/veth0-6", 2),
        (106, "napi/wg0-1-0", 2),  # a device named wg0-1
        (200, "napi/wg0-0", 1234),  # a user process calling itself that: not counted
        (201, "evil) S 2 (x", 1),  # a comm with parentheses cannot fake a kthread
        (202, "kworker/0:1", 2),
    ]:
        fake_proc(pid, comm, ppid)
    n = NapiThreads(whole_names=True)
    assert n.count("wg0") == 3
    assert [t.pid for t in n.of("wg0").threads] == [100, 101, 102]
    assert n.count("wg1") == 1
    assert n.count("veth0") == 2
    assert n.count("wg0-1") == 1
    assert n.count("wg2") == 0


def test_fields_read_from_stat(fake_proc):
    fake_proc(300, "napi/wg0-0", utime=250, stime=50, nice=-5, cpu=1, rtprio=50, policy=1)
    t = read_thread(300, whole_names=True)
    assert (t.pid, t.name, t.cpu, t.policy, t.priority, t.nice) == (300, "napi/wg0-0", 1, "fifo", 50, -5)
    assert t.cpu_seconds == pytest.approx(300 / CLK_TCK)
    assert t.cpus == frozenset({0, 1})
    assert t.as_dict()["cpus"] == "0-1"
    assert read_thread(77) is None and read_thread(12345) is None


def test_a_kthread_not_yet_named_is_told_apart(fake_proc):
    fake_proc(2, "kthreadd", ppid=0)  # kthreadd itself
    fake_proc(500, "kthreadd")  # its child before the creator named it
    fake_proc(501, "kthreadd", ppid=1234)  # a user task calling itself that
    fake_proc(502, "napi/wg0-0")
    fake_proc(503, "kworker/0:1")
    assert [read_fork(p, whole_names=True)[1] for p in (2, 500, 501, 502, 503, 77, 12345)] == \
        [False, True, False, False, False, False, False]
    assert read_fork(502, whole_names=True)[0].name == "napi/wg0-0"
    assert unnamed_fork(b"9 (kthreadd) S 2 0 0") and not unnamed_fork(b"9 (kthreadd) S 21 0 0")


def test_a_scan_for_news_sees_a_thread_named_after_the_last_scan(fake_proc):
    # A scan for news reads only new PIDs; a kthread it saw still carrying
    # kthreadd's name is read again until it is named (or gone).
    fake_proc(500, "kthreadd")
    fake_proc(501, "kthreadd")
    first = NapiThreads(whole_names=True)
    assert first.count("wg0") == 0
    fake_proc(500, "napi/wg0-0")
    second = NapiThreads(previous=first, whole_names=True)
    assert [t.pid for t in second.of("wg0").threads] == [500]
    assert [t.pid for t in second.moved_since(first)] == [500]
    fake_proc(501, "napi/wg0-0")
    third = NapiThreads(previous=second, whole_names=True)
    assert [t.pid for t in third.of("wg0").threads] == [500, 501]
    assert [t.pid for t in third.moved_since(second)] == [501]
    fake_proc(500, "napi/wg9-0")  # a named thread is not read again: as it was
    assert [t.pid for t in NapiThreads(previous=third, whole_names=True).of("wg0").threads] == [500, 501]


def test_truncated_comms_on_kernels_without_whole_names(fake_proc):
    # The kernel cuts comm to 15 characters; before 5.17 /proc/PID/comm too.
    for pid, comm in [
        (100, "napi/abcdefgh-1"),  # abcdefgh, id 10 or 11...: id cut
        (101, "napi/abcdefgh-0"),
        (102, "napi/abcdefghi-"),  # 9-char name: the whole id is cut
        (103, "napi/wg-long-tu"),  # wg-long-tunnel (14 chars): name cut
        (104, "napi/wg-long-tu"),
        (105, "napi/0123456789"),  # 10+ chars: "-" and id cut
    ]:
        fake_proc(pid, comm)
    n = NapiThreads(whole_names=False)
    assert n.count("abcdefgh") == 2
    assert n.count("abcdefghi") == 1
    assert n.count("wg-long-tunnel") == 2
    assert n.count("wg-long") == 0  # cut inside the name: ids are numbers
    assert n.count("0123456789") == 1
    assert n.count("abcdefg") == 0
    # Indistinguishable: same 15-character prefix. Said, not guessed.
    both = n.of("0123456789abcde", known=["0123456789", "0123456789abcde"])
    assert len(both.threads) == 1
    assert "0123456789" in both.ambiguous and "cut to 15" in both.ambiguous
    assert n.of("abcdefgh", known=["abcdefgh", "abcdefghi"]).ambiguous == ""


def test_whole_names_from_comm_end_the_ambiguity(fake_proc):
    # 5.17+: /proc/PID/comm has the kernel's whole name.
    fake_proc(105, "napi/0123456789", whole="napi/0123456789abcde-0")
    fake_proc(106, "napi/0123456789", whole="napi/0123456789-0")
    n = NapiThreads(whole_names=True)
    a = n.of("0123456789abcde", known=["0123456789"])
    assert [t.pid for t in a.threads] == [105] and a.ambiguous == ""
    assert [t.pid for t in n.of("0123456789").threads] == [106]


def test_a_name_of_exactly_15_characters_is_whole_only_on_new_kernels(fake_proc):
    fake_proc(107, "napi/abcdefgh-1", whole="napi/abcdefgh-1")
    assert read_thread(107, whole_names=True).cut is False
    assert read_thread(107, whole_names=False).cut is True


def test_same_name_in_another_namespace_is_reported():
    t = napithreads.NapiThread(1, "napi/wg0-0", 0, 0.0, "other", 0, 0, frozenset({0}))
    lt = NapiThreads([t]).of("wg0", elsewhere=1)
    assert lt.threads == (t,) and "other network namespace" in lt.ambiguous


@pytest.mark.parametrize("name, cut, dev, ok", [
    ("napi/wg0-0", False, "wg0", True),
    ("napi/wg0-0", False, "wg", False),
    ("napi/wg0-12", False, "wg0", True),
    ("napi/wg0-", False, "wg0", False),
    ("napi/wg0-1-0", False, "wg0", False),
])
def test_thread_matches(name, cut, dev, ok):
    assert thread_matches(name, cut, dev) is ok


def test_format_cpus():
    assert format_cpus({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11"
    assert format_cpus(set()) == ""
    assert format_cpus([5]) == "5"


def test_names_with_bytes_that_are_not_utf8(tmp_path, fake_proc):
    # A link may be named b"wg\xff" (KERNEL-FACTS.md, "Link names").
    proc = tmp_path / "proc" / "400"
    proc.mkdir()
    (proc / "stat").write_bytes(stat_line(400, "napi/wgX-0", 2).replace(b"wgX", b"wg\xff"))
    t = read_thread(400, whole_names=True)
    assert t is not None and t.name == "napi/wg\udcff-0"
    assert NapiThreads([t]).count(b"wg\xff".decode(errors="surrogateescape")) == 1
