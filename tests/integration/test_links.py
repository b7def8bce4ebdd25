"""The daemon against real veth links: waiting → threaded, policy rules, drift."""

from __future__ import annotations

import os
import time

import pytest

from wgtest import assert_clean_log, napi_threads, wait_until, write_policy

MARGIN = 4.0  # seconds on top of a documented bound; the machine is shared


@pytest.mark.parametrize("source", ["netlink", "udev"])
def test_veth_waits_until_settable_then_threaded(netns, daemon_factory, tmp_path, source):
    pending_max_delay = 1
    # A long resync: convergence must come from events and the pending retry timer.
    policy = write_policy(tmp_path / "p.toml", source=source, resync_interval=60,
                          pending_max_delay=pending_max_delay)
    netns.veth("va0", "vb0")  # before the daemon: found by the start-up listing
    d = daemon_factory(policy).start()

    doc = d.status_file()
    assert doc is not None and doc["source"] == source
    assert doc["pid"] == d.pid
    assert d.link_state("va0") == "waiting", doc
    assert d.link_state("vb0") == "unmatched", doc
    assert netns.threaded("va0") == 0
    d.wait_notify("STATUS=0 threaded, 1 waiting for a peer")

    netns.veth("va1", "vb1")  # after READY=1: found through an event
    wait_until(lambda: d.link_state("va1") == "waiting", 10, "va1 waiting in the status file")
    assert netns.threaded("va1") == 0

    for dev in ("va0", "va1"):
        # Up first, then GRO: the second step emits no uevent, so with the udev
        # source only the pending retry timer can notice it.
        d.ns.ip("link", "set", dev, "up")
        t0 = time.monotonic()
        netns.run("ethtool", "-K", dev, "gro", "on")
        wait_until(lambda: netns.threaded(dev) == 1, pending_max_delay + MARGIN, f"{dev} threaded=1")
        print(f"{source}: {dev} threaded {time.monotonic() - t0:.2f} s after GRO on")

        threads = wait_until(lambda: napi_threads(dev), 5, f"a napi/{dev}-N kernel thread")
        for pid, comm in threads:
            assert comm.startswith(f"napi/{dev}-")
            with open(f"/proc/{pid}/status") as f:
                assert "PPid:\t2\n" in f.read()

    d.wait_notify("STATUS=2 threaded, 0 waiting for a peer", timeout=10)
    wait_until(lambda: d.link_state("va0") == d.link_state("va1") == "threaded", 10,
               "both links threaded in the status file")
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)
    # One line per state change, not one per retry.
    for dev in ("va0", "va1"):
        mine = [l for l in d.log_lines() if l.split(": ")[2:3] == [dev]]
        assert [l.split(": ")[3].split(":")[0].split(" [")[0] for l in mine] == ["waiting", "threaded NAPI on"], mine


def test_ignored_and_unmatched_links_untouched(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml", resync_interval=1, rules=[
        ("ign", ["veth"], ["vi*"], "ignore"),
        ("veths", ["veth"], ["va*"], "on"),
        # kind matters: a tun called va9 would not match "veths"
    ])
    for dev, peer in (("vi0", "pi0"), ("vi1", "pi1"), ("vu0", "pu0"), ("vu1", "pu1"), ("va0", "pa0")):
        netns.veth(dev, peer)
        netns.make_settable(dev)
    netns.set_threaded("vi1", 1)
    netns.set_threaded("vu1", 1)
    d = daemon_factory(policy).start()
    # The control link proves the daemon acts on this namespace at all.
    assert netns.threaded("va0") == 1

    expect = {"vi0": 0, "vi1": 1, "vu0": 0, "vu1": 1}
    states = {l["name"]: l["state"] for l in d.status_file()["links"]}
    assert states["vi0"] == states["vi1"] == "ignored"
    assert states["vu0"] == states["vu1"] == "unmatched"
    for round_ in range(2):
        d.barrier("va0")
        d.barrier("va0")
        assert netns.values(*expect) == expect, f"round {round_}"
        # Flip them all: still nobody's business.
        expect = {dev: 1 - v for dev, v in expect.items()}
        for dev, v in expect.items():
            netns.set_threaded(dev, v)
    assert d.alive()
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)
    assert not [l for l in d.log_lines() if any(f": {dev}:" in l for dev in expect)], d.log()


def _kernel_at_least(major: int, minor: int) -> bool:
    rel = os.uname().release.split(".")
    return (int(rel[0]), int(rel[1].split("-")[0])) >= (major, minor)


def test_rule_off_writes_back_zero(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml", resync_interval=1, rules=[("offs", ["veth"], ["vo*"], "off")])
    netns.veth("vo0", "po0")
    netns.make_settable("vo0")
    netns.set_threaded("vo0", 1)
    wait_until(lambda: napi_threads("vo0"), 5, "napi/vo0 thread after writing 1")

    d = daemon_factory(policy).start()
    # READY=1 comes after the first full reconcile.
    assert netns.threaded("vo0") == 0
    assert d.link_state("vo0") == "off"
    d.wait_notify("STATUS=0 threaded, 0 waiting for a peer, 1 off", timeout=10)
    if _kernel_at_least(6, 17):  # writing 0 stops the kthreads from 6.17 on
        wait_until(lambda: not napi_threads("vo0"), 10, "napi/vo0 threads to stop")

    # A link that appears later, and is set to 1 behind the daemon's back.
    netns.veth("vo1", "po1")
    netns.make_settable("vo1")
    wait_until(lambda: d.link_state("vo1") == "off", 10, "vo1 off in the status file")
    netns.set_threaded("vo1", 1)
    wait_until(lambda: netns.threaded("vo1") == 0, 1 + MARGIN, "vo1 written back to 0")
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)
    reasserted = [l for l in d.log_lines() if "vo1: re-asserted threaded=0" in l]
    assert len(reasserted) == 1, d.log()


def test_drift_is_reasserted_within_resync_interval(netns, daemon_factory, tmp_path):
    resync_interval = 1
    policy = write_policy(tmp_path / "p.toml", resync_interval=resync_interval)
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    d = daemon_factory(policy).start()
    assert netns.threaded("va0") == 1

    for i in range(3):
        netns.set_threaded("va0", 0)
        t0 = time.monotonic()
        wait_until(lambda: netns.threaded("va0") == 1, resync_interval + MARGIN, f"drift {i} re-asserted")
        print(f"drift {i} re-asserted after {time.monotonic() - t0:.2f} s")
    assert d.link_state("va0") == "threaded"
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)
    reasserted = [l for l in d.log_lines() if "va0: re-asserted threaded=1 (it had been changed to 0)" in l]
    assert len(reasserted) == 3, d.log()


@pytest.mark.parametrize("source", ["netlink", "udev"])
def test_renamed_links_follow_the_policy(netns, daemon_factory, tmp_path, source):
    """Links are tracked by ifindex; a rename changes which rule matches."""
    policy = write_policy(tmp_path / "p.toml", source=source, resync_interval=60)
    for dev, peer in (("zz0", "pz0"), ("va0", "pa0")):
        netns.veth(dev, peer)
        netns.make_settable(dev)
    d = daemon_factory(policy).start()
    assert netns.values("zz0", "va0") == {"zz0": 0, "va0": 1}

    # Unmatched -> matched: only the rename's event can tell (resync is 60 s away).
    netns.ip("link", "set", "zz0", "down")
    netns.ip("link", "set", "zz0", "name", "va9")
    netns.ip("link", "set", "va9", "up")
    wait_until(lambda: netns.threaded("va9") == 1, 1 + MARGIN, "renamed va9 threaded")
    # Matched -> unmatched: left alone from now on, whatever its value.
    netns.ip("link", "set", "va0", "down")
    netns.ip("link", "set", "va0", "name", "zz1")
    netns.ip("link", "set", "zz1", "up")
    wait_until(lambda: d.link_state("zz1") == "unmatched", 10, "zz1 unmatched in the status file")
    netns.set_threaded("zz1", 0)
    netns.set_threaded("va9", 0)
    d.reload()  # re-lists everything before READY=1
    assert netns.values("zz1", "va9") == {"zz1": 0, "va9": 1}
    names = {l["name"] for l in d.status_file()["links"]}
    assert {"va9", "zz1"} <= names and not {"zz0", "va0"} & names, names
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)
