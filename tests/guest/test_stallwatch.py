"""Stall watch on real WireGuard (issue 14), inside the qemu guest.

Two network namespaces joined by a veth pair: the guest's initial namespace
(where wgnapid runs and its WireGuard links are threaded) and a peer namespace
of this test, with WireGuard tunnels between them. The stall's signature
(CVE-2026-52945: a peer's data stops being received while handshakes go on) is
reproduced by dropping the tunnel's inbound WireGuard data messages (type 4,
the first byte of the UDP payload) with nftables before they reach WireGuard;
handshake messages (types 1-3) pass.

w01 checks the counter signals the detector relies on (both kernels); w02 runs
the daemon with a short window against a stalled tunnel and three controls (a
busy tunnel, an idle one, a one-way flow), and a second stalled tunnel whose
device lives in a tenant namespace (moved there after creation, as a
container's: its UDP socket stays in the initial namespace, where the drop
rule sees its packets).

Everything made here carries the token TOKEN and is removed at the end; all
traffic goes only to this test's own addresses in its own namespaces, bounded
in count and time.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

import guestlib
from guestlib import wait_until

pytestmark = pytest.mark.guest

TOKEN = secrets.token_hex(2)
NS = f"i14p{TOKEN}"
TENANT = f"i14t{TOKEN}"  # w02: a namespace holding one tunnel device, like a container
NFT_TABLE = f"i14{TOKEN}"
VETH_ROOT, VETH_PEER = f"i14a{TOKEN}", f"i14b{TOKEN}"
UNDERLAY = "10.214.0"  # .1 here, .2 in the peer namespace
OVERLAY = "10.215"  # tunnel i: 10.215.i.1 here, 10.215.i.2 there
PORT_ROOT, PORT_PEER = 51400, 52400  # + tunnel number

HANDSHAKE_INITIATION, HANDSHAKE_RESPONSE, KEEPALIVE = 148, 92, 32
# The handshake worker counts whole messages; data and keepalives are padded
# plaintext + 32, a multiple of 16 (wgnapid/stallwatch.py).
STALL_WINDOW = 13  # seconds: short, and over the 12 s of the confirming read (so the reads
# after a drop are: the window it fell in, the next whole one, the confirming read)
TCG_SLACK = 10.0  # timers run late under TCG on a loaded machine
TRAFFIC_S = 800  # w02's pings stop by themselves after this (the test ends them sooner)


_SBIN_PATH = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
NFT = shutil.which("nft", path=_SBIN_PATH) or "nft"
# iputils ping where installed, else busybox's (busybox-static is in ./dev's APT_KERNEL)
PING = ([p] if (p := shutil.which("ping", path=_SBIN_PATH)) else
        [b, "ping"] if (b := shutil.which("busybox", path=_SBIN_PATH)) else ["ping"])


# w02 waits for windows of the daemon (several reads of 13 s each, plus start-up),
# so it gets a longer budget than conftest's per-scenario alarm; the waits
# inside have their own deadlines. Under TCG on a loaded host a daemon start or
# a CLI call has taken minutes, so those deadlines are raised here too.
SLOW_BUDGET_S = 900


def allow_slow(monkeypatch) -> None:
    if guestlib.IN_GUEST:
        signal.alarm(SLOW_BUDGET_S)
    monkeypatch.setattr(guestlib, "DAEMON_READY_TIMEOUT", max(guestlib.DAEMON_READY_TIMEOUT, 400))
    monkeypatch.setattr(guestlib, "CLI_TIMEOUT", max(guestlib.CLI_TIMEOUT, 400))


def run(*argv: str, input: str | None = None, check: bool = True):
    if argv[0] == "nft":
        argv = (NFT, *argv[1:])
    return guestlib.run(*argv, input=input, check=check)


def nsrun(*argv: str, input: str | None = None, check: bool = True):
    return guestlib.run("ip", "netns", "exec", NS, *argv, input=input, check=check)


class Peer:
    """One end's view of its only peer, from `wg show DEV dump`."""

    def __init__(self, line: str):
        f = line.split("\t")
        self.public_key, self.handshake = f[0], int(f[4])
        self.rx, self.tx = int(f[5]), int(f[6])

    def __repr__(self) -> str:
        return f"Peer(rx={self.rx}, tx={self.tx}, handshake={self.handshake})"


class Tunnel:
    netns: str | None = None  # the namespace its device was moved to (move_to)

    def __init__(self, topo: "Topology", number: int, name: str):
        self.topo, self.number, self.name = topo, number, name
        self.port_root, self.port_peer = PORT_ROOT + number, PORT_PEER + number
        self.addr_root = f"{OVERLAY}.{number}.1"
        self.addr_peer = f"{OVERLAY}.{number}.2"
        key_root, self.pub_root = topo.keypair()
        key_peer, self.pub_peer = topo.keypair()
        run("ip", "link", "add", name, "type", "wireguard")
        topo.root_links.append(name)
        run("wg", "set", name, "private-key", key_root, "listen-port", str(self.port_root),
            "peer", self.pub_peer, "allowed-ips", f"{self.addr_peer}/32",
            "endpoint", f"{UNDERLAY}.2:{self.port_peer}")
        run("ip", "address", "add", f"{self.addr_root}/24", "dev", name)
        run("ip", "link", "set", name, "up")
        run("ip", "-n", NS, "link", "add", name, "type", "wireguard")
        nsrun("wg", "set", name, "private-key", key_peer, "listen-port", str(self.port_peer),
              "peer", self.pub_root, "allowed-ips", f"{self.addr_root}/32",
              "endpoint", f"{UNDERLAY}.1:{self.port_root}")
        run("ip", "-n", NS, "address", "add", f"{self.addr_peer}/24", "dev", name)
        run("ip", "-n", NS, "link", "set", name, "up")

    def move_to(self, netns: str) -> None:
        """Move our end's device into ``netns`` (its UDP socket stays here:
        WireGuard keeps the namespace it was created in for its sockets)."""
        run("ip", "link", "set", self.name, "netns", netns)
        self.netns = netns
        self._here("ip", "address", "add", f"{self.addr_root}/24", "dev", self.name)
        self._here("ip", "link", "set", self.name, "up")

    def _here(self, *argv: str):
        return run("ip", "netns", "exec", self.netns, *argv) if self.netns else run(*argv)

    @property
    def ifindex(self) -> int:
        return int(self._here("cat", f"/sys/class/net/{self.name}/ifindex").stdout)

    def threaded(self) -> str:
        return self._here("cat", f"/sys/class/net/{self.name}/threaded").stdout.strip()

    def here(self) -> Peer:
        """Our end's counters for the peer (the side wgnapid watches)."""
        return Peer(self._here("wg", "show", self.name, "dump").stdout.splitlines()[1])

    def there(self) -> Peer:
        return Peer(nsrun("wg", "show", self.name, "dump").stdout.splitlines()[1])

    def ping(self, interval: float, seconds: int, count: int | None = None) -> subprocess.Popen:
        """Pings from here to the far end: bounded by -w (and -c)."""
        argv = [*PING, "-q", "-i", str(interval), "-w", str(seconds)]
        if count:
            argv += ["-c", str(count)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return self.topo.spawn(argv + [self.addr_peer])

    def drop_rule(self) -> str:
        """The nft command that drops inbound WireGuard data messages (type 4)
        of this tunnel here (its UDP socket's namespace)."""
        return (f"add rule inet {NFT_TABLE} input udp dport {self.port_root} @ih,0,8 4 "
                f'counter drop comment "stall {self.name}"')



def drop_data(*tunnels: Tunnel) -> None:
    """The tunnels' data dropped from one moment: one nft transaction."""
    run("nft", "-f", "/dev/stdin", input="".join(t.drop_rule() + "\n" for t in tunnels))


def pass_data(*tunnels: Tunnel) -> None:
    """Their drop rules removed, in one nft transaction."""
    out = run("nft", "-a", "list", "chain", "inet", NFT_TABLE, "input").stdout
    commands = []
    for t in tunnels:
        handles = [line.rsplit("# handle", 1)[1].strip() for line in out.splitlines()
                   if f"stall {t.name}" in line and "# handle" in line]
        assert handles, f"no drop rule for {t.name} in\n{out}"
        commands.append(f"delete rule inet {NFT_TABLE} input handle {handles[0]}\n")
    run("nft", "-f", "/dev/stdin", input="".join(commands))


class Topology:
    """The peer namespace, the veth pair, the nftables table, the tunnels."""

    def __init__(self):
        self.root_links: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.keydir = tempfile.mkdtemp(prefix=f"i14keys{TOKEN}-")
        os.chmod(self.keydir, 0o700)
        self._keys = 0
        run("ip", "netns", "add", NS)
        run("ip", "-n", NS, "link", "set", "lo", "up")
        run("ip", "link", "add", VETH_ROOT, "type", "veth", "peer", "name", VETH_PEER,
            "netns", NS)
        self.root_links.append(VETH_ROOT)
        run("ip", "address", "add", f"{UNDERLAY}.1/24", "dev", VETH_ROOT)
        run("ip", "link", "set", VETH_ROOT, "up")
        run("ip", "-n", NS, "address", "add", f"{UNDERLAY}.2/24", "dev", VETH_PEER)
        run("ip", "-n", NS, "link", "set", VETH_PEER, "up")
        run("nft", "add", "table", "inet", NFT_TABLE)
        run("nft", "add chain inet " + NFT_TABLE + " input { type filter hook input priority 0 ; }")

    def keypair(self) -> tuple[str, str]:
        private = run("wg", "genkey").stdout.strip()
        public = run("wg", "pubkey", input=private + "\n").stdout.strip()
        path = os.path.join(self.keydir, f"k{self._keys}")
        self._keys += 1
        with open(path, "w") as f:
            f.write(private + "\n")
        return path, public

    def spawn(self, argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        run("nft", "delete", "table", "inet", NFT_TABLE, check=False)
        run("ip", "netns", "del", NS, check=False)
        run("ip", "netns", "del", TENANT, check=False)
        for name in self.root_links:
            if (guestlib.SYSFS_NET / name).exists():
                run("ip", "link", "del", name, check=False)
        shutil.rmtree(self.keydir, ignore_errors=True)


@pytest.fixture
def topo(guest_ready):
    assert os.path.exists(NFT), "nft missing (./dev setup installs nftables)"
    assert os.path.exists(PING[0]), "no ping and no busybox (./dev setup installs busybox-static)"
    t = Topology()
    yield t
    t.cleanup()


def handshake_bytes(rx: int) -> bool:
    """rx is a sum of whole handshake messages (no data, no keepalive)."""
    return any((rx - a * HANDSHAKE_INITIATION) >= 0
               and (rx - a * HANDSHAKE_INITIATION) % HANDSHAKE_RESPONSE == 0
               for a in range(rx // HANDSHAKE_INITIATION + 1))


def test_w01_stall_signals(topo, record_property, monkeypatch):
    """What the counters show, on this kernel: handshake sizes as counted, the
    keepalive answer, and rx counting only handshakes while data is dropped."""
    allow_slow(monkeypatch)
    t = Tunnel(topo, 0, f"sg{TOKEN}")
    assert (t.here().rx, t.here().tx) == (0, 0)

    # One echo request: handshake, then the request; the reply comes back.
    ping = t.ping(1, 10, count=1)
    here, _ = wait_until("the echo reply", lambda: (p := t.here()).rx > HANDSHAKE_RESPONSE and p, 30)
    assert ping.wait(30) == 0
    reply_at = time.monotonic()
    there = t.there()
    echo = here.rx - HANDSHAKE_RESPONSE
    print(f"initiator: tx {here.tx} rx {here.rx}; responder: tx {there.tx} rx {there.rx}")
    record_property("one_ping_initiator_tx_rx", [here.tx, here.rx])
    record_property("one_ping_responder_tx_rx", [there.tx, there.rx])
    # The initiator receives one handshake response (92) and the echo reply; the
    # responder one initiation (148) and the echo request, each data packet
    # counted as padded plaintext + 32 (84-byte ICMP: 96 + 32 = 128).
    assert echo % 16 == 0 and echo >= 48, here
    assert here.tx == HANDSHAKE_INITIATION + echo, here
    assert there.rx == HANDSHAKE_INITIATION + echo, there
    assert there.tx == HANDSHAKE_RESPONSE + echo, there

    # The initiator got data and has nothing to send: a keepalive ~10 s later.
    grown, _ = wait_until("the keepalive answer",
                          lambda: (p := t.there()).rx > there.rx and p, 25)
    keepalive_s = time.monotonic() - reply_at
    record_property("keepalive_answer_s", round(keepalive_s, 1))
    print(f"keepalive after {keepalive_s:.1f} s: responder rx +{grown.rx - there.rx}")
    assert grown.rx - there.rx == KEEPALIVE
    assert keepalive_s <= 10 + TCG_SLACK

    # Data dropped on the way in, handshakes pass: rx grows by handshakes only.
    before = t.here()
    drop_data(t)
    dropped_at = time.monotonic()
    t.ping(0.5, 35)
    after, _ = wait_until("a handshake while data is dropped",
                          lambda: (p := t.here()).rx > before.rx and p, 45, interval=0.25)
    handshake_s = time.monotonic() - dropped_at
    rx = after.rx - before.rx
    record_property("drop_to_handshake_s", round(handshake_s, 1))
    record_property("rx_during_drop", rx)
    print(f"data dropped: first handshake after {handshake_s:.1f} s, rx +{rx}, "
          f"tx +{after.tx - before.tx}, handshake {before.handshake} -> {after.handshake}")
    assert handshake_bytes(rx), f"rx grew by {rx}: not whole handshake messages"
    assert after.tx - before.tx > 10 * 48, "our pings were not sent"
    assert after.handshake >= before.handshake
    # The peer received our data and answered: its tx grew by data we never counted.
    assert t.there().tx - there.tx > 10 * 48


@pytest.fixture(scope="session")
def stall_policy(risky) -> str:
    # Every namespace, but rules for the daemon's own and the tenant's only (not
    # the peer namespace, where the far ends are).
    text = guestlib.policy_toml(source="netlink", resync_interval=30, pending_max_delay=2,
                                kernel_guard="warn" if risky else None, namespaces="all",
                                rules=[{"name": "tunnels", "interfaces": ["*"], "threaded": "on",
                                        "netns": ["self", TENANT]}])
    return text.replace("[daemon]\n", f"[daemon]\nstall_window = {STALL_WINDOW}\n", 1)


def cli_together(daemon, *commands: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """Run several `wgnapid` commands against ``daemon`` at once: [(rc, stdout, stderr)]."""
    procs = [subprocess.Popen([str(guestlib.WGNAPID), "--config", str(daemon.config),
                               "--log-target", "journal", *args],
                              env=daemon.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in commands]
    # guestlib.CLI_TIMEOUT is read here, at call time (allow_slow raises it)
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=guestlib.CLI_TIMEOUT)
        out.append((proc.returncode, stdout, stderr))
    return out


@pytest.mark.skipif(guestlib.kernel_is_risky(),
                    reason="the daemon scenario runs on the 6.12 kernel (issue 14; keeps the "
                           "6.1 boot short); w01 and w03 check the signals and the query here")
def test_w02_stall_watch_flags_only_the_stalled_peer(topo, daemons, stall_policy,
                                                     record_property, monkeypatch):
    """The daemon flags exactly the tunnels whose data is dropped, within two
    windows plus the confirming read, the one in the tenant namespace named
    as such; the controls are never flagged; the drop's removal brings one
    recovery notice each."""
    allow_slow(monkeypatch)
    from wgnapid.log import MESSAGE_IDS
    from wgnapid.stallwatch import CONFIRM_AFTER

    # Tunnels and traffic first: the daemon threads the links before READY=1 and
    # its first read is the baseline (no wait for a resync to notice them).
    stall = Tunnel(topo, 1, f"st{TOKEN}")
    busy = Tunnel(topo, 2, f"bz{TOKEN}")
    idle = Tunnel(topo, 3, f"id{TOKEN}")
    oneway = Tunnel(topo, 4, f"ow{TOKEN}")
    run("ip", "netns", "add", TENANT)
    tenant = Tunnel(topo, 5, f"tn{TOKEN}")
    tenant.move_to(TENANT)
    tenant_ino = os.stat(f"/run/netns/{TENANT}").st_ino
    # The one-way flow: pings from the peer namespace that our end drops after
    # WireGuard counted them (nftables on the tunnel link), so nothing answers.
    run("nft", "add", "rule", "inet", NFT_TABLE, "input", "iifname", oneway.name,
        "icmp", "type", "echo-request", "drop")
    assert idle.ping(0.2, 20, count=1).wait(30) == 0  # a handshake, then idle
    stall.ping(0.2, TRAFFIC_S)
    tenant.ping(0.2, TRAFFIC_S)
    busy.ping(0.2, TRAFFIC_S)
    topo.spawn(["ip", "netns", "exec", NS, *PING, "-q", "-i", "0.2", "-w", str(TRAFFIC_S),
                oneway.addr_root])
    wait_until("traffic on every active tunnel",
               lambda: all(t.here().rx > 1000 for t in (stall, tenant, busy, oneway)), 120)
    daemon = daemons.get(stall_policy)
    for t in (stall, busy, idle, oneway, tenant):
        assert t.threaded() == "1", f"{t.name} not threaded at READY=1"
    stalled = {stall.name, tenant.name}

    def status() -> dict:
        return daemon.status_file() or {}

    def flagged() -> set[str]:
        names = {p["interface"] for p in status().get("stalled_peers", [])}
        controls = names - stalled
        assert not controls, f"control tunnels flagged: {status()['stalled_peers']}"
        return names

    # Two reads with traffic: a baseline and one judged healthy window.
    reads = status().get("stall_reads", 0)
    wait_until("two stall reads with traffic",
               lambda: status().get("stall_reads", 0) >= reads + 2 and not flagged(),
               300)  # a deadline only: reads are counted, not timed
    assert status()["stall_window"] == STALL_WINDOW

    # Drop just after a read has ended, so no read that began before the drop
    # counts as one after it (a read spreads over loop turns: under TCG, with
    # five links, it can still be under way when the drop comes).
    ended = status()["stall_reads"]
    wait_until("a stall read to end", lambda: status()["stall_reads"] > ended, 120, interval=0.1)
    reads_before = status()["stall_reads"]
    since_us = int(time.time() * 1e6)
    drop_data(stall, tenant)
    wait_until(f"{stall.name} and {tenant.name} flagged", lambda: flagged() == stalled, 300,
               interval=0.25)
    reads = status()["stall_reads"] - reads_before
    record_property("drop_to_flagged_reads", reads)
    # When each was flagged, by its journal entry: the status file is written
    # at most once a second, so when it first shows both it can count the next
    # whole read already (due W - CONFIRM_AFTER = 1 s after the confirming one);
    # its read count is no measure of when.
    guestlib.journal_sync()
    warnings = [e for e in daemon.journal(MESSAGE_ID=MESSAGE_IDS["peer-stalled"])
                if int(e["__REALTIME_TIMESTAMP"]) >= since_us]
    assert sorted(w["INTERFACE"] for w in warnings) == sorted(stalled), [e["MESSAGE"] for e in warnings]
    latency = {w["INTERFACE"]: (int(w["__REALTIME_TIMESTAMP"]) - since_us) / 1e6 for w in warnings}
    record_property("drop_to_flagged_s", round(max(latency.values()), 1))
    print(f"stall flagged {latency[stall.name]:.1f} s ({stall.name}) and "
          f"{latency[tenant.name]:.1f} s ({tenant.name}) after the drop, {reads} reads counted "
          f"(window {STALL_WINDOW} s, confirming read {CONFIRM_AFTER:.0f} s later)")
    # Within two windows and the confirming read: the window the drop fell in
    # (a packet that came between a link's read and the drop makes it look
    # healthy), the next whole one, and the confirming read 12 s after it
    # (38 s here; 38.1-39.1 s measured). A third window would be 51 s. (Whether
    # one confirming read confirms both is the unit tests' to show: a second
    # one at once would cost milliseconds here.)
    bound = 2 * STALL_WINDOW + CONFIRM_AFTER + TCG_SLACK
    assert max(latency.values()) <= bound, f"flagged later than {bound} s after the drop: {latency}"
    peers = {p["interface"]: p for p in status()["stalled_peers"]}
    own_ino = os.stat("/proc/self/ns/net").st_ino
    for t, ino, ns_name in ((stall, own_ino, "self"), (tenant, tenant_ino, TENANT)):
        peer = peers[t.name]
        assert (peer["ifindex"], peer["public_key"], peer["netns"], peer["netns_name"]) == (
            t.ifindex, t.pub_peer, ino, ns_name), peer
        assert peer["tx_bytes"] > 0 and handshake_bytes(peer["rx_bytes"]), peer

    for w in warnings:
        t = stall if w["INTERFACE"] == stall.name else tenant
        assert (w["IFINDEX"], w["WGNAPID_PEER"]) == (str(t.ifindex), t.pub_peer)
        assert w["PRIORITY"] == "4" and "CVE-2026-52945" in w["MESSAGE"]
        assert int(w["WGNAPID_TX_BYTES"]) > 0 and handshake_bytes(int(w["WGNAPID_RX_BYTES"]))
        if t is tenant:
            assert w["WGNAPID_NETNS"] == str(tenant_ino) and w["WGNAPID_NETNS_NAME"] == TENANT
            assert w["MESSAGE"].endswith(f"[netns {TENANT} {tenant_ino}]"), w["MESSAGE"]
        else:
            assert w["WGNAPID_NETNS_NAME"] == "self" and "[netns" not in w["MESSAGE"]

    # status (JSON and text) and doctor show it (the three commands at once:
    # each needs 10 s or more under TCG).
    out = cli_together(daemon, ("status", "--json"), ("status",), ("doctor", "--json"))
    doc = json.loads(out[0][1])
    assert out[0][0] == 0, out[0]
    assert sorted((p["interface"], p["public_key"]) for p in doc["stalled_peers"]) == sorted(
        [(stall.name, stall.pub_peer), (tenant.name, tenant.pub_peer)])
    text = out[1][1]
    assert out[1][0] == 0 and f"STALLED: {stall.name}" in text and stall.pub_peer in text, out[1]
    assert f"STALLED: {tenant.name} (ifindex {tenant.ifindex}, netns {TENANT} {tenant_ino})" in text, text
    assert out[2][0] == 1, out[2]
    doctor = json.loads(out[2][1])
    assert doctor["ok"] is False
    for t in (stall, tenant):
        assert [p for p in doctor["problems"] if t.name in p and "stalled" in p], doctor["problems"]

    # Data passes again: one recovery notice each, nothing flagged.
    pass_data(stall, tenant)
    passed = time.monotonic()
    reads_before = status()["stall_reads"]
    wait_until(f"{stall.name} recovered", lambda: not flagged(), 300, interval=0.25)
    reads = status()["stall_reads"] - reads_before
    record_property("pass_to_recovered_s", round(time.monotonic() - passed, 1))
    record_property("pass_to_recovered_reads", reads)
    assert reads <= 2, f"recovered at the {reads}th read after the drop rule went"
    guestlib.journal_sync()
    entries = [e for e in daemon.journal() if int(e["__REALTIME_TIMESTAMP"]) >= since_us]
    by_id = {}
    for e in entries:
        by_id.setdefault(e.get("MESSAGE_ID"), []).append(e)
    recovered = by_id.get(MESSAGE_IDS["peer-stall-recovered"], [])
    assert sorted((e["INTERFACE"], e["WGNAPID_PEER"]) for e in recovered) == sorted(
        [(stall.name, stall.pub_peer), (tenant.name, tenant.pub_peer)])
    assert len(by_id.get(MESSAGE_IDS["peer-stalled"], [])) == 2  # never a line per window
    assert not by_id.get(MESSAGE_IDS["peer-stall-forgotten"])
    assert daemon.alive() and "Traceback" not in daemon.stderr(), daemon.stderr()
    stopped = daemons.stop()
    assert stopped.returncode == 0


def test_w03_stall_read_of_1000_peers(guest_ready, record_property, monkeypatch):
    """The real genl query the stall watch makes, on a link with 1,000 peers:
    every peer comes back once with its counters (the reply spans many
    messages), and how long one read (query, decode, judge) takes here (TCG: 10-20x slower than a
    real machine; a figure, not a goal)."""
    import base64
    import resource

    allow_slow(monkeypatch)
    from wgnapid.stallwatch import Detector, WireGuardReader

    name = f"kc{TOKEN}"
    keys = [base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(1000)]
    conf = "".join(f"[Peer]\nPublicKey = {k}\nAllowedIPs = 10.216.{i // 250}.{i % 250 + 1}/32\n"
                   f"Endpoint = 10.217.0.1:{20000 + i}\n\n" for i, k in enumerate(keys))
    path = os.path.join(tempfile.mkdtemp(prefix=f"i14conf{TOKEN}-"), "peers.conf")
    with open(path, "w") as f:
        f.write(conf)
    run("ip", "link", "add", name, "type", "wireguard")
    try:
        t0 = time.monotonic()
        run("wg", "addconf", name, path)
        record_property("add_1000_peers_s", round(time.monotonic() - t0, 1))
        ifindex = int((guestlib.SYSFS_NET / name / "ifindex").read_text())
        from wgnapid.netns import NetNamespace

        ns = NetNamespace.current()  # the guest's own: the link is here
        reader, det = WireGuardReader(), Detector()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        times = []
        try:
            for i in range(2):
                c0, w0 = time.process_time(), time.monotonic()
                samples = reader.read(ns, name, ifindex)
                det.observe(samples, [(ns.id.ino, ifindex)], 1000.0 + 30 * i, time.time())
                times.append((time.process_time() - c0, time.monotonic() - w0))
        finally:
            reader.close()
            ns.close()
        assert sorted(s.public_key for s in samples) == sorted(keys)
        assert all(s.rx_bytes == 0 and s.tx_bytes == 0 and s.last_handshake == 0 for s in samples)
        cpu, wall = times[1]  # the second read: the detector has its baseline
        record_property("read_1000_peers_cpu_s", round(cpu, 3))
        record_property("read_1000_peers_wall_s", round(wall, 3))
        record_property("maxrss_growth_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0)
        print(f"one read of 1,000 peers under TCG: {cpu:.3f} s CPU, {wall:.3f} s wall")
    finally:
        run("ip", "link", "del", name, check=False)
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
