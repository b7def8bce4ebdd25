"""daemon.namespaces = "all": one daemon for every network namespace (issue 10).

Every test runs the daemon in a sandbox (nstest.py) whose PID, mount and
network namespaces are its own, so the daemon can only find namespaces this
test made; the rules also name them by unique globs. Links are veth (settable
once up with GRO on) and tun with IFF_NAPI (settable at once).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from nstest import Sandbox, SandboxDaemon, write_ns_policy
from wgtest import WGNAPID, assert_clean_log, wait_until

# Generous (2 shared CPUs, qemu next door); measured times are printed.
SETTLE = 30.0


@pytest.fixture
def sandbox(tmp_path):
    sb = Sandbox(tmp_path)
    try:
        yield sb
    finally:
        sb.close()


@pytest.fixture
def sb_daemon(sandbox, tmp_path):
    made: list[SandboxDaemon] = []

    def make(policy, **kw) -> SandboxDaemon:
        d = SandboxDaemon(sandbox, policy, tmp_path / f"daemon{len(made)}", **kw)
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            d.close()


def rules_for(sb: Sandbox, *extra_netns: str, veth="on", tun="on"):
    globs = [f"{sb.prefix}-*", *extra_netns]
    return [("veths", ["veth"], ["va*"], globs, veth), ("tuns", ["tun"], ["t*"], globs, tun)]


def links_by_ns(d) -> dict[tuple[str, str], dict]:
    doc = d.status_file() or {}
    return {(l.get("netns_name"), l["name"]): l for l in doc.get("links", [])}


def state_of(d, netns_name: str, link: str) -> str | None:
    row = links_by_ns(d).get((netns_name, link))
    return row and row["state"]


def test_named_and_unnamed_namespaces_before_and_after_start(sandbox, sb_daemon, tmp_path):
    a = sandbox.add_named("a")
    a.veth("va0", "vb0")
    a.make_settable("va0")
    a.agent.call("tun_create", prefix="t", count=2)
    u = sandbox.add_unnamed()
    u.veth("va0", "vb0")
    u.make_settable("va0")
    u.agent.call("tun_create", prefix="t", count=1)
    u2 = sandbox.add_unnamed()  # made before start, gets its links after
    policy = write_ns_policy(tmp_path / "p.toml", rules_for(sandbox, u.name, u2.name), resync_interval=2)

    d = sb_daemon(policy).start()
    # Converged before READY=1, in every namespace.
    assert a.values("va0", "vb0", "t0", "t1") == {"va0": 1, "vb0": 0, "t0": 1, "t1": 1}
    assert u.values("va0", "t0") == {"va0": 1, "t0": 1}
    doc = wait_until(d.status_file, 10, "the status file")
    names = {n["name"]: n["netns"] for n in doc["namespaces"]}
    assert names[a.name] == sandbox.ino(f"/run/netns/{a.name}")
    assert names[u.name] == u.ino
    assert "self" in names

    # Links made after start, in namespaces that existed: events in each namespace.
    a.agent.call("tun_create", prefix="t", count=1, start=2)
    u2.agent.call("tun_create", prefix="t", count=1)
    u.veth("va1", "vb1")
    u.make_settable("va1")
    wait_until(lambda: a.threaded("t2") == 1, SETTLE, "t2 in the named namespace")
    wait_until(lambda: u2.threaded("t0") == 1, SETTLE, "t0 in the second unnamed namespace")
    wait_until(lambda: u.threaded("va1") == 1, SETTLE, "va1 in the unnamed namespace")

    # A namespace made after start: a named one is seen through inotify...
    t0 = time.monotonic()
    b = sandbox.add_named("b")
    b.agent.call("tun_create", prefix="t", count=1)
    wait_until(lambda: b.threaded("t0") == 1, SETTLE, "t0 in a namespace named after start")
    print(f"named namespace made after start: its tun threaded {time.monotonic() - t0:.2f} s later")
    # ... and a veth made settable later in it, by events there.
    b.veth("va0", "vb0")
    wait_until(lambda: state_of(d, b.name, "va0") == "waiting", SETTLE, "va0 waiting in b")
    b.make_settable("va0")
    wait_until(lambda: b.threaded("va0") == 1, SETTLE, "va0 in b once settable")

    # status and apply (text and JSON) show each link's namespace by name and inode.
    st = json.loads(d.cli("status", "--json", check=True).stdout)
    rows = {(r["netns_name"], r["name"]): r for r in st["links"]}
    assert rows[(a.name, "t0")]["state"] == "threaded"
    assert rows[(a.name, "t0")]["netns"] == names[a.name]
    assert rows[(u.name, "va0")]["netns"] == u.ino
    assert rows[(b.name, "va0")]["state"] == "threaded"
    text = d.cli("status", check=True).stdout
    assert a.name in text and u.name in text and str(u.ino) in text, text
    ap = json.loads(d.cli("apply", "--json", check=True).stdout)
    arows = {(r["netns_name"], r["name"]): r for r in ap["links"]}
    assert arows[(u.name, "t0")]["netns"] == u.ino and arows[(u.name, "t0")]["state"] == "threaded"
    assert not any(r["changed"] for r in ap["links"]), ap
    doc = json.loads(d.cli("doctor", "--json", check=True).stdout)
    assert doc["ok"] and doc["namespaces"] == "all", doc["problems"]
    assert doc["privileges"]["cap_sys_admin"] and doc["namespaces_seen"] >= 5, doc  # self, a, b, u, u2
    assert doc["links"].get("threaded", 0) >= 8, doc["links"]
    assert d.alive()
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)


def test_link_moved_between_namespaces_follows_with_and_without_rename(sandbox, sb_daemon, tmp_path):
    a = sandbox.add_named("a")
    off = sandbox.add_named("off")
    rules = [("off-here", ["veth"], ["*"], [off.name], "off"),
             ("veths", ["veth"], ["va*", "vr*"], [f"{sandbox.prefix}-*"], "on")]
    policy = write_ns_policy(tmp_path / "p.toml", rules, resync_interval=600)
    for dev, peer in (("va1", "vb1"), ("va2", "vb2")):
        a.veth(dev, peer)
        a.make_settable(dev)
    d = sb_daemon(policy).start()
    assert a.values("va1", "va2") == {"va1": 1, "va2": 1}

    # Moved as it is: the kernel keeps the flag; the daemon reads it in the new
    # namespace and applies that namespace's rule (off).
    a.ip("link", "set", "va1", "netns", off.name)
    off.make_settable("va1")  # a move takes the link down
    wait_until(lambda: off.threaded("va1") == 0, SETTLE, "va1 turned off by the rule of its new namespace")
    wait_until(lambda: state_of(d, off.name, "va1") == "off", SETTLE, "va1 shown off in its new namespace")
    assert state_of(d, a.name, "va1") is None

    # Moved and renamed in one command.
    a.ip("link", "set", "va2", "netns", off.name, "name", "vr2")
    off.make_settable("vr2")
    wait_until(lambda: off.threaded("vr2") == 0, SETTLE, "vr2 (was va2) off in its new namespace")
    wait_until(lambda: state_of(d, off.name, "vr2") == "off", SETTLE, "vr2 in the status")
    # And back, renamed again: on under the first namespace's rule.
    off.ip("link", "set", "vr2", "netns", a.name, "name", "vr3")
    a.make_settable("vr3")
    wait_until(lambda: a.threaded("vr3") == 1, SETTLE, "vr3 threaded again back in the first namespace")
    assert d.alive()
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)


def test_namespace_deleted_while_links_wait_is_released_quietly(sandbox, sb_daemon, tmp_path):
    c = sandbox.add_named("c")
    keep = sandbox.add_named("keep")
    u = sandbox.add_unnamed()
    # va0 in c stays down: waiting (no NAPI). Its peer lives in `keep`, so the
    # peer vanishes only when c is really destroyed: proof the daemon let go.
    c.ip("link", "add", "va0", "type", "veth", "peer", "name", "vpeer", "netns", keep.name)
    u.veth("va0", "vb0")
    policy = write_ns_policy(tmp_path / "p.toml", rules_for(sandbox, u.name), resync_interval=1)
    d = sb_daemon(policy).start()
    wait_until(lambda: state_of(d, c.name, "va0") == "waiting", SETTLE, "va0 waiting in c")
    wait_until(lambda: state_of(d, u.name, "va0") == "waiting", SETTLE, "va0 waiting in the unnamed one")

    c.delete()
    wait_until(lambda: "vpeer" not in keep.agent.call("links")["names"], SETTLE,
               "the namespace destroyed (its veth's peer gone)")
    wait_until(lambda: not any(n == c.name for n, _ in links_by_ns(d)), SETTLE, "c gone from the status")
    u.exit()  # the last process in it exits: found out by the next scan
    wait_until(lambda: not any(n == u.name for n, _ in links_by_ns(d)), SETTLE, "the unnamed one gone")
    assert d.alive()
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)
    lines = d.log_lines()
    for name in (c.name, u.name):
        released = [l for l in lines if f"network namespace {name} " in l and "released" in l]
        assert len(released) == 1, lines
        assert released[0].startswith("wgnapid: info:"), released
    # Quietly: nothing per link of a released namespace.
    assert not [l for l in lines if ": va0: gone" in l], lines


def test_100_namespaces_with_10_links_each_created_at_once(sandbox, sb_daemon, tmp_path):
    policy = write_ns_policy(tmp_path / "p.toml", rules_for(sandbox), resync_interval=600)
    d = sb_daemon(policy).start()
    names = [f"m{i}" for i in range(100)]
    made = sandbox.add_many_named(names)
    feeder = sandbox.add_unnamed()  # an agent in the sandbox that makes tun links anywhere
    t0 = time.monotonic()
    out = feeder.agent.call("tun_in", paths=[f"/run/netns/{ns.name}" for ns in made], prefix="t", count=10)
    assert "error" not in out, out

    def unthreaded():
        res = sandbox.run("ip", "-all", "netns", "exec", "sh", "-c",
                          "for f in /sys/class/net/t*/threaded; do echo \"$f $(cat $f)\"; done")
        values = {}
        ns = None
        for line in res.stdout.splitlines():
            if line.startswith("netns: "):
                ns = line[7:].strip()
            elif line.startswith("/sys/class/net/"):
                path, value = line.split()
                values[(ns, path.split("/")[4])] = value
        want = {(ns.name, f"t{i}") for ns in made for i in range(10)}
        missing = want - set(values)
        assert not missing, f"{len(missing)} links missing: {sorted(missing)[:5]}"
        return [k for k in want if values[k] != "1"]

    wait_until(lambda: not unthreaded(), 120, "1,000 links in 100 namespaces threaded", interval=0.5)
    print(f"100 namespaces x 10 tun links: all threaded {time.monotonic() - t0:.2f} s after creation began "
          f"(creation took {out['seconds']:.2f} s)")
    doc = wait_until(lambda: (s := d.status_file()) and s["summary"].get("threaded") == 1000 and s,
                     30, "the status file to count 1,000 threaded")
    assert len({l["netns"] for l in doc["links"] if l["state"] == "threaded"}) == 100
    assert d.alive()
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)


def test_netns_globs_decide_and_uncovered_namespaces_are_not_entered(sandbox, sb_daemon, tmp_path):
    on, off, other = sandbox.add_named("on"), sandbox.add_named("off"), sandbox.add_named("other")
    u = sandbox.add_unnamed()
    for ns in (on, off, other, u):
        ns.agent.call("tun_create", prefix="t", count=1)
    off.set_threaded("t0", 1)
    other.set_threaded("t0", 1)
    rules = [("on", ["tun"], ["t*"], [on.name, u.name], "on"),
             ("off", ["tun"], ["t*"], [f"{sandbox.prefix}-of?"], "off")]
    policy = write_ns_policy(tmp_path / "p.toml", rules, resync_interval=600)
    d = sb_daemon(policy).start()
    assert (on.threaded("t0"), u.threaded("t0"), off.threaded("t0")) == (1, 1, 0)
    assert other.threaded("t0") == 1  # no rule covers it: left alone
    entered = [l for l in d.log_lines() if "entered" in l]
    assert any(on.name in l for l in entered) and any(u.name in l for l in entered), entered
    assert not any(other.name in l for l in entered), entered
    assert {n["name"] for n in d.status_file()["namespaces"]} == {"self", on.name, off.name, u.name}
    rc, _ = d.stop()
    assert rc == 0


def test_without_cap_sys_admin_all_is_one_line_and_non_zero(sandbox, tmp_path):
    policy = write_ns_policy(tmp_path / "p.toml", rules_for(sandbox))
    for command in (["run"], ["apply"], ["status"], ["doctor"]):
        argv = sandbox.enter_argv(pid=True, net=True) + [
            "setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--",
            WGNAPID, "--config", str(policy), "--log-target", "stderr", *command]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert res.returncode != 0, (command, res.stdout, res.stderr)
        if command == ["doctor"]:
            assert "CAP_SYS_ADMIN" in res.stdout, res.stdout
            continue
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "CAP_SYS_ADMIN" in lines[0] and 'namespaces = "all"' in lines[0], res.stderr
        # It names the drop-in that grants them, and where it is shipped.
        assert "namespaces-all.conf" in lines[0] and "systemd/drop-ins/" in lines[0], lines[0]
        assert (Path(__file__).parents[2] / "systemd" / "drop-ins" / "namespaces-all.conf").is_file()


def test_udev_source_sees_events_inside_entered_namespaces(sandbox, sb_daemon, tmp_path):
    a = sandbox.add_named("a")
    u = sandbox.add_unnamed()
    policy = write_ns_policy(tmp_path / "p.toml", rules_for(sandbox, u.name), resync_interval=600,
                             source="udev")
    d = sb_daemon(policy).start()
    # Made after start, resync far away: only the uevents of each namespace,
    # received on a socket made inside it, can bring these.
    a.agent.call("tun_create", prefix="t", count=1)
    u.veth("va0", "vb0")
    u.make_settable("va0")
    wait_until(lambda: a.threaded("t0") == 1, SETTLE, "t0 in the named namespace (udev)")
    wait_until(lambda: u.threaded("va0") == 1, SETTLE, "va0 in the unnamed namespace (udev)")
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)


def test_journal_names_the_namespace_and_one_entry_per_released_namespace(journald, sandbox, sb_daemon,
                                                                          tmp_path):
    from wgnapid.log import MESSAGE_IDS
    from wgtest import wait_journal

    a = sandbox.add_named("a")
    # Persistent: the links outlive the agent, which a.delete() stops first, and
    # go only with the namespace.
    a.agent.call("tun_create", prefix="t", count=2, persist=True)
    ino = a.inode
    policy = write_ns_policy(tmp_path / "p.toml", rules_for(sandbox), resync_interval=600)
    d = sb_daemon(policy, log_target="journal").start()
    entries = wait_journal(d, lambda e: sum(1 for x in e if x.get("WGNAPID_STATE") == "threaded") >= 2,
                           "two threaded entries")
    threaded = [e for e in entries if e.get("WGNAPID_STATE") == "threaded"]
    assert {(e["INTERFACE"], e["WGNAPID_NETNS_NAME"], e["WGNAPID_NETNS"]) for e in threaded} == {
        ("t0", a.name, str(ino)), ("t1", a.name, str(ino))}
    assert all(a.name in e["MESSAGE"] and str(ino) in e["MESSAGE"] for e in threaded), threaded
    entered = [e for e in entries if e["MESSAGE_ID"] == MESSAGE_IDS["netns-entered"]]
    assert [(e["WGNAPID_NETNS_NAME"], e["WGNAPID_NETNS"]) for e in entered] == [(a.name, str(ino))]

    a.delete()
    entries = wait_journal(d, lambda e: any(x["MESSAGE_ID"] == MESSAGE_IDS["netns-released"] for x in e),
                           "the netns-released entry")
    released = [e for e in entries if e["MESSAGE_ID"] == MESSAGE_IDS["netns-released"]]
    assert len(released) == 1 and released[0]["PRIORITY"] == "6", released
    assert released[0]["WGNAPID_NETNS"] == str(ino)
    # Quietly: no per-link entry for the links that went with it, nothing at warning or worse.
    assert not [e for e in entries if e.get("WGNAPID_STATE") == "gone"], entries
    assert not [e for e in entries if int(e["PRIORITY"]) <= 4], entries
    rc, _ = d.stop()
    assert rc == 0


def _netns_cookie(sock) -> int:
    """SO_NETNS_COOKIE (Linux 5.14+): which network namespace a socket is in."""
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, 71, 8), "little")


def test_wireguard_requests_go_out_inside_the_entered_namespace():
    """The stall watch's and the peer count's generic-netlink socket of an
    entered namespace is made inside it and stays there when the daemon's loop
    thread uses it (pyroute2 0.9's own socket objects would not: docs/DESIGN.md,
    "Stall watch"); a released namespace is never asked in the daemon's own.
    The WireGuard request itself is the guest tier's (w02, w03)."""
    import errno

    from wgnapid.netns import NetNamespace

    holder = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    try:
        path = f"/proc/{holder.pid}/ns/net"
        wait_until(lambda: os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino, 10,
                   "unshare to make its namespace")
        ns = NetNamespace.enter(path, "holder")
        try:
            def cookie_here() -> int:
                with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16) as sock:
                    return _netns_cookie(sock)

            inside, own = ns.in_namespace(cookie_here), cookie_here()
            assert inside != own
            genl = ns.wireguard()
            assert ns.wireguard() is genl  # kept
            assert _netns_cookie(genl.sock) == inside
            assert genl.family_id("nlctrl") == 16  # the controller answers through it
            assert _netns_cookie(genl.sock) == inside  # and it is still the same socket
            with pytest.raises(OSError) as exc:
                genl.device(7)
            # No wireguard family (this host has no module), or, where asking
            # for it loaded one, no link 7 in the fresh namespace.
            assert exc.value.errno in (errno.ENOENT, errno.ENODEV)
            assert ns.peer_count(7) is None
        finally:
            ns.close()
        with pytest.raises(OSError, match="released"):
            ns.wireguard()
    finally:
        holder.kill()
        holder.wait()
