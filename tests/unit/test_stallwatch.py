"""The stall detector on counter sequences, and the watch's logging and schedule.

The sequences follow what WireGuard does (wgnapid/stallwatch.py, docs/DESIGN.md
"Stall watch"): handshake messages add 148/92 bytes to rx, keepalives 32, data
packets multiples of 16 (ICMP echo of 84 bytes: 128); a stalled peer we send
to re-handshakes about every 15-20 s.
"""

from __future__ import annotations

import base64
import dataclasses
import syslog
from types import SimpleNamespace

import pytest

from wgnapid import config
from wgnapid.stallwatch import (CONFIRM_AFTER, Detector, PeerSample, StallWatch, handshake_only,
                                samples_from_messages, sent_data)

from .helpers import RecordingLog

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER = base64.b64encode(bytes(range(1, 33))).decode()
W = 30.0  # the default window
# Network namespaces as the watch sees them (NetNamespace: id.ino, name).
OWN = SimpleNamespace(id=SimpleNamespace(ino=4026531840), name="self", released=False)
TENANT = SimpleNamespace(id=SimpleNamespace(ino=4026532999), name="tenant-a", released=False)
BUSY_TX = 150 * 128  # ping -i 0.2 for 30 s
BUSY_RX = 150 * 128


class Sim:
    """One peer of wg0 (ifindex 7), read by a Detector; times advance per read."""

    def __init__(self, det: Detector | None = None, key: str = KEY, ifindex: int = 7, ns=None):
        self.det = det or Detector()
        self.key, self.ifindex = key, ifindex
        self.netns, self.netns_name = (ns.id.ino, ns.name) if ns else (0, "self")
        self.t, self.wall = 1000.0, 1.7e9
        self.tx = self.rx = 0
        self.hs = 0.0
        self.keepalive = 0

    def sample(self) -> PeerSample:
        return PeerSample("wg0", self.ifindex, self.key, self.rx, self.tx, self.hs, self.keepalive,
                          self.netns, self.netns_name)

    def read(self, after: float = W, tx: int = 0, rx: int = 0, handshake: bool = False):
        self.t += after
        self.wall += after
        self.tx += tx
        self.rx += rx
        if handshake:
            self.hs = self.wall - after / 2
        return self.det.observe([self.sample()], [(self.netns, self.ifindex)], self.t, self.wall)

    def advance(self, after: float, tx: int = 0, rx: int = 0, handshake: bool = False) -> None:
        """Time and counters move on by hand (for reads the watch makes)."""
        self.t += after
        self.wall += after
        self.tx += tx
        self.rx += rx
        if handshake:
            self.hs = self.wall - 1

    def start_busy(self) -> None:
        """First handshake and a busy window: a healthy peer being read."""
        assert self.read(0) == []  # baseline
        assert self.read(tx=148 + BUSY_TX, rx=92 + BUSY_RX, handshake=True) == []


def kinds(changes) -> list[str]:
    return [c.kind for c in changes]


# -- the pieces --------------------------------------------------------------------------

@pytest.mark.parametrize("rx, expected", [
    (0, True), (92, True), (148, True), (240, True), (184, True), (2 * 148 + 3 * 92, True),
    (32, False), (96, False), (128, False), (92 + 32, False), (148 + 128, True),  # 276 = 3 x 92
    (BUSY_RX, False), (-92, False),
])
def test_handshake_only(rx, expected):
    assert handshake_only(rx, W) is expected


def test_handshake_only_respects_the_rate_limit():
    # 8 responses in 10 s is more than one per REKEY_TIMEOUT allows: not handshakes.
    assert handshake_only(8 * 92, 10.0) is False
    assert handshake_only(8 * 92, 40.0) is True


def test_sent_data_ignores_keepalives_and_handshakes():
    assert sent_data(0, W, 0) is False
    assert sent_data(3 * 32 + 2 * 148, W, 0) is False  # keepalives and rekeys only
    assert sent_data(30 * 32, W, 1) is False  # persistent keepalive every second
    assert sent_data(BUSY_TX, W, 0) is True


# -- sequences -----------------------------------------------------------------------

def test_healthy_busy_peer_is_never_flagged():
    sim = Sim()
    sim.start_busy()
    for i in range(20):
        assert sim.read(tx=BUSY_TX, rx=BUSY_RX, handshake=(i % 4 == 3)) == []
    assert sim.det.stalled() == [] and sim.det.confirm_due() is None


def test_idle_peer_is_never_flagged():
    sim = Sim()
    sim.start_busy()
    for _ in range(20):  # nothing either way; the handshake goes stale
        assert sim.read() == []
    assert sim.det.stalled() == []


def test_one_way_flow_we_only_receive_is_never_flagged():
    sim = Sim()
    sim.start_busy()
    for i in range(20):  # their UDP stream in, our keepalives out every 10 s
        assert sim.read(tx=3 * 32, rx=BUSY_RX, handshake=(i % 4 == 0)) == []
    assert sim.det.stalled() == []


def test_we_send_and_the_peer_only_keepalives_is_never_flagged():
    sim = Sim()
    sim.start_busy()
    for i in range(12):
        rx = 3 * 32 + (92 if i % 4 == 0 else 0)  # keepalive every 10 s, a rekey response
        assert sim.read(tx=BUSY_TX, rx=rx, handshake=(i % 4 == 0)) == []
        if sim.det.confirm_due() is not None:  # a suspicion must be cleared by the confirm read
            assert sim.read(after=CONFIRM_AFTER, rx=32) == []
    assert sim.det.stalled() == []


def test_first_data_at_the_end_of_a_window_is_not_flagged():
    """Idle peer; we send late in a window: handshake response in this window,
    the peer's keepalive (10 s later) only in the confirming read."""
    sim = Sim()
    sim.start_busy()
    sim.read()
    for _ in range(7):
        sim.read()  # idle for 4 minutes: the handshake is stale
    assert sim.read(tx=148 + 40 * 128, rx=92, handshake=True) == []  # suspicion raised
    assert sim.det.confirm_due() == pytest.approx(sim.t + CONFIRM_AFTER)
    assert sim.read(after=CONFIRM_AFTER, rx=32) == []  # the keepalive answer clears it
    assert sim.det.confirm_due() is None and sim.det.stalled() == []


def test_persistent_keepalive_only_peer_is_never_flagged():
    sim = Sim()
    sim.keepalive = 25
    sim.start_busy()
    for i in range(16):  # we keepalive every 25 s and rekey every 2 min; they answer handshakes
        rekey = i % 4 == 0
        assert sim.read(tx=2 * 32 + (148 if rekey else 0), rx=92 if rekey else 0,
                        handshake=rekey) == []
    assert sim.det.stalled() == []


def test_peer_that_stopped_answering_is_not_a_stall():
    """The peer is gone: our data is unanswered, no handshake completes, the
    last one goes stale. Nothing came back, so nothing says it is alive."""
    sim = Sim()
    sim.start_busy()
    for _ in range(12):
        assert sim.read(tx=BUSY_TX + 148) == []
        if sim.det.confirm_due() is not None:
            assert sim.read(after=CONFIRM_AFTER, tx=148) == []
    assert sim.det.stalled() == []


def test_stall_is_flagged_once_and_stays_quiet():
    sim = Sim()
    sim.start_busy()
    # The stall begins: our data flows out, only a handshake response comes back.
    assert sim.read(tx=BUSY_TX + 148, rx=92, handshake=True) == []
    assert sim.det.confirm_due() == pytest.approx(sim.t + CONFIRM_AFTER)
    changes = sim.read(after=CONFIRM_AFTER, tx=8000)
    assert kinds(changes) == ["stalled"]
    c = changes[0]
    assert (c.ifname, c.ifindex, c.public_key) == ("wg0", 7, KEY)
    assert c.figures.tx_bytes == BUSY_TX + 148 + 8000 and c.figures.rx_bytes == 92
    assert c.figures.seconds == pytest.approx(W + CONFIRM_AFTER)
    assert [s[:4] for s in sim.det.stalled()] == [("wg0", 0, 7, KEY)]
    for i in range(10):  # re-handshakes keep completing: no line per window
        assert sim.read(tx=BUSY_TX, rx=92 * (1 + i % 2), handshake=True) == []
    assert len(sim.det.stalled()) == 1


def test_stall_evidence_may_come_later_than_the_suspicion():
    sim = Sim()
    sim.start_busy()
    assert sim.read(tx=BUSY_TX, rx=0) == []  # data unanswered, no handshake yet
    assert sim.read(after=CONFIRM_AFTER, tx=1000) == []  # still no sign of life
    assert kinds(sim.read(tx=BUSY_TX, rx=92, handshake=True)) == ["stalled"]


def test_recovery_is_one_notice():
    sim = Sim()
    sim.start_busy()
    sim.read(tx=BUSY_TX, rx=92, handshake=True)
    assert kinds(sim.read(after=CONFIRM_AFTER, tx=500)) == ["stalled"]
    sim.read(tx=BUSY_TX, rx=92, handshake=True)
    changes = sim.read(tx=BUSY_TX, rx=BUSY_RX)
    assert kinds(changes) == ["recovered"]
    assert sim.det.stalled() == []
    assert sim.read(tx=BUSY_TX, rx=BUSY_RX) == []


def test_counters_reset_rebaselines():
    sim = Sim()
    sim.start_busy()
    sim.read(tx=BUSY_TX, rx=92, handshake=True)
    assert kinds(sim.read(after=CONFIRM_AFTER, tx=500)) == ["stalled"]
    # The peer is removed and added again: counters and handshake start from 0.
    sim.tx = sim.rx = 0
    sim.hs = 0.0
    changes = sim.read(tx=BUSY_TX, rx=0)
    assert kinds(changes) == ["forgotten"] and "reset" in changes[0].reason
    assert sim.det.stalled() == [] and sim.det.confirm_due() is None
    # The first window after the reset is judged normally again.
    assert sim.read(tx=BUSY_TX, rx=BUSY_RX + 92, handshake=True) == []


def test_first_read_after_start_is_only_a_baseline():
    sim = Sim()
    sim.tx, sim.rx, sim.hs = 10**9, 92, sim.wall - 5
    assert sim.read(0) == [] and sim.det.confirm_due() is None


def test_handshakes_going_stale_forget_a_stall():
    sim = Sim()
    sim.start_busy()
    sim.read(tx=BUSY_TX, rx=92, handshake=True)
    assert kinds(sim.read(after=CONFIRM_AFTER, tx=500)) == ["stalled"]
    changes = []
    for _ in range(8):  # we stop sending: no more handshakes
        changes += sim.read()
    assert kinds(changes) == ["forgotten"] and changes[0].reason == "handshakes stale"


def test_only_the_stalled_peer_of_a_link_is_flagged():
    det = Detector()
    a, b = Sim(det, KEY), Sim(det, OTHER)

    def read(after=W, a_counters=(0, 0, False), b_counters=(0, 0, False)):
        for sim, counters in ((a, a_counters), (b, b_counters)):
            sim.advance(after, *counters)
        return det.observe([a.sample(), b.sample()], [(0, 7)], a.t, a.wall)

    assert read(0) == []
    busy = (BUSY_TX, BUSY_RX, True)
    assert read(a_counters=busy, b_counters=busy) == []
    assert read(a_counters=(BUSY_TX, 92, True), b_counters=(BUSY_TX, BUSY_RX, False)) == []
    changes = read(CONFIRM_AFTER, a_counters=(500, 0, False), b_counters=(500, 0, False))
    assert [(c.kind, c.public_key) for c in changes] == [("stalled", KEY)]
    assert [s[3] for s in det.stalled()] == [KEY]


def test_removed_peer_and_unwatched_link_are_forgotten():
    sim = Sim()
    sim.start_busy()
    sim.read(tx=BUSY_TX, rx=92, handshake=True)
    sim.read(after=CONFIRM_AFTER, tx=500)
    changes = sim.det.observe([], [(0, 7)], sim.t + W, sim.wall + W)
    assert kinds(changes) == ["forgotten"] and changes[0].reason == "peer removed"
    sim2 = Sim()
    sim2.start_busy()
    sim2.read(tx=BUSY_TX, rx=92, handshake=True)
    sim2.read(after=CONFIRM_AFTER, tx=500)
    assert kinds(sim2.det.retain([])) == ["forgotten"]


# -- parsing the genl reply ---------------------------------------------------------------

def _reply(ifindex: int, peers: list[dict]):
    from pyroute2.netlink.generic.wireguard import wgmsg

    msg = wgmsg()
    msg["cmd"] = 0
    msg["version"] = 1
    msg["attrs"] = [["WGDEVICE_A_IFINDEX", ifindex], ["WGDEVICE_A_IFNAME", "wg0"],
                    ["WGDEVICE_A_PEERS", [{"attrs": [[k, v] for k, v in p.items()]} for p in peers]]]
    msg.encode()
    out = wgmsg(msg.data)
    out.decode()
    return out


def test_samples_from_a_genl_reply():
    full = {"WGPEER_A_PUBLIC_KEY": {"value": KEY},
            "WGPEER_A_LAST_HANDSHAKE_TIME": {"tv_sec": 1_700_000_000, "tv_nsec": 500_000_000},
            "WGPEER_A_RX_BYTES": 1234, "WGPEER_A_TX_BYTES": 5678,
            "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL": 25}
    # A peer continued from the previous message carries only its key (and allowed IPs).
    continued = {"WGPEER_A_PUBLIC_KEY": {"value": OTHER}}
    samples = samples_from_messages([_reply(7, [full]), _reply(7, [continued])], "wg0", 7)
    assert samples == [PeerSample("wg0", 7, KEY, 1234, 5678, 1_700_000_000.5, 25)]
    samples = samples_from_messages([_reply(7, [full])], "wg0", 7, 4026532999, "tenant-a")
    assert samples[0].link == (4026532999, 7) and samples[0].netns_name == "tenant-a"
    with pytest.raises(LookupError):
        samples_from_messages([_reply(8, [full])], "wg0", 7)


# -- the watch: logging and schedule -------------------------------------------------------

class FakeReader:
    """Stands in for the genl query on the host (no WireGuard here); the
    guest tier runs the real one."""

    def __init__(self):
        self.peers: dict[int, list[PeerSample]] = {}
        self.fail: dict[int, str] = {}
        self.calls: list[int] = []

    def read(self, ns, ifname, ifindex):
        self.calls.append(ifindex)
        if ifindex in self.fail:
            raise OSError(19, self.fail[ifindex])
        # As WireGuardReader does: the samples carry the namespace they were read in.
        return [dataclasses.replace(s, netns=ns.id.ino, netns_name=ns.name)
                for s in self.peers.get(ifindex, [])]

    def close(self):
        pass


def test_watch_logs_once_per_change_with_fields():
    log, reader = RecordingLog(), FakeReader()
    watch = StallWatch(log, W, reader)
    sim = Sim()
    links = [(OWN, "wg0", 7)]

    def poll(after=W, **counters):
        sim.advance(after, **counters)
        reader.peers[7] = [sim.sample()]
        assert watch.due(sim.t) is not None and watch.due(sim.t) <= sim.t
        return watch.poll(links, sim.t, sim.wall)

    watch.due(sim.t)
    poll(0)
    poll(tx=BUSY_TX, rx=BUSY_RX, handshake=True)
    poll(tx=BUSY_TX, rx=92, handshake=True)
    assert watch.due(sim.t) == pytest.approx(sim.t + CONFIRM_AFTER)  # the confirming read
    reader.calls.clear()
    assert kinds(poll(after=CONFIRM_AFTER, tx=500)) == ["stalled"]
    assert reader.calls == [7]  # only the suspect link was read again
    assert watch.due(sim.t) == pytest.approx(sim.t - CONFIRM_AFTER + W)  # back to the window
    for _ in range(5):
        poll(tx=BUSY_TX, rx=92, handshake=True)
    assert watch.stalled() == [("wg0", OWN.id.ino, 7, KEY)]
    assert watch.as_list()[0]["public_key"] == KEY and watch.as_list()[0]["rx_bytes"] == 92
    poll(tx=BUSY_TX, rx=BUSY_RX)
    assert watch.stalled() == []
    assert log.kinds() == ["peer-stalled", "peer-stall-recovered"]
    kind, prio, message, fields = log.events[0]
    assert prio == syslog.LOG_WARNING and "CVE-2026-52945" in message and KEY in message
    assert fields["interface"] == "wg0" and fields["ifindex"] == 7
    assert fields["wgnapid_peer"] == KEY and fields["wgnapid_rx_bytes"] == 92
    assert log.events[1][1] == syslog.LOG_NOTICE


def test_watch_read_errors_are_logged_once_and_off_means_off():
    log, reader = RecordingLog(), FakeReader()
    reader.fail[7] = "No such device"
    watch = StallWatch(log, W, reader)
    for i in range(3):
        watch.poll([(OWN, "wg0", 7)], 1000.0 + i * W, 1.7e9)
    assert log.kinds() == ["peer-stall-unread"]
    watch.set_window(0, 2000.0)
    assert watch.due(2000.0) is None
    assert StallWatch(log, 0, reader).due(0.0) is None


def test_stall_window_key():
    assert config.builtin().daemon.stall_window == 30
    assert config.DaemonConfig().stall_window == 30
    assert config.DaemonConfig.model_fields["stall_window"].description
    assert config.parse_file("t", "[daemon]\nstall_window = 0\n").daemon.stall_window == 0
    with pytest.raises(config.ConfigError) as exc:
        config.parse_file("t.toml", "[daemon]\nstall_window = -1\n")
    assert "t.toml: daemon.stall_window" in exc.value.lines[0]


def test_daemon_turns_spread_a_read_and_watch_only_threaded_wireguard():
    from wgnapid.reconciler import LinkState

    log, reader = RecordingLog(), FakeReader()
    watch = StallWatch(log, W, reader)
    states = [LinkState(0, 10 + i, f"wg{i}", "wireguard", current=1) for i in range(3)]
    states += [LinkState(0, 20, "wgoff", "wireguard", current=0), LinkState(0, 21, "veth0", "veth", current=1)]
    turns = 0
    while True:
        watch.run_due([(OWN, states)], 1000.0, budget=0)
        turns += 1
        if watch.due(1000.0) != 1000.0:
            break
    assert sorted(reader.calls) == [10, 11, 12] and turns == 3  # one link per turn at budget 0
    assert watch.due(1000.0) == 1000.0 + W
    assert watch.reads == 1
    assert watch.run_due([(OWN, states)], 1001.0) is False and len(reader.calls) == 3  # not due yet


def test_no_wakeups_of_its_own_without_watched_links():
    from wgnapid.reconciler import LinkState

    watch = StallWatch(RecordingLog(), W, FakeReader())
    assert watch.due(1000.0) == 1000.0  # the first read at once
    assert watch.run_due([(OWN, [LinkState(0, 21, "tun0", "tun", current=1)])], 1000.0) is False
    assert watch.due(1000.0) is None  # nothing watched: the loop is not woken for it
    assert watch.run_due([(OWN, [LinkState(0, 7, "wg0", "wireguard", current=1)])], 1010.0) is False
    # A later loop turn (an event, the resync) past the window starts the next read.
    assert watch.run_due([(OWN, [LinkState(0, 7, "wg0", "wireguard", current=1)])], 1031.0) is True
    assert watch.due(1031.0) == 1031.0 + W


def test_cli_reads_stalled_peers_from_the_daemon_document():
    from wgnapid import cli

    watch = StallWatch(RecordingLog(), W, FakeReader())
    sim = Sim(watch.detector)
    sim.start_busy()
    sim.read(tx=BUSY_TX, rx=92, handshake=True)
    sim.read(after=CONFIRM_AFTER, tx=500)
    doc = {"stalled_peers": watch.as_list() + ["junk"]}  # as the daemon's status.json has it
    peers = cli.stalled_peers(doc)
    assert [(p["interface"], p["ifindex"], p["public_key"]) for p in peers] == [("wg0", 7, KEY)]
    line = cli._stalled_line(peers[0])
    assert "wg0 (ifindex 7)" in line and KEY in line and "CVE-2026-52945" in line
    assert cli.stalled_peers(None) == [] and cli.stalled_peers({}) == []


def test_first_read_waits_for_the_import_without_blocking():
    from wgnapid.reconciler import LinkState

    class SlowImport(FakeReader):
        def __init__(self):
            super().__init__()
            self.imported = False

        def ready(self):
            return self.imported

    reader = SlowImport()
    watch = StallWatch(RecordingLog(), W, reader)
    wg = [(OWN, [LinkState(0, 7, "wg0", "wireguard", current=1)])]
    assert watch.run_due(wg, 1000.0) is False and reader.calls == []  # importing: no read
    assert watch.due(1000.0) == pytest.approx(1000.2)  # looks again soon
    reader.imported = True
    assert watch.run_due(wg, 1000.2) is True and reader.calls == [7]


def test_real_reader_imports_on_a_thread():
    from wgnapid.stallwatch import WireGuardReader

    reader = WireGuardReader()
    import time as _time
    deadline = _time.monotonic() + 60
    while not reader.ready():
        assert _time.monotonic() < deadline
        _time.sleep(0.01)
    assert reader._loaded and reader._import_error is None


# -- every covered namespace --------------------------------------------------------------

def test_same_ifindex_in_two_namespaces_are_two_links():
    """wg0 is ifindex 7 in the daemon's namespace and in a tenant's: a stall of
    the tenant's peer is that link's alone, and a read of one does not make the
    other's peers "removed"."""
    det = Detector()
    own, tenant = Sim(det, KEY, ns=OWN), Sim(det, KEY, ns=TENANT)
    for sim in (own, tenant):
        sim.start_busy()
    tenant.read(tx=BUSY_TX, rx=92, handshake=True)
    changes = tenant.read(after=CONFIRM_AFTER, tx=500)
    assert [(c.kind, c.netns, c.netns_name) for c in changes] == [("stalled", TENANT.id.ino, "tenant-a")]
    assert own.read(tx=BUSY_TX, rx=BUSY_RX, handshake=True) == []  # own: healthy, tenant's kept
    assert [s[:3] for s in det.stalled()] == [("wg0", TENANT.id.ino, 7)]
    assert kinds(det.retain([(OWN.id.ino, 7)])) == ["forgotten"]  # tenant's link went
    assert det.stalled() == []


def test_watch_reads_each_namespace_and_names_it():
    from wgnapid.reconciler import LinkState

    log, reader = RecordingLog(), FakeReader()
    watch = StallWatch(log, W, reader)
    sim = Sim(ns=TENANT)
    spaces = [(OWN, [LinkState(OWN.id.ino, 7, "wg0", "wireguard", current=1)]),
              (TENANT, [LinkState(TENANT.id.ino, 7, "wg0", "wireguard", netns_name="tenant-a", current=1)])]
    seen = []

    own = Sim(ns=OWN)  # the same ifindex and peer key in the daemon's namespace, healthy

    class Reader(FakeReader):
        def read(self, ns, ifname, ifindex):
            seen.append((ns.name, ifindex))
            return [(sim if ns is TENANT else own).sample()]

    watch.reader = Reader()
    watch.run_due(spaces, 1000.0)  # the first read: every namespace's threaded WireGuard links
    assert sorted(seen) == [("self", 7), ("tenant-a", 7)]
    links = [(OWN, "wg0", 7), (TENANT, "wg0", 7)]  # what run_due collected, read at given times

    def poll(after, **counters):
        sim.advance(after, **counters)
        own.advance(after, tx=counters.get("tx", 0), rx=BUSY_RX, handshake=True)
        return watch.poll(links, sim.t, sim.wall)

    poll(0)
    poll(W, tx=BUSY_TX, rx=BUSY_RX, handshake=True)
    poll(W, tx=BUSY_TX, rx=92, handshake=True)
    poll(CONFIRM_AFTER, tx=500)
    assert log.kinds() == ["peer-stalled"]
    _kind, _prio, message, fields = log.events[0]
    assert message.endswith(f"[netns tenant-a {TENANT.id.ino}]")
    assert fields["wgnapid_netns"] == TENANT.id.ino and fields["wgnapid_netns_name"] == "tenant-a"
    (row,) = watch.as_list()
    assert (row["netns"], row["netns_name"], row["ifindex"]) == (TENANT.id.ino, "tenant-a", 7)
    from wgnapid import cli

    assert f"netns tenant-a {TENANT.id.ino}" in cli._stalled_line(row)


def test_a_released_namespace_is_never_read_in_the_daemons_own(tmp_path):
    """A read queued for a namespace that was released meanwhile fails; it does
    not make a socket in the daemon's namespace and read the ifindex there."""
    import os

    from wgnapid.netns import NetNamespace, NsId
    from wgnapid.links import Rtnl

    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    dirfd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    ns = NetNamespace(NsId.of(fd), "tenant-a", Rtnl(), dirfd, nsfd=fd)
    ns.close()
    made = []
    with pytest.raises(OSError) as exc:
        ns.in_namespace(lambda: made.append(1))
    assert made == [] and "released" in str(exc.value)
    with pytest.raises(OSError):
        ns.wireguard()


def test_suspicions_raised_in_one_read_are_confirmed_by_one_read():
    """A read spreads over time (loop turns; 0.3 s a link under TCG): two
    suspicions raised 1.2 s apart in one read are confirmed together by the one
    confirming read, each sample CONFIRM_AFTER or more after the one that
    raised it. (Due at the first one's time, the confirming read came too early
    for the second, which took another read: the guest's "flagged at the 4th
    read".)"""
    from wgnapid.reconciler import LinkState

    clock = [1000.0]
    counters = {i: [0, 0, 0.0] for i in range(10, 15)}  # ifindex -> [tx, rx, last handshake]
    samples_at: dict[int, float] = {}

    class Reader(FakeReader):
        def read(self, ns, ifname, ifindex):
            clock[0] += 0.3
            samples_at[ifindex] = clock[0]
            tx, rx, hs = counters[ifindex]
            return [PeerSample(ifname, ifindex, KEY, rx, tx, hs, 0, ns.id.ino, ns.name)]

    log = RecordingLog()
    watch = StallWatch(log, W, Reader())
    watch.clock = lambda: (clock[0], 1.7e9 + clock[0])
    states = [LinkState(0, i, f"wg{i}", "wireguard", current=1) for i in counters]

    def window(stalled: set[int], after: float) -> None:
        clock[0] += after
        for i, c in counters.items():
            c[0] += BUSY_TX
            c[1] += 92 if i in stalled else BUSY_RX
            c[2] = 1.7e9 + clock[0] - 1  # a handshake (current, and the peer is alive)

    def read_when_due() -> None:
        clock[0] = max(clock[0], watch.due(clock[0]))
        assert watch.run_due([(OWN, states)], clock[0], budget=60) is True

    read_when_due()  # the baseline
    window(set(), W)
    read_when_due()  # healthy
    window({10, 14}, W - 1.5)
    read_when_due()  # raises both suspicions, 1.2 s apart
    assert watch.detector.suspects() == {(OWN.id.ino, 10), (OWN.id.ino, 14)}
    assert watch.due(clock[0]) == pytest.approx(samples_at[14] + CONFIRM_AFTER)
    raised = dict(samples_at)
    reads = watch.reads
    for i in (10, 14):
        counters[i][0] += 500  # we sent more; nothing but the handshake came back
    read_when_due()
    assert watch.reads == reads + 1
    assert sorted(s[2] for s in watch.stalled()) == [10, 14]
    assert all(samples_at[i] - raised[i] >= CONFIRM_AFTER for i in (10, 14))
    assert log.kinds() == ["peer-stalled", "peer-stalled"]


def test_a_released_namespace_is_forgotten_at_once():
    """A stalled tenant peer goes from the status (with a notice) when its
    namespace is released, not at the next read; the daemon's own stays."""
    from types import SimpleNamespace as NS

    from wgnapid.netns import NsId
    from wgnapid.spaces import Space, Spaces

    log = RecordingLog()
    watch = StallWatch(log, W, FakeReader())
    own, tenant = Sim(watch.detector, KEY, ns=OWN), Sim(watch.detector, KEY, ns=TENANT)
    for sim in (own, tenant):
        sim.start_busy()
        sim.read(tx=BUSY_TX, rx=92, handshake=True)
        assert kinds(sim.read(after=CONFIRM_AFTER, tx=500)) == ["stalled"]
    watch.read_errors[(TENANT.id.ino, 8)] = "No such device"
    closed = []
    tenant_ns = NS(id=NsId(4, TENANT.id.ino), name=TENANT.name,
                   close=lambda: closed.append(watch.stalled()))
    own_ns = NS(id=NsId(4, OWN.id.ino), name="self")
    spaces = Spaces.__new__(Spaces)  # only release() and what it touches
    rec = NS(links={7: None}, forget=lambda: None)
    space = Space(tenant_ns, rec)
    spaces.own, spaces.by_id, spaces.log = Space(own_ns, rec), {tenant_ns.id: space}, RecordingLog()
    spaces._seen, spaces._touched, spaces._waiting, spaces._generation = {}, set(), set(), 0
    spaces.on_release = lambda ns: watch.release(ns.id.ino)
    watch._queue = [(tenant_ns, "wg0", 7)]  # a read under way, only the tenant's link left in it
    reads = watch.reads
    spaces.release(space, "gone")
    assert watch._queue == [] and watch.reads == reads + 1  # that read is over
    assert closed == [[("wg0", OWN.id.ino, 7, KEY)]]  # forgotten before the namespace was closed
    assert log.kinds()[-1] == "peer-stall-forgotten"
    assert "network namespace released" in log.events[-1][2] and TENANT.name in log.events[-1][2]
    assert watch.read_errors == {}


def test_a_later_reads_suspicion_gets_its_own_confirming_read():
    """Peer A's confirming read could not confirm it (no sign of life yet);
    peer B of the same link was raised by that read: B's confirming read comes
    12 s later, not at the next whole read a window on (the earliest read's
    due time, already past, hid it)."""
    W60 = 60.0
    log, reader = RecordingLog(), FakeReader()
    watch = StallWatch(log, W60, reader)
    det = watch.detector
    a, b = Sim(det, KEY), Sim(det, OTHER)
    links = [(OWN, "wg0", 7)]

    def poll(at: float, a_counters: dict, b_counters: dict):
        for sim, counters in ((a, a_counters), (b, b_counters)):
            sim.advance(at - sim.t, **counters)
        reader.peers[7] = [a.sample(), b.sample()]
        assert watch.due(at) is not None and watch.due(at) <= at
        return watch.poll(links, at, a.wall)

    busy = dict(tx=BUSY_TX, rx=BUSY_RX, handshake=True)
    watch.due(1000.0)
    poll(1000.0, {}, {})  # baseline
    poll(1000.0 + W60, busy, busy)
    poll(1000.0 + 2 * W60, dict(tx=BUSY_TX), busy)  # A: sent data, nothing back
    assert watch.due(a.t) == pytest.approx(a.t + CONFIRM_AFTER)
    raised_a = a.t
    # A's confirming read: still nothing from A, not even a handshake (no sign
    # of life: not confirmed); B now sent data and got nothing back either.
    assert poll(raised_a + CONFIRM_AFTER, dict(tx=500), dict(tx=BUSY_TX)) == []
    assert watch.due(a.t) == pytest.approx(a.t + CONFIRM_AFTER)  # B's, before next_due
    assert watch.due(a.t) < raised_a + W60
    changes = poll(a.t + CONFIRM_AFTER, {}, dict(tx=500, rx=92, handshake=True))
    assert [(c.kind, c.public_key) for c in changes] == [("stalled", OTHER)]
