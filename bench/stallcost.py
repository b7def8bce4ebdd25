"""What the stall watch (wgnapid/stallwatch.py) costs per window for N peers.

    python -m bench.stallcost [PEERS]      (default 1000)

The host has no WireGuard, so the genl query cannot be made here. What is
measured: decoding the WG_CMD_GET_DEVICE reply of one link with PEERS peers
(constructed with pyroute2's own wgmsg encoder, laid out as the kernel sends
it: 20 peers a message, each with public and preshared key, IPv4 endpoint,
last handshake, keepalive interval, rx/tx bytes, protocol version and one
allowed IP), taking the samples out of it, and judging them with the
detector: the CPU of one window, and that as % of one core at the default
window (30 s); and the same for 1,000 links of one peer each. Not measured here: the kernel building the reply and the
socket round trip (the kernel tier's w03 times the real query inside the
qemu guest, under TCG).

RSS: the growth of VmRSS from importing pyroute2's WireGuard class (the
daemon imports it for the stall watch, and already did for any WireGuard link
waiting for its first peer), and from the reads themselves (the detector
holding PEERS peers, plus what decoding a reply leaves allocated), measured
after the constructed replies were built. Prints one JSON line. Run under each
virtualenv, so both pyroute2 versions are measured.
"""

from __future__ import annotations

import base64
import gc
import json
import statistics
import sys
import time

PER_MESSAGE = 20
WINDOW = 30.0


def vmrss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def build_reply(peers: int, ifindex: int, round_: int, base: int = 0) -> list[bytes]:
    """The reply messages (bytes, netlink header included) for one read."""
    from pyroute2.netlink.generic.wireguard import wgmsg

    out = []
    for first in range(base, base + peers, PER_MESSAGE):
        batch = []
        for i in range(first, min(base + peers, first + PER_MESSAGE)):
            key = base64.b64encode(i.to_bytes(4, "big") * 8).decode()
            batch.append({"attrs": [
                ["WGPEER_A_PUBLIC_KEY", {"value": key}],
                ["WGPEER_A_PRESHARED_KEY", {"value": base64.b64encode(bytes(32)).decode()}],
                ["WGPEER_A_ENDPOINT", {"addr": f"192.0.2.{i % 250 + 1}", "port": 51820}],
                ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 1_700_000_000 + round_ * 30,
                                                  "tv_nsec": 0}],
                ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 0],
                ["WGPEER_A_TX_BYTES", 10**6 + round_ * 19_200 + i],
                ["WGPEER_A_RX_BYTES", 10**6 + round_ * 19_200 + i],
                ["WGPEER_A_PROTOCOL_VERSION", 1],
            ]})
        msg = wgmsg()
        msg["cmd"] = 0
        msg["version"] = 1
        msg["header"]["flags"] = 2  # NLM_F_MULTI
        msg["attrs"] = [["WGDEVICE_A_IFINDEX", ifindex], ["WGDEVICE_A_IFNAME", "wg0"],
                        ["WGDEVICE_A_PEERS", batch]]
        msg.encode()
        out.append(bytes(msg.data))
    return out


def main(argv: list[str]) -> int:
    peers = int(argv[0]) if argv else 1000
    out: dict = {"peers": peers, "python": sys.version.split()[0]}
    rss0 = vmrss_kib()
    import pyroute2
    import pyroute2.netlink  # noqa: F401  (what the daemon imports: WireGuardReader._import)
    from pyroute2.netlink.generic.wireguard import wgmsg

    rss1 = vmrss_kib()
    from wgnapid.stallwatch import Detector, samples_from_messages

    out["pyroute2"] = pyroute2.__version__
    rounds = 9
    replies = [build_reply(peers, 7, r) for r in range(rounds + 1)]
    out["reply_bytes"] = sum(len(m) for m in replies[0])
    out["messages"] = len(replies[0])

    det = Detector()
    decode_s, judge_s = [], []
    gc.collect()
    rss_built = vmrss_kib()  # the constructed replies are held from here on
    for r, reply in enumerate(replies):
        t0 = time.process_time()
        msgs = []
        for data in reply:
            msg = wgmsg(data)
            msg.decode()
            msgs.append(msg)
        samples = samples_from_messages(msgs, "wg0", 7)
        t1 = time.process_time()
        changes = det.observe(samples, [(0, 7)], 1000.0 + r * WINDOW, 1_700_000_000 + r * WINDOW)
        t2 = time.process_time()
        assert len(samples) == peers and not changes
        if r:  # the first read only fills the detector (baseline)
            decode_s.append(t1 - t0)
            judge_s.append(t2 - t1)
    rss2 = vmrss_kib()
    per_window = statistics.median(d + j for d, j in zip(decode_s, judge_s))

    # The same peers on 1,000 links of one peer each (a node with a tunnel per
    # peer): one query and one detector call per link.
    links = [[build_reply(1, 100 + i, r, base=i)[0] for i in range(peers)] for r in range(4)]
    det = Detector()
    per_link_window = []
    for r, reply in enumerate(links):
        t0 = time.process_time()
        for i, data in enumerate(reply):
            msg = wgmsg(data)
            msg.decode()
            samples = samples_from_messages([msg], "wg", 100 + i)
            det.observe(samples, [(0, 100 + i)], 1000.0 + r * WINDOW, 1_700_000_000 + r * WINDOW)
        if r:
            per_link_window.append(time.process_time() - t0)
    out["links_window_cpu_ms"] = round(statistics.median(per_link_window) * 1e3, 2)
    out.update(
        decode_ms=round(statistics.median(decode_s) * 1e3, 2),
        judge_ms=round(statistics.median(judge_s) * 1e3, 2),
        window_cpu_ms=round(per_window * 1e3, 2),
        core_percent_at_30s=round(per_window / WINDOW * 100, 3),
        rss_kib_before=rss0, rss_kib_pyroute2=rss1 - rss0, rss_kib_watch=rss2 - rss_built,
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
