"""napithreads.py: finding napi/<dev>-<id> kthreads per link in a fake /proc."""

from __future__ import annotations

import os

import pytest

from wgnapid import napithreads
from wgnapid.napithreads import CLK_TCK, NapiThreads, format_cpus, read_thread, thread_matches


def stat_line(pid, comm, ppid, *, utime=0, stime=0, nice=0, cpu=0, rtprio=0, policy=0):
    """A /proc/PID/stat line: fields 3..52, the ones read here set."""
    f = ["0"] * 50  # f[i] is field i + 3
    f[0], f[1] = "S", str(ppid)
    f[11], f[12] = str(utime), str(stime)
    f[16] = str(nice)
    f[36], f[37], f[38] = str(cpu), str(rtprio), str(policy)
    return f"{pid} ({comm}) {' '.join(f)}\n".encode()


@pytest.fixture
def fake_proc(tmp_path, monkeypatch):
    """Returns add(pid, comm, ppid, whole=None, **stat): builds <tmp>/proc/<pid>/stat
    (and /comm holding ``whole`` when given) and points napithreads at it."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "self").mkdir()  # non-numeric entries are skipped
    (proc / "77").mkdir()  # a task that exited: no stat file any more
    real_open, real_scandir = open, os.scandir

    def fake_open(path, *a, **k):
        if isinstance(path, str) and path.startswith("/proc/"):
            path = str(proc) + path[len("/proc"):]
        return real_open(path, *a, **k)

    monkeypatch.setattr(napithreads, "open", fake_open, raising=False)
    monkeypatch.setattr(napithreads.os, "scandir",
                        lambda p: real_scandir(proc) if p == "/proc" else real_scandir(p))
    monkeypatch.setattr(napithreads.os, "sched_getaffinity", lambda pid: {0, 1})

    def add(pid, comm, ppid=2, whole=None, **kw):
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "stat").write_bytes(stat_line(pid, comm[:15], ppid, **kw))
        if whole is not None:
            (proc / str(pid) / "comm").write_text(whole + "\n")

    return add


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
