"""Stall watch: notice a WireGuard peer whose receive side has stopped (CVE-2026-52945).

On affected kernels, threaded NAPI can stop one WireGuard peer's receive side
for good: its NAPI poll never runs again, its rx queue fills (1024 packets) and
every further data packet is freed without touching any counter, while the
handshake worker keeps completing handshakes (KERNEL-FACTS.md, "The patch
wgnapid reproduces"; docs/DESIGN.md, "Stall watch"). Handshake-age and ping
watchdogs see nothing wrong. What the peer's counters show (WireGuard source,
drivers/net/wireguard/receive.c; seen on 6.1 and 6.12, docs/DESIGN.md):

- ``rx_bytes`` grows by exactly 148 for a handshake initiation and 92 for a
  handshake response, counted by the handshake worker (``update_rx_stats(peer,
  skb->len)`` in ``wg_receive_handshake_packet``, UDP header already pulled);
  cookie replies are not counted.
- Data and keepalive packets are counted only inside the NAPI poll
  (``wg_packet_rx_poll`` -> ``wg_packet_consume_data_done``) as
  ``message_data_len(plain)`` = padded plaintext + 32: a keepalive adds 32,
  every data packet a multiple of 16, at least 48.
- A peer that received data and has nothing to send answers with a keepalive
  after KEEPALIVE_TIMEOUT (10 s); a sender that hears nothing authenticated for
  KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s, plus jitter) starts a new handshake,
  so a stalled peer we are sending to keeps completing handshakes.

So a peer is **stalled** when a read shows we sent it data while its rx grew
by handshake messages only, and a read at least CONFIRM_AFTER seconds later
(time enough for a keepalive answer) shows the same: its rx grew by nothing but whole handshake messages, at least one
handshake message arrived or completed in that time (the peer is alive: a
peer that is gone sends nothing, not even handshakes), and its last handshake
is current (within REJECT_AFTER_TIME). Not stalled: an idle peer, a peer we
only receive from, a peer we only send keepalives or handshakes to, a peer
that stopped answering entirely.

`Detector` is pure (samples in, changes out); `WireGuardReader` reads samples
through WireGuard's generic netlink, asked inside each link's network
namespace (wgnapid.netns.NetNamespace.wireguard); `StallWatch` ties them to
the daemon: one `run_due()` per loop turn over the threaded WireGuard links
of every covered namespace, and `stalled()` for `status`, `doctor` and
metrics. A link is (netns, ifindex) here as everywhere in wgnapid.
"""

from __future__ import annotations

import syslog
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from wgnapid.netns import KEEP_WIREGUARD_ON

# WireGuard's message sizes as rx_bytes counts them (bytes); see the module docstring.
HANDSHAKE_INITIATION = 148
HANDSHAKE_RESPONSE = 92
KEEPALIVE = 32
# WireGuard's timers (drivers/net/wireguard/messages.h), seconds.
REKEY_TIMEOUT = 5  # at most one handshake initiation per peer and direction per 5 s
KEEPALIVE_TIMEOUT = 10  # a live peer answers data it received within this
REJECT_AFTER_TIME = 180  # keys older than this are unusable: handshake no longer current
# A suspicion is confirmed by a read this long after it began: any data we sent
# before it began must have been answered by then (KEEPALIVE_TIMEOUT + slack).
CONFIRM_AFTER = KEEPALIVE_TIMEOUT + 2.0
# Longest the daemon's loop reads peers in one turn (seconds) before it looks
# at link events again; the read goes on at the next turn.
SLICE = 0.005
IMPORT_POLL = 0.2  # seconds between looks at the pyroute2 import thread


@dataclass(frozen=True, slots=True)
class PeerSample:
    """One peer's counters as WG_CMD_GET_DEVICE reports them.

    ``rx_bytes``/``tx_bytes``: the peer's WGPEER_A_RX_BYTES/TX_BYTES (bytes,
    since the peer was added). ``last_handshake``: WGPEER_A_LAST_HANDSHAKE_TIME
    in seconds since the epoch (wall clock), 0.0 when there was none.
    ``keepalive_interval``: WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL (s, 0 = off).
    ``netns``: the nsfs inode of the link's network namespace (0 where only
    one namespace is in play: tests, bench); ``netns_name`` its name.
    """

    ifname: str
    ifindex: int
    public_key: str  # base64, as `wg show` prints it
    rx_bytes: int
    tx_bytes: int
    last_handshake: float
    keepalive_interval: int = 0
    netns: int = 0
    netns_name: str = "self"  # the namespace's name (wgnapid.discovery), for log lines and status

    @property
    def link(self) -> tuple[int, int]:
        """The link's identity: (netns, ifindex)."""
        return self.netns, self.ifindex

    @property
    def key(self) -> tuple[int, int, str]:
        """The peer's identity: (netns, ifindex, public key)."""
        return self.netns, self.ifindex, self.public_key


@dataclass(frozen=True, slots=True)
class Figures:
    """What a suspicion rests on, from its start to the read that decided it."""

    seconds: float  # from the first read of the suspicion to this one
    tx_bytes: int  # sent to the peer meanwhile
    rx_bytes: int  # received from it meanwhile (handshake messages only while stalled)
    handshake_age: float | None  # seconds since the last handshake at this read; None: never

    def as_dict(self) -> dict:
        return {
            "seconds": round(self.seconds, 1),
            "tx_bytes": self.tx_bytes,
            "rx_bytes": self.rx_bytes,
            "handshake_age_s": None if self.handshake_age is None else round(self.handshake_age, 1),
        }


@dataclass(frozen=True, slots=True)
class Change:
    """A peer's stall state changed: ``kind`` is "stalled", "recovered" or
    "forgotten" (no longer judged: peer or link gone, counters reset,
    handshakes stale)."""

    kind: str
    ifname: str
    ifindex: int
    public_key: str
    figures: Figures
    reason: str = ""
    netns: int = 0  # nsfs inode of the link's namespace
    netns_name: str = "self"


@dataclass(slots=True)
class _Peer:
    ifname: str
    netns_name: str
    tx: int
    rx: int
    handshake: float
    at: float  # monotonic time of the last read
    # the suspicion (None: none running)
    since: float | None = None  # start of the first suspect window
    raised: float = 0.0  # the sample that raised it; confirmed CONFIRM_AFTER later
    raised_in: float = 0.0  # start of the read that sample was part of
    run_tx: int = 0
    run_rx: int = 0
    handshake_at_start: float = 0.0
    stalled: bool = False
    figures: Figures | None = None
    stalled_wall: float = 0.0


def handshake_only(rx_delta: int, seconds: float) -> bool:
    """True when ``rx_delta`` bytes are exactly some handshake initiations (148)
    and responses (92), no more of each than WireGuard's rate limit allows in
    ``seconds`` (one per REKEY_TIMEOUT, plus one). Data and keepalives make any
    other figure, except in rare sums (e.g. 4 keepalives + 1 initiation =
    3 responses), which the confirmation read rules out."""
    if rx_delta == 0:
        return True
    most = int(seconds / REKEY_TIMEOUT) + 2
    if rx_delta < 0 or rx_delta > most * (HANDSHAKE_INITIATION + HANDSHAKE_RESPONSE):
        return False
    for initiations in range(min(most, rx_delta // HANDSHAKE_INITIATION) + 1):
        rest = rx_delta - initiations * HANDSHAKE_INITIATION
        if rest % HANDSHAKE_RESPONSE == 0 and rest // HANDSHAKE_RESPONSE <= most:
            return True
    return False


def sent_data(tx_delta: int, seconds: float, keepalive_interval: int) -> bool:
    """True when ``tx_delta`` bytes are more than our handshake messages and
    keepalives can make in ``seconds`` (one handshake each way per
    REKEY_TIMEOUT, a keepalive per KEEPALIVE_TIMEOUT, per persistent-keepalive
    interval and after each handshake): only then must a live peer answer.
    A very slow sender (below ~70 B/s at a 30 s window) is not judged."""
    handshakes = int(seconds / REKEY_TIMEOUT) + 2
    keepalives = int(seconds / KEEPALIVE_TIMEOUT) + 1 + handshakes
    if keepalive_interval > 0:
        keepalives += int(seconds / keepalive_interval) + 1
    allowance = handshakes * (HANDSHAKE_INITIATION + HANDSHAKE_RESPONSE) + keepalives * KEEPALIVE
    return tx_delta > allowance


class Detector:
    """Stall detector over counter samples; pure (no I/O, times passed in).

    Feed it every read with `observe`; it returns the state changes. Peers are
    keyed by (netns, ifindex, public key): a link re-created under the same
    name is a new link (identity-safe), a peer re-added has its counters reset.
    Links are (netns, ifindex) pairs (PeerSample.link).
    """

    def __init__(self) -> None:
        self._peers: dict[tuple[int, int, str], _Peer] = {}
        self._links: dict[tuple[int, int], set[tuple[int, int, str]]] = {}  # link -> its peers' keys
        self._suspects: set[tuple[int, int, str]] = set()  # suspicions not yet confirmed

    def observe(self, samples: Iterable[PeerSample], links: Iterable[tuple[int, int]],
                now: float, wall: float, read: float | None = None) -> list[Change]:
        """Judge one read of the links ``links`` ((netns, ifindex); each read whole).

        ``samples``: every peer of those links now; peers of those links that
        are missing were removed. ``now``: monotonic seconds of the samples;
        ``wall``: time.time() of them (handshake times are wall-clock).
        ``read``: monotonic start of the read of all links these samples are
        part of (default ``now``): suspicions raised in one read are confirmed
        by one read (`confirm_due`), however long the read took.
        Returns the changes, at most one per peer.
        """
        links = set(links)
        began = now if read is None else read
        changes: list[Change] = []
        seen: set[tuple[int, int, str]] = set()
        for s in samples:
            seen.add(s.key)
            change = self._one(s, now, wall, began)
            if change:
                changes.append(change)
        for link in links:
            for key in self._links.get(link, set()) - seen:
                changes += self._drop(key, "peer removed")
        return changes

    def retain(self, links: Iterable[tuple[int, int]], reason: str = "link no longer watched"
               ) -> list[Change]:
        """Forget every peer of links ((netns, ifindex)) not in ``links`` (gone,
        or no longer threaded)."""
        keep = set(links)
        changes: list[Change] = []
        for link in [k for k in self._links if k not in keep]:
            for key in list(self._links[link]):
                changes += self._drop(key, reason)
        return changes

    def links(self) -> list[tuple[int, int]]:
        """Links ((netns, ifindex)) with peers being judged."""
        return list(self._links)

    def stalled(self) -> list[tuple[str, int, int, str, Figures, float, str]]:
        """Peers judged stalled now: (ifname, netns, ifindex, public key,
        figures, since as wall-clock seconds, netns name), sorted by netns,
        ifindex, key."""
        return [(p.ifname, *key, p.figures, p.stalled_wall, p.netns_name)
                for key, p in sorted(self._peers.items()) if p.stalled]

    def confirm_due(self, after: float = float("-inf")) -> float | None:
        """Monotonic time at which the suspicions raised by one read can all be
        confirmed (its last one's sample + CONFIRM_AFTER), the earliest such
        time later than ``after`` (the last read's start: a read's suspicions
        whose confirming read was made wait for the next whole read), or None.
        A read spreads over time (loop turns, TCG): a confirming read due at
        its first suspicion's time would come too early for the later ones,
        and each would need a read of its own."""
        last: dict[float, float] = {}  # read start -> its last suspicion's sample
        for k in self._suspects:
            p = self._peers[k]
            last[p.raised_in] = max(last.get(p.raised_in, p.raised), p.raised)
        due = [t + CONFIRM_AFTER for t in last.values() if t + CONFIRM_AFTER > after]
        return min(due) if due else None

    def suspects(self) -> set[tuple[int, int]]:
        """Links ((netns, ifindex)) with a suspicion waiting for its confirming read."""
        return {k[:2] for k in self._suspects}

    # -- one peer -----------------------------------------------------------------

    def _add(self, s: PeerSample, now: float) -> None:
        self._peers[s.key] = _Peer(s.ifname, s.netns_name, s.tx_bytes, s.rx_bytes, s.last_handshake, now)
        self._links.setdefault(s.link, set()).add(s.key)

    def _drop(self, key: tuple[int, int, str], reason: str) -> list[Change]:
        p = self._peers.pop(key)
        self._suspects.discard(key)
        peers = self._links.get(key[:2])
        if peers is not None:
            peers.discard(key)
            if not peers:
                del self._links[key[:2]]
        if not p.stalled:
            return []
        netns, ifindex, public_key = key
        return [Change("forgotten", p.ifname, ifindex, public_key, p.figures, reason, netns,
                       p.netns_name)]

    def _one(self, s: PeerSample, now: float, wall: float, began: float) -> Change | None:
        p = self._peers.get(s.key)
        if p is None:
            self._add(s, now)
            return None  # the first read is a baseline: no window yet
        change = None
        p.ifname, p.netns_name = s.ifname, s.netns_name  # names may change; the keys do not
        if s.tx_bytes < p.tx or s.rx_bytes < p.rx or s.last_handshake < p.handshake:
            # Counters went back: the peer was removed and added again between reads.
            change = self._drop(s.key, "counters reset (peer re-added)")
            self._add(s, now)
            return change[0] if change else None
        seconds = now - p.at
        dtx, drx = s.tx_bytes - p.tx, s.rx_bytes - p.rx
        age = wall - s.last_handshake if s.last_handshake > 0 else None
        current = age is not None and age <= REJECT_AFTER_TIME
        if not handshake_only(drx, seconds):
            # Data or keepalives arrived: the receive side works.
            if p.stalled:
                change = Change("recovered", p.ifname, s.ifindex, s.public_key,
                                Figures(now - p.since, p.run_tx + dtx, p.run_rx + drx, age),
                                netns=s.netns, netns_name=s.netns_name)
            p.since, p.stalled, p.figures = None, False, None
        elif p.since is None:
            if current and sent_data(dtx, seconds, s.keepalive_interval):
                p.since, p.raised, p.raised_in = p.at, now, began
                p.run_tx, p.run_rx, p.handshake_at_start = dtx, drx, p.handshake
        else:
            p.run_tx += dtx
            p.run_rx += drx
            if not current:
                # Handshakes went stale: the peer is gone or we stopped sending.
                if p.stalled:
                    change = Change("forgotten", p.ifname, s.ifindex, s.public_key,
                                    Figures(now - p.since, p.run_tx, p.run_rx, age),
                                    "handshakes stale", s.netns, s.netns_name)
                p.since, p.stalled, p.figures = None, False, None
            elif not p.stalled:
                alive = p.run_rx > 0 or s.last_handshake > p.handshake_at_start
                if alive and now - p.raised >= CONFIRM_AFTER:
                    p.stalled = True
                    p.stalled_wall = wall
                    p.figures = Figures(now - p.since, p.run_tx, p.run_rx, age)
                    change = Change("stalled", p.ifname, s.ifindex, s.public_key, p.figures,
                                    netns=s.netns, netns_name=s.netns_name)
        p.tx, p.rx, p.handshake, p.at = s.tx_bytes, s.rx_bytes, s.last_handshake, now
        if p.since is not None and not p.stalled:
            self._suspects.add(s.key)
        else:
            self._suspects.discard(s.key)
        return change


# -- reading the kernel ---------------------------------------------------------------

def samples_from_messages(messages, ifname: str, ifindex: int, netns: int = 0,
                          netns_name: str = "self") -> list[PeerSample]:
    """Peers from the WG_CMD_GET_DEVICE reply of one link (pyroute2 wgmsg objects).

    Raises LookupError when the reply is for another ifindex than the one
    asked for (a check: WireGuardGenl asks by ifindex). A peer whose allowed IPs spill into the next
    message is repeated there with only its key and allowed IPs (kernel:
    wg_get_device_dump): only the part carrying counters is taken.
    """
    out: list[PeerSample] = []
    for msg in messages:
        got = msg.get_attr("WGDEVICE_A_IFINDEX")
        if got is not None and got != ifindex:
            raise LookupError(f"{ifname} is now ifindex {got}, not {ifindex}")
        ifname = msg.get_attr("WGDEVICE_A_IFNAME") or ifname  # the name now (renamed meanwhile)
        for peer in msg.get_attr("WGDEVICE_A_PEERS") or ():
            rx = peer.get_attr("WGPEER_A_RX_BYTES")
            if rx is None:
                continue
            key = peer.get_attr("WGPEER_A_PUBLIC_KEY")
            if isinstance(key, bytes):
                key = key.decode()
            hs = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME") or {}
            out.append(PeerSample(
                ifname, ifindex, key, rx, peer.get_attr("WGPEER_A_TX_BYTES") or 0,
                hs.get("tv_sec", 0) + hs.get("tv_nsec", 0) / 1e9,
                peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0,
                netns,
                netns_name,
            ))
    return out


class WireGuardReader:
    """WG_CMD_GET_DEVICE by ifindex, inside the link's namespace.

    The request goes out on the namespace's own generic-netlink socket
    (NetNamespace.wireguard(): made inside it, kept), because WireGuard looks
    the ifindex up in the asking socket's namespace; asked by ifindex, the
    reply is that link's or an error, never another link's. `ready()` imports
    pyroute2's message classes on a thread of its own (0.3-0.5 s on a host,
    10 s and more under TCG; the daemon imports them only when a WireGuard
    link is watched) and says whether it is done, so the daemon's loop keeps
    handling link events meanwhile. `read(ns, ifname, ifindex)` returns the
    link's peers, or raises OSError (link gone: ENODEV; not WireGuard:
    EOPNOTSUPP; no wireguard family: ENOENT; pyroute2 missing; the namespace
    cannot be entered). After an error other than those
    (wgnapid.netns.KEEP_WIREGUARD_ON) the namespace's socket is closed and
    made again at the next read.
    """

    def __init__(self) -> None:
        self._loaded = False
        self._importer: threading.Thread | None = None
        self._import_error: Exception | None = None

    def ready(self) -> bool:
        if self._loaded or self._import_error is not None:
            return True
        if self._importer is None:
            self._importer = threading.Thread(target=self._import, name="wgnapid-import",
                                              daemon=True)
            self._importer.start()
        if self._importer.is_alive():
            return False
        self._importer.join()
        return True

    def _import(self) -> None:
        try:
            import pyroute2.netlink  # noqa: F401 - WireGuardGenl's message classes
            import pyroute2.netlink.generic.wireguard  # noqa: F401

            self._loaded = True
        except Exception as exc:  # reported by read(), per link, once
            self._import_error = exc

    def read(self, ns, ifname: str, ifindex: int) -> list[PeerSample]:
        if not self.ready():
            self._importer.join()  # a direct caller (tests, bench) waits
        if not self._loaded:
            raise OSError(0, f"pyroute2's WireGuard messages cannot be imported: {self._import_error}")
        try:
            replies = ns.wireguard().device(ifindex)
        except OSError as exc:
            if exc.errno not in KEEP_WIREGUARD_ON:
                ns.drop_wireguard()
            raise
        except Exception as exc:  # a reply pyroute2 cannot decode
            raise OSError(0, f"{type(exc).__name__}: {exc}") from None
        return samples_from_messages(replies, ifname, ifindex, ns.id.ino, ns.name)

    def close(self) -> None:
        """Nothing to close: the sockets are the namespaces' (NetNamespace.close)."""


# -- the daemon's part ------------------------------------------------------------------

class StallWatch:
    """Reads the watched links every ``window`` seconds (sooner to confirm a
    suspicion), logs each change once, and answers `stalled()`.

    ``log``: a wgnapid.log.Log. ``reader``: anything with ``read(ns, ifname,
    ifindex) -> list[PeerSample]`` and ``close()`` (WireGuardReader by default;
    ``ns`` a wgnapid.netns.NetNamespace). ``window`` 0 turns the watch off.
    """

    def __init__(self, log, window: float, reader=None) -> None:
        self.log = log
        self.window = window
        self.reader = reader or WireGuardReader()
        self.detector = Detector()
        self.next_due: float | None = None
        self.reads = 0  # reads finished (whole or confirming)
        self._last_poll = float("-inf")
        self._watching = True  # the last read had links to read
        self._queue: list[tuple[object, str, int]] = []  # (ns, name, ifindex) of the read under way, last first
        self.read_errors: dict[tuple[int, int], str] = {}  # (netns, ifindex) -> last error, logged once
        self.clock = _clock  # () -> (monotonic, wall-clock) seconds of a sample

    def set_window(self, window: float, now: float) -> None:
        if window != self.window:
            self.window = window
            self.next_due = None
            if not window:
                self._log(self.detector.retain((), "stall watch turned off"))

    def due(self, now: float) -> float | None:
        """Monotonic deadline of the next read, or None when the watch is off.
        While a read is spread over loop turns, ``now``."""
        if not self.window:
            return None
        if self._queue:
            return now
        if self.next_due is None:
            self.next_due = now  # first read at once: the baseline
        confirm = self.detector.confirm_due(after=self._last_poll)
        if confirm is None:
            # No suspicion, or every confirming read was made. With nothing to
            # watch at the last read, no wake-up of its own: the next loop turn
            # after next_due (an event, the resync) starts the next read.
            return self.next_due if self._watching else None
        return min(self.next_due, confirm)

    def run_due(self, spaces, now: float, budget: float = SLICE) -> bool:
        """The daemon's one call per loop turn: read when due. ``spaces``:
        (NetNamespace, its reconciler's LinkState objects) for every covered
        namespace, looked at only when a read is due; watched are WireGuard
        links whose threaded value read back 1, whoever set it (wgnapid or the
        kernel).
        A read stops after ``budget`` seconds and goes on at the next turn, so
        link events are never held up for long by many peers.
        Returns True when a peer's state changed or a read finished (the
        status, which counts reads, is then news: once per window)."""
        changes: list[Change] = []
        if not self._queue:
            due = self.due(now)
            if not self.window or now < (self.next_due if due is None else due):
                return False
            links = [(ns, st.name, st.ifindex) for ns, states in spaces for st in states
                     if st.kind == "wireguard" and st.current == 1]
            if links and not getattr(self.reader, "ready", lambda: True)():
                # pyroute2 is being imported on its own thread: look again soon.
                self.next_due = now + IMPORT_POLL
                return False
            changes += self._start(links, now)
        changes += self._drain(budget)
        self._log(changes)
        finished = not self._queue
        if finished:
            self.reads += 1
        return bool(changes) or (finished and self._watching)

    def poll(self, links: Iterable[tuple[object, str, int]], now: float, wall: float) -> list[Change]:
        """One whole read at ``now``/``wall`` (times given: tests, bench).
        ``links``: the threaded WireGuard links as (NetNamespace, name,
        ifindex). Returns (and logs) the changes."""
        changes = self._start(list(links), now)
        changes += self._drain(None, (now, wall))
        self._log(changes)
        self.reads += 1
        return changes

    def _start(self, links: list[tuple[object, str, int]], now: float) -> list[Change]:
        keys = {(ns.id.ino, i) for ns, _, i in links}
        changes = self.detector.retain(keys)
        self.read_errors = {k: v for k, v in self.read_errors.items() if k in keys}
        self._watching = bool(links)
        if self.next_due is None or now >= self.next_due:
            self._queue = links
            self.next_due = now + self.window
        else:  # the confirming read: only links with a suspicion
            wanted = self.detector.suspects()
            self._queue = [link for link in links if (link[0].id.ino, link[2]) in wanted]
        self._queue.reverse()  # popped from the end
        self._last_poll = now
        return changes

    def _drain(self, budget: float | None, at: tuple[float, float] | None = None) -> list[Change]:
        changes: list[Change] = []
        stop = None if budget is None else time.monotonic() + budget
        did_one = False  # at least one link per turn, however small the budget
        while self._queue and (stop is None or not did_one or time.monotonic() < stop):
            did_one = True
            ns, name, ifindex = self._queue.pop()
            if ns.released:
                continue  # released since the read began (release() forgot its peers)
            link = (ns.id.ino, ifindex)
            try:
                samples = self.reader.read(ns, name, ifindex)
            except (OSError, LookupError) as exc:
                if self.read_errors.get(link) != str(exc):
                    self.read_errors[link] = str(exc)
                    self.log.event("peer-stall-unread", syslog.LOG_DEBUG,
                                   f"{name}: cannot read WireGuard peers: {exc}{_where(link[0], ns.name)}",
                                   interface=name, ifindex=ifindex, **_ns_fields(link[0], ns.name))
                continue
            self.read_errors.pop(link, None)
            now, wall = at or self.clock()
            changes += self.detector.observe(samples, [link], now, wall, self._last_poll)
        return changes

    def release(self, netns: int) -> None:
        """The covered namespace with nsfs inode ``netns`` was released (gone, or
        no rule covers it): its peers are no longer judged, at once rather than
        at the next read (a notice for each one flagged stalled), and nothing
        queued of it is read."""
        keep = [link for link in self.detector.links() if link[0] != netns]
        self._log(self.detector.retain(keep, "network namespace released"))
        reading = bool(self._queue)
        self._queue = [q for q in self._queue if q[0].id.ino != netns]
        if reading and not self._queue:
            self.reads += 1  # the read under way is over: nothing else was left in it
        self.read_errors = {k: v for k, v in self.read_errors.items() if k[0] != netns}

    def stalled(self) -> list[tuple[str, int, int, str]]:
        """Stalled peers now: (ifname, netns inode, ifindex, public key in base64)."""
        return [(name, netns, ifindex, key)
                for name, netns, ifindex, key, *_rest in self.detector.stalled()]

    def as_list(self) -> list[dict]:
        """Stalled peers for the status document."""
        return [{"interface": name, "ifindex": ifindex, "netns": netns, "netns_name": netns_name,
                 "public_key": key, "since": since, **figures.as_dict()}
                for name, netns, ifindex, key, figures, since, netns_name in self.detector.stalled()]

    def close(self) -> None:
        self.reader.close()

    def _log(self, changes: list[Change]) -> None:
        for c in changes:
            f = c.figures
            age = "never" if f.handshake_age is None else f"{f.handshake_age:.0f} s ago"
            where = _where(c.netns, c.netns_name)
            fields = dict(interface=c.ifname, ifindex=c.ifindex, **_ns_fields(c.netns, c.netns_name),
                          wgnapid_peer=c.public_key,
                          wgnapid_stall_seconds=f"{f.seconds:.1f}",
                          wgnapid_tx_bytes=f.tx_bytes, wgnapid_rx_bytes=f.rx_bytes,
                          wgnapid_handshake_age=None if f.handshake_age is None
                          else f"{f.handshake_age:.1f}")
            if c.kind == "stalled":
                self.log.event(
                    "peer-stalled", syslog.LOG_WARNING,
                    f"{c.ifname}: peer {c.public_key} receive side looks stalled "
                    f"(CVE-2026-52945): in {f.seconds:.0f} s we sent {f.tx_bytes} bytes and "
                    f"received only {f.rx_bytes} bytes of handshake messages; last handshake "
                    f"{age}. See README, 'A stalled peer'{where}", **fields)
            elif c.kind == "recovered":
                self.log.event(
                    "peer-stall-recovered", syslog.LOG_NOTICE,
                    f"{c.ifname}: peer {c.public_key} receives data again after "
                    f"{f.seconds:.0f} s{where}", **fields)
            else:
                self.log.event(
                    "peer-stall-forgotten", syslog.LOG_NOTICE,
                    f"{c.ifname}: peer {c.public_key} no longer judged stalled: {c.reason}{where}",
                    **fields)


def _clock() -> tuple[float, float]:
    return time.monotonic(), time.time()


def _where(netns: int, name: str) -> str:
    """" [netns NAME INODE]" for a namespace other than the daemon's own, as
    Log.link shows it in its lines."""
    return "" if name == "self" else f" [netns {name} {netns}]"


def _ns_fields(netns: int, name: str) -> dict:
    """The journal fields Log.link gives a link's namespace."""
    return {"wgnapid_netns": netns or None, "wgnapid_netns_name": name}
