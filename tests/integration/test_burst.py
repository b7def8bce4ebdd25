"""Bursts of NAPI-bearing links (tun with IFF_NAPI) and links that vanish mid-flight."""

from __future__ import annotations

import collections
import json
import re
import signal
import time

import pytest

from wgtest import assert_clean_log, wait_until, write_policy

N_BURST = 3000
# Measured here: 3,000 tun links fit in the daemon's 4 MiB (SO_RCVBUFFORCE, so 8 MiB)
# event buffer, for both sources; 4,000 overflow both. A frozen daemon must overflow:
N_OVERFLOW = 6000
CONVERGE_TIMEOUT = 120.0  # generous: 2 shared cores; measured values are printed
TUN_RULE = ("tuns", ["tun"], ["t*"], "on")


def _not_threaded(netns, prefix: str, n: int) -> list[str]:
    values = netns.agent.call("read_prefix", prefix=prefix)["values"]
    missing = [f"{prefix}{i}" for i in range(n) if f"{prefix}{i}" not in values]
    assert not missing, f"{len(missing)} tun links vanished: {missing[:5]}"
    return [name for name, v in values.items() if v != 1]


def _per_link_lines(d) -> collections.Counter:
    """How many log lines name each link ("wgnapid: LEVEL: NAME: ...")."""
    counts = collections.Counter()
    for line in d.log_lines():
        parts = line.split(": ", 3)
        if len(parts) >= 3 and parts[0] == "wgnapid":
            counts[parts[2]] += 1
    return counts


def _converge(netns, d, prefix: str, n: int, t0: float, what: str) -> float:
    wait_until(lambda: not _not_threaded(netns, prefix, n) or (not d.alive() and _fail_dead(d)),
               CONVERGE_TIMEOUT, f"all {n} {what} links threaded", interval=0.25)
    return time.monotonic() - t0


def _fail_dead(d):
    raise AssertionError(f"daemon died ({d.proc.returncode}):\n{d.log()[-4000:]}")


@pytest.mark.parametrize("source", ["netlink", "udev"])
def test_burst_of_tun_links_none_missed(netns, daemon_factory, tmp_path, source):
    # A long resync: convergence must come from events (and re-listing after an
    # overflow), not from the periodic timer.
    policy = write_policy(tmp_path / "p.toml", source=source, resync_interval=600, rules=[TUN_RULE])
    d = daemon_factory(policy).start()

    t0 = time.monotonic()
    made = netns.agent.call("tun_create", prefix="tb", count=N_BURST, persist=True)
    elapsed = _converge(netns, d, "tb", N_BURST, t0, source)
    doc = wait_until(lambda: (s := d.status_file()) and s["summary"].get("threaded") == N_BURST and s,
                     30, "the status file to count every link threaded")
    print(f"{source}: {N_BURST} tun links created in {made['seconds']:.2f} s, all threaded "
          f"{elapsed:.2f} s after the burst began; overflows {doc['stats']['overflows']}")
    assert d.alive()
    d.wait_notify(f"STATUS={N_BURST} threaded, 0 waiting for a peer", timeout=30)

    # `status --json` shows the daemon's counters; an overflow (if this burst
    # caused one) is counted and logged once each.
    stats = json.loads(d.cli("status", "--json", check=True).stdout)["daemon"]["stats"]
    assert stats["overflows"] >= doc["stats"]["overflows"]
    overflow_lines = [l for l in d.log_lines() if "event queue overflowed" in l]
    assert len(overflow_lines) == stats["overflows"], overflow_lines

    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)
    counts = _per_link_lines(d)
    on = sum(1 for l in d.log_lines() if re.match(r"wgnapid: info: tb\d+: threaded NAPI on", l))
    assert on == N_BURST, f"{on} 'threaded NAPI on' lines for {N_BURST} links"
    spam = {k: v for k, v in counts.items() if k.startswith("tb") and v > 1}
    assert not spam, f"links logged more than once: {list(spam.items())[:10]}"


@pytest.mark.parametrize("source", ["netlink", "udev"])
def test_overflow_while_stopped_is_handled_by_relisting(netns, daemon_factory, tmp_path, source):
    """The daemon is frozen (SIGSTOP) while thousands of links appear, so its event
    socket must overflow; on SIGCONT it must notice, re-list and miss nothing."""
    policy = write_policy(tmp_path / "p.toml", source=source, resync_interval=600, rules=[TUN_RULE])
    d = daemon_factory(policy).start()
    d.signal(signal.SIGSTOP)
    try:
        netns.agent.call("tun_create", prefix="to", count=N_OVERFLOW, persist=True)
    finally:
        d.signal(signal.SIGCONT)
    t0 = time.monotonic()
    elapsed = _converge(netns, d, "to", N_OVERFLOW, t0, f"{source} (after overflow)")
    doc = wait_until(lambda: (s := d.status_file()) and s["summary"].get("threaded") == N_OVERFLOW and s,
                     30, "the status file to count every link threaded")
    print(f"{source}: {N_OVERFLOW} links threaded {elapsed:.2f} s after SIGCONT; "
          f"overflows {doc['stats']['overflows']}, resyncs {doc['stats']['resyncs']}")
    assert doc["stats"]["overflows"] >= 1, doc["stats"]
    assert d.alive()
    status = json.loads(d.cli("status", "--json", check=True).stdout)
    assert status["daemon"]["stats"]["overflows"] == doc["stats"]["overflows"]
    assert status["summary"].get("threaded") == N_OVERFLOW
    overflow_lines = [l for l in d.log_lines() if "event queue overflowed" in l]
    assert len(overflow_lines) == doc["stats"]["overflows"], overflow_lines
    assert all(l.startswith("wgnapid: warning:") for l in overflow_lines)

    # Still working after the overflow: a new link is picked up through an event.
    netns.agent.call("tun_create", prefix="tafter", count=1)
    wait_until(lambda: netns.threaded("tafter0") == 1, 10, "a link created after the overflow")
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)


@pytest.mark.parametrize("source", ["netlink", "udev"])
def test_links_vanishing_mid_processing(netns, daemon_factory, tmp_path, source):
    """Hundreds of links created and deleted in tight loops while the daemon works
    on them: no crash, no error entries, at most one line per state per link."""
    policy = write_policy(tmp_path / "p.toml", source=source, resync_interval=1, pending_max_delay=1, rules=[
        TUN_RULE, ("veths", ["veth"], ["v*"], "on"),
    ])
    d = daemon_factory(policy).start()

    t0 = time.monotonic()
    tun = netns.agent.call("tun_churn", prefix="tc", count=25, rounds=6)
    # veth pairs: created down (so "waiting", retried on a timer), some set up, deleted.
    batch = []
    for r in range(5):
        for i in range(20):
            batch += [f"link add vc{r}x{i} type veth peer name wc{r}x{i}"]
            if i % 2:
                batch += [f"link set vc{r}x{i} up"]
        batch += [f"link del vc{r}x{i}" for i in range(20)]
    netns.ip_batch(batch)
    # And links that live just long enough to be retried a few times.
    netns.ip_batch([f"link add vr{i} type veth peer name wr{i}" for i in range(50)])
    wait_until(lambda: sum(1 for l in (d.status_file() or {}).get("links", []) if l["name"].startswith("vr")) == 50,
               20, "the vr links in the status file")
    netns.ip_batch([f"link del vr{i}" for i in range(50)])
    print(f"churn ({source}): {tun['created']} tun links in {tun['seconds']:.2f} s, then 150 veth pairs; "
          f"{time.monotonic() - t0:.2f} s in all")

    # Still alive and still working.
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    wait_until(lambda: netns.threaded("va0") == 1, 10, "a new link threaded after the churn")
    left = wait_until(
        lambda: (doc := d.status_file()) and not [l for l in doc["links"] if l["name"][:2] in ("tc", "vc", "wc", "vr")]
        and doc, 20, "every churned link forgotten in the status file")
    assert all(n > 0 for n in left["summary"].values()), left["summary"]
    assert d.alive()
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)

    per_link: dict[str, list[str]] = collections.defaultdict(list)
    for line in d.log_lines():
        parts = line.split(": ")
        if len(parts) >= 4 and parts[0] == "wgnapid" and parts[2][:2] in ("tc", "vc", "vr"):
            per_link[parts[2]].append(parts[3].split(" [")[0])
    assert per_link, "no per-link log lines at all"
    print("per-link log patterns:", collections.Counter(" / ".join(m) for m in per_link.values()).most_common())
    noisy = {name: msgs for name, msgs in per_link.items() if len(msgs) > 2 or len(set(msgs)) != len(msgs)}
    assert not noisy, f"{len(noisy)} links logged too much, e.g. {list(noisy.items())[:5]}"
