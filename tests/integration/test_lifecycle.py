"""Reload (SIGHUP) with good and broken policies, and stop/start reconciling."""

from __future__ import annotations


from wgnapid.log import MESSAGE_IDS
from wgtest import assert_clean_log, wait_journal, wait_until, write_policy

SIGTERM_BOUND = 1.0  # seconds (documented: SIGTERM exits within ~1 s)
MARGIN = 1.5


def test_sighup_good_policy_switches_rule(journald, netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml", resync_interval=30)
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    d = daemon_factory(policy, log_target="journal").start()
    assert netns.threaded("va0") == 1

    write_policy(policy, resync_interval=30, rules=[("veths", ["veth"], ["va*"], "off")])
    reloading, _ = d.reload()
    assert any(l.startswith("MONOTONIC_USEC=") and l[15:].isdigit() for l in reloading.split("\n")), reloading
    # The reload re-lists before READY=1: the new policy is in force by then.
    assert netns.threaded("va0") == 0
    d.wait_notify("STATUS=0 threaded, 0 waiting for a peer, 1 off", timeout=10)
    assert d.alive()

    entries = wait_journal(d, lambda e: any(x["MESSAGE_ID"] == MESSAGE_IDS["reloaded"] for x in e)
                           and any(x.get("WGNAPID_STATE") == "off" for x in e), "the reloaded and off entries")
    reloaded = [e for e in entries if e["MESSAGE_ID"] == MESSAGE_IDS["reloaded"]]
    assert len(reloaded) == 1 and str(policy) in reloaded[0]["MESSAGE"], reloaded
    assert [e["WGNAPID_STATE"] for e in entries if e.get("INTERFACE") == "va0"] == ["threaded", "off"]
    rc, _ = d.stop()
    assert rc == 0


BROKEN = [
    # (what, policy text, what the error line must name besides the file)
    ("bad value", '[[rules]]\nname = "veths"\nkinds = ["veth"]\ninterfaces = ["va*"]\nthreaded = "sometimes"\n',
     "rules[0].threaded"),
    ("unknown key", '[daemon]\nresync_intervall = 5\n', "daemon.resync_intervall"),
    ("TOML syntax", '[daemon]\nresync_interval = \n', "line 2"),
]


def test_sighup_broken_policy_keeps_running_policy(journald, netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml", resync_interval=1)
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    d = daemon_factory(policy, log_target="journal").start()
    assert netns.threaded("va0") == 1

    for n, (what, text, key) in enumerate(BROKEN, 1):
        policy.write_text(text)
        d.reload()
        assert d.alive(), what
        entries = wait_journal(
            d, lambda e: len([x for x in e if x["MESSAGE_ID"] == MESSAGE_IDS["reload-failed"]]) >= n,
            f"the reload-failed entry for {what}")
        failed = [e for e in entries if e["MESSAGE_ID"] == MESSAGE_IDS["reload-failed"]]
        assert len(failed) == n, [e["MESSAGE"] for e in failed]  # one line per error
        msg = failed[-1]["MESSAGE"]
        assert failed[-1]["PRIORITY"] == "3", failed[-1]
        assert str(policy) in msg and key in msg, f"{what}: {msg}"
        assert "\n" not in msg
        # The running policy still holds: the link stays threaded and drift is
        # still re-asserted (the broken "sometimes"/"off" never applied).
        assert netns.threaded("va0") == 1, what
        d.barrier("va0")

    assert not [e for e in entries if e["MESSAGE_ID"] == MESSAGE_IDS["reloaded"]]
    # A link that appears now is handled by the running policy too.
    netns.veth("va1", "vb1")
    netns.make_settable("va1")
    wait_until(lambda: netns.threaded("va1") == 1, 5, "va1 threaded under the kept policy")
    rc, _ = d.stop()
    assert rc == 0


def test_restart_reconciles_before_ready(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml", resync_interval=30, rules=[
        ("veths", ["veth"], ["va*"], "on"), ("offs", ["veth"], ["vo*"], "off")])
    for dev, peer in (("va0", "pa0"), ("vo0", "po0")):
        netns.veth(dev, peer)
        netns.make_settable(dev)
    netns.set_threaded("vo0", 1)
    d = daemon_factory(policy).start()
    assert netns.values("va0", "vo0") == {"va0": 1, "vo0": 0}
    status_file = d.status_path()
    assert status_file.exists()

    rc, seconds = d.stop()
    print(f"SIGTERM to exit: {seconds * 1000:.0f} ms")
    assert rc == 0
    assert seconds < SIGTERM_BOUND + MARGIN, f"took {seconds:.2f} s to exit after SIGTERM"
    d.wait_notify("STOPPING=1", after=0, timeout=1)
    assert not status_file.exists(), "the status file outlived the daemon"

    # While it is down: undo its work, and add a link it has never seen.
    netns.set_threaded("va0", 0)
    netns.set_threaded("vo0", 1)
    netns.veth("va1", "pa1")
    netns.make_settable("va1")
    d.start()
    # Converged at READY=1, not some time after it.
    assert netns.values("va0", "va1", "vo0") == {"va0": 1, "va1": 1, "vo0": 0}
    assert {l["name"]: l["state"] for l in d.status_file()["links"] if l["rule"]} == {
        "va0": "threaded", "va1": "threaded", "vo0": "off"}
    rc, seconds = d.stop()
    print(f"SIGTERM to exit (second run): {seconds * 1000:.0f} ms")
    assert rc == 0
    assert_clean_log(d)


def test_sighup_switching_source_keeps_seeing_events(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml", source="netlink", resync_interval=60)
    d = daemon_factory(policy).start()
    for n, source in enumerate(("udev", "netlink"), 1):
        write_policy(policy, source=source, resync_interval=60)
        d.reload()
        # The published view follows the reload (at most a second later).
        wait_until(lambda: (d.status_file() or {}).get("source") == source, 5,
                   f"the status file to show source {source}")
        # A new link is found through the new source's events (resync is 60 s away).
        netns.veth(f"va{n}", f"vb{n}")
        netns.make_settable(f"va{n}")
        wait_until(lambda: netns.threaded(f"va{n}") == 1, 5, f"va{n} threaded after switching to {source}")
    assert d.alive()
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)
