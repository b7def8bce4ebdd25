"""placement.py: the cpus/sched keys, applying them, logging once per thread set,
and the daemon's Steering (connector path and scans) with fake threads."""

from __future__ import annotations

import errno
import os

import pytest

from wgnapid import config, metrics, placement
from wgnapid.config import ConfigError
from wgnapid.napithreads import NapiThread, NapiThreads
from wgnapid.placement import (Placement, Placer, Sched, Steering, Target, check_cpus, parse_cpu_list,
                               parse_sched)

from .helpers import Clock, RecordingLog


def thread(pid, name="napi/wg0-0", cpus=(0, 1, 2, 3), policy="other", prio=0, nice=0):
    return NapiThread(pid, name, 0, 0.0, policy, prio, nice, frozenset(cpus))


# -- parsing and validation -------------------------------------------------------------


def test_cpu_lists():
    assert parse_cpu_list("2-5,8") == {2, 3, 4, 5, 8}
    assert parse_cpu_list("0") == {0}
    assert parse_cpu_list(" 1 , 3-3 ") == {1, 3}
    for bad in ("", "a", "1-", "3-1", "1,,2", "-1", "99999"):
        with pytest.raises(ValueError):
            parse_cpu_list(bad)


def test_sched_forms():
    assert parse_sched("other") == Sched("other", 0, 0)
    assert parse_sched("other:nice=-5") == Sched("other", 0, -5)
    assert parse_sched("fifo:50") == Sched("fifo", 50, 0)
    assert parse_sched("rr:10") == Sched("rr", 10, 0)
    assert str(parse_sched("other:nice=-5")) == "other:nice=-5"
    for bad in ("fifo", "fifo:0", "rr:100", "other:nice=20", "other:nice=-21", "batch", "FIFO:1", "fifo:1:2"):
        with pytest.raises(ValueError):
            parse_sched(bad)


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A machine with CPUs 0-7 possible and 0-3 online."""
    (tmp_path / "possible").write_text("0-7\n")
    (tmp_path / "online").write_text("0-3\n")
    monkeypatch.setattr(placement, "CPU_POSSIBLE", str(tmp_path / "possible"))
    monkeypatch.setattr(placement, "CPU_ONLINE", str(tmp_path / "online"))


def test_offline_and_nonexistent_cpus(machine):
    assert check_cpus("0-3") == {0, 1, 2, 3}
    with pytest.raises(ValueError, match=r"CPU 4-5 is offline \(online: 0-3\)"):
        check_cpus("2-5")
    with pytest.raises(ValueError, match=r"CPU 9 does not exist here \(CPUs: 0-7\)"):
        check_cpus("0,9")


RULE = '[[rules]]\nname = "pinned"\nthreaded = "on"\n'


@pytest.mark.parametrize("extra, where, what", [
    ('cpus = "0,6"', 'rules[0].cpus (rule "pinned")', "CPU 6 is offline (online: 0-3)"),
    ('cpus = "64"', 'rules[0].cpus (rule "pinned")', "CPU 64 does not exist here (CPUs: 0-7)"),
    ('cpus = "x"', 'rules[0].cpus (rule "pinned")', 'not a CPU list like "2-15,18"'),
    ("cpus = 3", 'rules[0].cpus (rule "pinned")', "Input should be a valid string"),
    ('sched = "fifo:0"', 'rules[0].sched (rule "pinned")', "fifo priority 0 is outside 1..99"),
    ('sched = "idle"', 'rules[0].sched (rule "pinned")', "is not \"other\""),
])
def test_config_errors_name_the_rule_and_key(tmp_path, machine, extra, where, what):
    path = tmp_path / "wgnapid.toml"
    path.write_text(RULE + extra + "\n")
    with pytest.raises(ConfigError) as info:
        config.read_file(str(path))
    assert len(info.value.lines) == 1
    line = info.value.lines[0]
    assert line.startswith(f"{path}: {where}: ") and what in line, line


def test_metrics_file_must_be_an_absolute_prom_path(tmp_path):
    for bad in ("m.prom", "/var/lib/x/m.txt"):
        path = tmp_path / "wgnapid.toml"
        path.write_text(f'[daemon]\nmetrics_file = "{bad}"\n')
        with pytest.raises(ConfigError) as info:
            config.read_file(str(path))
        assert "daemon.metrics_file" in info.value.lines[0] and ".prom" in info.value.lines[0]
    path.write_text('[daemon]\nmetrics_file = "/var/lib/prometheus/node-exporter/wgnapid.prom"\n')
    assert config.read_file(str(path)).daemon.metrics_file.endswith("wgnapid.prom")


def test_new_keys_are_described():
    # Issue 12 generates the man page from these descriptions.
    assert config.Rule.model_fields["cpus"].description
    assert config.Rule.model_fields["sched"].description
    assert config.DaemonConfig.model_fields["metrics_file"].description


# -- applying ---------------------------------------------------------------------------


class Calls:
    def __init__(self, monkeypatch, fail=None):
        self.calls = []
        self.fail = fail or {}

        def rec(name):
            def f(*args):
                self.calls.append((name, *args))
                if name in self.fail:
                    raise OSError(self.fail[name], os.strerror(self.fail[name]))
            return f

        for name in ("sched_setaffinity", "sched_setscheduler", "setpriority"):
            monkeypatch.setattr(placement.os, name, rec(name))


def test_apply_changes_only_what_differs(monkeypatch):
    c = Calls(monkeypatch)
    want = Placement(frozenset({2}), Sched("fifo", 10))
    assert placement.apply(thread(1), want) is True
    assert [x[0] for x in c.calls] == ["sched_setaffinity", "sched_setscheduler"]
    assert c.calls[0][1:] == (1, frozenset({2}))
    c.calls.clear()
    assert placement.apply(thread(1, cpus=(2,), policy="fifo", prio=10), want) is False
    assert c.calls == []
    # other:nice=-5 on a thread already "other": only the nice value.
    assert placement.apply(thread(1), Placement(None, Sched("other", 0, -5))) is True
    assert c.calls == [("setpriority", os.PRIO_PROCESS, 1, -5)]


def test_apply_failures_are_one_line_and_a_gone_thread_is_fine(monkeypatch):
    Calls(monkeypatch, fail={"sched_setscheduler": errno.EPERM})
    with pytest.raises(placement.PlacementError, match="Operation not permitted: needs CAP_SYS_NICE"):
        placement.apply(thread(1), Placement(None, Sched("rr", 5)))
    Calls(monkeypatch, fail={"sched_setaffinity": errno.EINVAL})
    with pytest.raises(placement.PlacementError, match="none of those CPUs is online"):
        placement.apply(thread(1), Placement(frozenset({3}), None))
    Calls(monkeypatch, fail={"sched_setaffinity": errno.ESRCH})
    assert placement.apply(thread(1), Placement(frozenset({3}), None)) is False


def test_placer_logs_once_per_thread_set(monkeypatch):
    Calls(monkeypatch)
    log = RecordingLog()
    p = Placer(log)
    want = Placement(frozenset({1}), None)
    p.place("wg0", 5, "r", want, (thread(10), thread(11)))
    p.place("wg0", 5, "r", want, (thread(10, cpus=(1,)), thread(11, cpus=(1,))))  # resync: as wanted
    assert len(log.of("placement")) == 1
    msg, fields = log.of("placement")[0][2], log.of("placement")[0][3]
    assert "placed on CPUs 1" in msg and "pid 10" in msg and "pid 11" in msg
    assert fields["interface"] == b"wg0" and fields["wgnapid_rule"] == "r"
    p.place("wg0", 5, "r", want, (thread(10, cpus=(1,)), thread(12)))  # a peer re-added
    assert len(log.of("placement")) == 2
    assert p.links["wg0"].state == "placed" and p.changes == 3


def test_placer_failure_and_ambiguity_said_once(monkeypatch):
    Calls(monkeypatch, fail={"sched_setaffinity": errno.EPERM})
    log = RecordingLog()
    p = Placer(log)
    want = Placement(frozenset({1}), None)
    for _ in range(3):
        lp = p.place("wg0", 5, "r", want, (thread(10),))
    assert lp.state == "failed" and "pid 10" in lp.reason
    assert len(log.of("placement-failed")) == 1
    lp = p.place("wg1", 6, "r", want, (thread(20, "napi/wg1-0"),), ambiguous="same name elsewhere")
    assert lp.state == "ambiguous" and len(log.of("placement-ambiguous")) == 1


# -- the daemon's steering --------------------------------------------------------------


def test_steering_scan_places_targets_and_reports(monkeypatch):
    Calls(monkeypatch)
    threads = [thread(10, "napi/wg0-0"), thread(11, "napi/wg0-0"), thread(12, "napi/wg1-0")]
    log = RecordingLog()
    s = Steering(log, connector=False, scan=lambda: NapiThreads(threads), clock=Clock(100.0))
    want = Placement(frozenset({1}), Sched("fifo", 3))
    s.sync([Target(5, "wg0", "r", want), Target(6, "wg2", "r", want), Target(7, "wg9", "r", Placement())])
    assert set(s.targets) == {"wg0", "wg2"}  # a rule without cpus/sched is not a target
    assert s.status("wg0") == {"cpus": "1", "sched": "fifo:3", "state": "placed", "reason": ""}
    assert s.status("wg2")["state"] == "pending"  # no thread yet
    assert s.status("wg1") is None


def test_steering_without_connector_scans_after_changes_at_a_bounded_rate(monkeypatch):
    Calls(monkeypatch)
    clock = Clock(100.0)
    scans = []
    s = Steering(RecordingLog(), connector=False, scan=lambda: scans.append(clock.t) or NapiThreads([]),
                 clock=clock)
    s.sync([Target(5, "wg0", "r", Placement(frozenset({1}), None))])
    s.changed()
    assert s.next_due() == 101.0  # SCAN_MIN_INTERVAL after the last scan
    s.due()
    assert scans == [100.0]
    clock.t = 101.0
    s.due()
    assert scans == [100.0, 101.0] and s.next_due() is None


def _connector_steering(log, clock):
    """A Steering fed by hand (``_look``, ``due``) that scans the fake /proc."""
    s = Steering(log, connector=False, scan=None, clock=clock)
    s.scan, s.scan_since = NapiThreads, (lambda previous: NapiThreads(previous=previous))
    return s


def test_steering_connector_path_places_a_new_thread_once_named(monkeypatch, fake_proc):
    c = Calls(monkeypatch)
    clock = Clock(100.0)
    log = RecordingLog()
    s = _connector_steering(log, clock)
    want = Placement(frozenset({1}), None)
    s.sync([Target(5, "wg0", "r", want)])
    # The fork event comes before the creator names the thread: kthreadd's comm.
    fake_proc(4_000_042, "kthreadd")
    s._look(4_000_042, 0, clock.t)
    assert s._pending and s.next_due() == pytest.approx(100.002) and c.calls == []
    fake_proc(4_000_042, "napi/wg0-0")
    clock.t = 100.01
    s.due()
    assert not s._pending and c.calls == [("sched_setaffinity", 4_000_042, frozenset({1}))]
    assert s._scan_at == pytest.approx(100.01 + placement.SCAN_AFTER_EVENT)
    clock.t = 101.0
    s.due()  # the scan after the event: one line for the new thread set
    lines = log.of("placement")
    assert len(lines) == 1 and "placed on CPUs 1" in lines[0][2] and "pid 4000042" in lines[0][2]


def test_connector_path_keeps_a_thread_named_between_two_reads(monkeypatch, fake_proc):
    # The look reads one /proc file: stat still says "kthreadd" while comm
    # already has the name. Judged by comm, the fork was dropped as "named and
    # not a NAPI thread", and the thread waited for the resync (s15 on 6.1).
    c = Calls(monkeypatch)
    clock = Clock(100.0)
    s = _connector_steering(RecordingLog(), clock)
    s.sync([Target(5, "wg0", "r", Placement(frozenset({1}), None))])
    fake_proc(4_000_042, "kthreadd", whole="napi/wg0-0")
    s._look(4_000_042, 0, clock.t)
    assert len(s._pending) == 1
    fake_proc(4_000_042, "napi/wg0-0")
    clock.t = 100.01
    s.due()
    assert [x[1] for x in c.calls] == [4_000_042]


def test_a_fork_unnamed_for_seconds_is_looked_at_until_named(monkeypatch, fake_proc):
    # Its creator starved of CPU: the fork stays unnamed for ~30 s. It is
    # looked at again (one stat read each) until named, then placed at once
    # and logged, with no scan of /proc in between and no other event.
    c = Calls(monkeypatch)
    clock = Clock(100.0)
    log = RecordingLog()
    s = _connector_steering(log, clock)
    s.sync([Target(5, "wg0", "r", Placement(frozenset({1}), None))])
    scans = []
    s.scan = lambda: scans.append(("full", clock.t)) or NapiThreads()
    s.scan_since = lambda previous: scans.append(("news", clock.t)) or NapiThreads(previous=previous)
    fake_proc(4_000_042, "kthreadd")
    fake_proc(4_000_043, "kworker/u4:2")  # another kthread, named: looked at once
    s._look(4_000_042, 0, clock.t)
    s._look(4_000_043, 0, clock.t)
    looks = []
    while clock.t < 130.0:
        clock.t = s.next_due()
        s.due()
        looks.append(clock.t)
    assert len(s._pending) == 1 and s._pending[0][1] == 4_000_042 and scans == [] and c.calls == []
    gaps = [round(b - a, 3) for a, b in zip([100.0] + looks, looks)]
    n = len(placement.NAME_RETRIES)
    assert gaps[:n] == list(placement.NAME_RETRIES) and set(gaps[n:]) == {placement.NAME_POLL}
    fake_proc(4_000_042, "napi/wg0-0")
    clock.t = s.next_due()
    s.due()
    assert [x[1] for x in c.calls] == [4_000_042] and not s._pending
    clock.t = s.next_due()  # the scan after the event: the thread set logged
    s.due()
    assert scans == [("news", clock.t)] and "pid 4000042" in log.of("placement")[-1][2]


def test_looking_again_at_unnamed_forks_is_bounded(monkeypatch, fake_proc):
    Calls(monkeypatch)
    clock = Clock(100.0)
    s = _connector_steering(RecordingLog(), clock)
    s.sync([Target(5, "wg0", "r", Placement(frozenset({1}), None))])
    fake_proc(4_000_042, "kthreadd")
    s._look(4_000_042, 0, clock.t)
    for _ in range(1000):  # never named: given up NAME_POLL_FOR after the fork (the resync's then)
        if not s._pending:
            break
        clock.t = s.next_due()
        s.due()
    assert not s._pending
    assert 100.0 + placement.NAME_POLL_FOR <= clock.t < 100.0 + placement.NAME_POLL_FOR + placement.NAME_POLL
    # At most MAX_PENDING forks are looked at again at once; the rest is left
    # to the scans.
    monkeypatch.setattr(placement, "MAX_PENDING", 3)
    for pid in range(4_000_050, 4_000_055):
        fake_proc(pid, "kthreadd")
        s._look(pid, 0, clock.t)
    assert sorted(p[1] for p in s._pending) == [4_000_050, 4_000_051, 4_000_052]


# -- metrics without the library ----------------------------------------------------------


def test_metrics_without_the_library_says_so_once(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "CollectorRegistry", None)
    log = RecordingLog()
    mf = metrics.MetricsFile(str(tmp_path / "m.prom"), log)
    assert mf.next_due() is None and mf.write({}, {}) is False
    assert len(log.of("metrics")) == 1 and "prometheus-client" in log.of("metrics")[0][2]
    assert not (tmp_path / "m.prom").exists()


def test_metrics_unwritable_directory_is_said_once(tmp_path):
    pytest.importorskip("prometheus_client")
    log = RecordingLog()
    mf = metrics.MetricsFile(str(tmp_path / "missing" / "m.prom"), log)
    doc = {"netns": 1, "links": [], "summary": {}, "stats": {}, "kernel": {}}
    assert mf.write(doc, {}) is False and mf.write(doc, {}) is False
    assert len(log.of("metrics")) == 1 and "cannot write" in log.of("metrics")[0][2]


def test_stalled_peers_metric_only_where_the_stall_watch_reports():
    pytest.importorskip("prometheus_client")
    links = [{"name": "wg0", "ifindex": 4, "kind": "wireguard", "rule": "r", "wanted": "on", "current": 1,
              "state": "threaded"},
             {"name": "wg1", "ifindex": 5, "kind": "wireguard", "rule": "r", "wanted": "on", "current": 1,
              "state": "threaded"}]
    doc = {"netns": 7, "links": links, "summary": {}, "stats": {}, "kernel": {}}
    assert "wgnapid_link_stalled_peers" not in {f.name for f in metrics.families(doc, {})}
    doc["stalled_peers"] = [{"interface": "wg0", "ifindex": 4, "public_key": "a"},
                            {"interface": "wg0", "ifindex": 4, "public_key": "b"}]
    fam = {f.name: f for f in metrics.families(doc, {})}["wgnapid_link_stalled_peers"]
    assert {s.labels["interface"]: s.value for s in fam.samples} == {"wg0": 2, "wg1": 0}


def test_a_scan_for_news_places_only_what_changed(monkeypatch):
    """After a change, only new targets and links whose threads came or went are
    placed (and logged); the rest stay as the last scan left them."""
    c = Calls(monkeypatch)
    clock = Clock(100.0)
    log = RecordingLog()
    threads = [thread(10 + i, f"napi/wg{i}-0") for i in range(50)]
    s = Steering(log, connector=False, scan=lambda: NapiThreads(list(threads)), clock=clock)
    want = Placement(frozenset({1}), None)
    targets = [Target(i, f"wg{i}", "r", want) for i in range(50)]
    s.sync(targets)
    assert len(c.calls) == 50 and len(log.of("placement")) == 50
    c.calls.clear()
    # A new link with its thread; wg3 threaded again (old kthread gone, a new one).
    threads.append(thread(99, "napi/wg50-0"))
    threads[3] = thread(98, "napi/wg3-0")
    s.set_targets(targets + [Target(50, "wg50", "r", want)])
    s.changed()
    clock.t = 101.0
    s.due()
    assert sorted(x[1] for x in c.calls) == [98, 99]
    news = [line[2] for line in log.of("placement")[50:]]
    assert len(news) == 2 and any("pid 98" in m for m in news) and any("pid 99" in m for m in news)
    assert s.status("wg3")["state"] == s.status("wg50")["state"] == "placed"
    # A target wanting something else is placed again though its threads stayed.
    c.calls.clear()
    s.set_targets(targets[:5] + [Target(5, "wg5", "r", Placement(frozenset({2}), None))])
    s.changed()
    clock.t = 102.0
    s.due()
    assert [x[1:] for x in c.calls] == [(15, frozenset({2}))]


def test_a_scan_for_news_reads_only_new_pids_of_proc(monkeypatch):
    from wgnapid import napithreads

    first = NapiThreads()
    read = []
    real = napithreads.read_thread
    monkeypatch.setattr(napithreads, "read_thread", lambda pid, **kw: read.append(pid) or real(pid, **kw))
    import subprocess

    child = subprocess.Popen(["sleep", "5"])
    try:
        second = NapiThreads(previous=first)
    finally:
        child.kill()
        child.wait()
    assert child.pid in read
    assert first._read and not set(read) & {int(pid) for pid in first._read}, \
        "a PID the first scan read was read again"
    assert str(child.pid) in second._read and str(child.pid) not in first._read
    # refreshed() reads again, and drops a PID that is no longer that thread.
    ghost = thread(child.pid, "napi/wg0-0")
    assert second.refreshed([ghost]) == ()


def test_update_follows_changed_links_only(monkeypatch):
    c = Calls(monkeypatch)
    clock = Clock(100.0)
    threads = [thread(10, "napi/wg0-0"), thread(11, "napi/wg1-0")]
    s = Steering(RecordingLog(), connector=False, scan=lambda: NapiThreads(list(threads)), clock=clock)
    want = Placement(frozenset({1}), None)
    s.sync([Target(5, "wg0", "r", want, netns=1), Target(6, "wg1", "r", want, netns=1)])
    c.calls.clear()
    # wg2 appears in netns 1, wg0 is gone, and a link named wg1 in netns 2
    # that is not a target changes: netns 1's wg1 stays.
    threads.append(thread(12, "napi/wg2-0"))
    s.update([(1, 7), (1, 5), (2, 6)], [Target(7, "wg2", "r", want, netns=1)])
    assert set(s.targets) == {"wg1", "wg2"}
    assert s.status("wg0") is None and s.status("wg2")["state"] == "pending"
    s.changed()
    clock.t = 101.0
    s.due()
    assert [x[1] for x in c.calls] == [12]  # only the new link's thread
    assert s.status("wg2")["state"] == "placed" and s.status("wg1")["state"] == "placed"
    # Renamed (same netns and ifindex): the old name is no longer a target.
    s.update([(1, 7)], [Target(7, "wg2-renamed", "r", want, netns=1)])
    assert set(s.targets) == {"wg1", "wg2-renamed"}
    # No longer wanted by any placing rule: dropped.
    s.update([(1, 6)], [])
    assert set(s.targets) == {"wg2-renamed"} and s.status("wg1") is None


def test_metrics_writes_are_spaced_by_what_the_last_one_cost(tmp_path):
    pytest.importorskip("prometheus_client")
    clock = Clock(100.0)
    mf = metrics.MetricsFile(str(tmp_path / "m.prom"), RecordingLog(), clock=clock)
    doc = {"netns": 1, "links": [], "summary": {}, "stats": {}, "kernel": {}}
    assert mf.next_due() == 0.0
    assert mf.write(doc, {}) is True
    mf.dirty = True
    assert mf.next_due() == 100.0 + metrics.MIN_INTERVAL  # a cheap write
    # Collecting for a big host cost 1 s of CPU: the next write waits 50 s.
    assert mf.write(doc, {}, collect_cpu=1.0) is True
    mf.dirty = True
    assert mf.cost >= 1.0
    assert mf.next_due() == pytest.approx(100.0 + mf.cost / metrics.MAX_CPU_SHARE)
    assert mf.next_due() >= 150.0


def test_connector_path_places_a_cut_name_only_when_one_target_fits(monkeypatch):
    c = Calls(monkeypatch)
    clock = Clock(100.0)
    named = {42: thread(42, "napi/tenant-alp"), 43: thread(43, "napi/tenant-bet")}
    for t in named.values():
        object.__setattr__(t, "cut", True)  # a kernel before 5.17: comm cut to 15 characters
    monkeypatch.setattr(placement, "read_fork", lambda pid, **kw: (named.get(pid), False))
    s = Steering(RecordingLog(), connector=False, scan=lambda: NapiThreads([]), clock=clock)
    want = Placement(frozenset({1}), None)
    s.sync([Target(5, "tenant-alpha-1", "r", want), Target(6, "tenant-beta-1", "r", want),
            Target(7, "tenant-beta-2", "r", want)])
    s._look(42, 0, clock.t)  # fits tenant-alpha-1 only
    s._look(43, 0, clock.t)  # fits tenant-beta-1 and tenant-beta-2: left to the scan, which reports it
    assert [x[1] for x in c.calls] == [42]
    s.update([(0, 5)], [])  # tenant-alpha-1 gone: its cut name fits no target now
    c.calls.clear()
    s._look(42, 0, clock.t)
    assert c.calls == []


# -- links named alike in other namespaces -----------------------------------------------


def _st(netns: int, ifindex: int, name: str):
    from wgnapid.reconciler import LinkState

    return LinkState(netns, ifindex, name, "wireguard")


def test_a_target_named_like_a_link_of_another_namespace_is_not_placed(monkeypatch):
    """wg0 in netns 1 wants CPU 1; netns 2 has a wg0 too (no placing rule).
    napi/wg0-* names both links' threads: none is placed, by the scan or at
    once by the connector path, and the status says why. When netns 2's wg0
    goes, netns 1's is placed at the next scan."""
    c = Calls(monkeypatch)
    clock = Clock(100.0)
    threads = [thread(10, "napi/wg0-0"), thread(11, "napi/wg0-1")]
    monkeypatch.setattr(placement, "read_fork", lambda pid, **kw: (thread(pid, "napi/wg0-2"), False))
    s = Steering(RecordingLog(), connector=False, scan=lambda: NapiThreads(list(threads)), clock=clock)
    want = Placement(frozenset({1}), None)
    s.set_links([_st(1, 5, "wg0"), _st(2, 5, "wg0"), _st(2, 6, "wg1")])
    s.sync([Target(5, "wg0", "r", want, netns=1)])
    assert c.calls == []
    status = s.status("wg0")
    assert status["state"] == "ambiguous" and "1 other network namespace" in status["reason"]
    s._look(12, 0, clock.t)  # a new napi/wg0-2: whose?
    assert c.calls == []
    s.links_changed({(2, 5): None})  # netns 2's wg0 is gone
    assert s.next_due() is not None
    clock.t = s.next_due()
    s.due()
    assert sorted(x[1] for x in c.calls) == [10, 11] and s.status("wg0")["state"] == "placed"
    # It comes back (a container restarted): looked at again, and not placed.
    c.calls.clear()
    s.links_changed({(2, 9): _st(2, 9, "wg0")})
    clock.t = s.next_due()
    s.due()
    assert s.status("wg0")["state"] == "ambiguous"
    s._look(13, 0, clock.t)
    assert c.calls == []


def test_a_cut_thread_name_that_fits_a_link_that_is_no_target_is_not_placed(monkeypatch):
    c = Calls(monkeypatch)
    clock = Clock(100.0)
    cut = thread(42, "napi/tenant-alp")
    object.__setattr__(cut, "cut", True)  # a kernel before 5.17: comm cut to 15 characters
    monkeypatch.setattr(placement, "read_fork", lambda pid, **kw: (cut, False))
    s = Steering(RecordingLog(), connector=False, scan=lambda: NapiThreads([cut]), clock=clock)
    want = Placement(frozenset({1}), None)
    # tenant-alpha-1 is a target; tenant-alpha-2 (another namespace, no placing rule) is not.
    s.set_links([_st(1, 5, "tenant-alpha-1"), _st(2, 5, "tenant-alpha-2")])
    s.sync([Target(5, "tenant-alpha-1", "r", want, netns=1)])
    s._look(42, 0, clock.t)
    assert c.calls == [] and s.status("tenant-alpha-1")["state"] == "ambiguous"
    assert "tenant-alpha-2" in s.status("tenant-alpha-1")["reason"]


def test_a_namesake_in_a_namespace_just_entered_is_seen_before_the_resync(monkeypatch):
    """A namespace entered or released re-lists every link (set_targets, then
    set_links): a placed target that now has a namesake is looked at again at
    once, not at the next resync."""
    Calls(monkeypatch)
    clock = Clock(100.0)
    threads = [thread(10, "napi/wg0-0")]
    s = Steering(RecordingLog(), connector=False, scan=lambda: NapiThreads(list(threads)), clock=clock)
    targets = [Target(5, "wg0", "r", Placement(frozenset({1}), None), netns=1)]
    s.set_links([_st(1, 5, "wg0")])
    s.sync(targets)
    assert s.status("wg0")["state"] == "placed"
    s.set_targets(targets)  # unchanged
    s.set_links([_st(1, 5, "wg0"), _st(3, 5, "wg0")])  # netns 3 entered, with a wg0
    assert s.next_due() is not None
    clock.t = s.next_due()
    s.due()
    assert s.status("wg0")["state"] == "ambiguous"
