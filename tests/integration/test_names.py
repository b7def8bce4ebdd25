"""Link names as the kernel handles them (issue 9, input 3), against the real kernel:
the kernel's rule itself, and links named with a byte that is not UTF-8 (0xff)
or with U+2003 EM SPACE through apply, status, run and the journal."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from wgtest import run_cli, wait_journal, wait_until, write_policy

FF = b"wg\xff".decode("utf-8", "surrogateescape")  # how wgnapid (and Python's os) holds it
EM = "x\u2003y"
ODD = [("odd", ["veth"], ["wg*", "x\u2003*"], "on")]


def _kernel_table():
    spec = importlib.util.spec_from_file_location(
        "unit_test_ifname", Path(__file__).resolve().parents[1] / "unit" / "test_ifname.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.KERNEL_TABLE


# RTM_NEWLINK for a veth named exactly these bytes, through a raw socket inside the
# namespace (ip(8) refuses some names itself, before the kernel sees them).
_PROBE = r'''
import json, os, socket, struct, sys
def rta(t, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, t) + payload + b"\0" * ((4 - n % 4) % 4)
out = {}
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
for seq, hexname in enumerate(json.loads(sys.argv[1]), 1):
    name = bytes.fromhex(hexname)
    kind = rta(1, b"veth\0")  # IFLA_INFO_KIND
    body = struct.pack("=BxHiII", 0, 0, 0, 0, 0) + rta(3, name + b"\0") + rta(18 | 0x8000, kind)
    hdr = struct.pack("=IHHII", 16 + len(body), 16, 0x1 | 0x4 | 0x400 | 0x200, seq, 0)  # NEWLINK, ACK|EXCL|CREATE
    s.send(hdr + body)
    reply = s.recv(65536)
    (err,) = struct.unpack_from("=i", reply, 16)
    out[hexname] = -err
print(json.dumps(out))
'''


def test_the_name_rule_is_the_running_kernels(netns):
    table = _kernel_table()
    res = netns.run("python3", "-c", _PROBE, json.dumps([raw.hex() for raw, _ in table]))
    errors = json.loads(res.stdout)
    from wgnapid import ifname

    for raw, accepted in table:
        assert (errors[raw.hex()] == 0) is accepted, (raw, errors[raw.hex()])
        assert ifname.valid(raw) is accepted, raw


def _odd_links(netns):
    for name, peer in ((FF, "pff"), (EM, "pem")):
        netns.veth(name, peer)
        netns.make_settable(name)
    return {name: netns.ifindex(name) for name in (FF, EM)}


def test_apply_and_status_handle_such_names(netns, tmp_path):
    policy = write_policy(tmp_path / "p.toml", rules=ODD)
    idx = _odd_links(netns)
    res = run_cli(netns, policy, "--log-target", "stderr", "apply", "--json")
    assert res.returncode == 0, res
    rows = {bytes.fromhex(r["name_hex"]): r for r in json.loads(res.stdout)["links"]}
    assert set(rows) == {b"wg\xff", EM.encode()}, rows
    for raw, row in rows.items():
        assert row["state"] == "threaded" and row["changed"] is True, row
    assert rows[EM.encode()]["name"] == EM and rows[b"wg\xff"]["name"] == "wg\\xff"
    assert rows[b"wg\xff"]["ifindex"] == idx[FF]
    assert netns.values(FF, EM) == {FF: 1, EM: 1}

    text = run_cli(netns, policy, "status", check=True).stdout
    assert any(l.startswith("wg\\xff ") and "threaded" in l for l in text.splitlines()), text
    assert any(l.startswith("x\\u2003y ") and "threaded" in l for l in text.splitlines()), text
    doc = json.loads(run_cli(netns, policy, "status", "--json", check=True).stdout)
    assert {bytes.fromhex(r["name_hex"]) for r in doc["links"] if r["rule"]} == {b"wg\xff", EM.encode()}


@pytest.mark.parametrize("source", ["netlink", "udev"])
def test_the_daemon_starts_and_threads_such_names(journald, netns, daemon_factory, tmp_path, source):
    policy = write_policy(tmp_path / "p.toml", source=source, resync_interval=60, rules=ODD)
    netns.veth(FF, "pff")  # before start-up: the listing, and the sysfs view check
    d = daemon_factory(policy, log_target="journal").start()
    assert d.link_state("wg\\xff") == "waiting"
    netns.make_settable(FF)
    wait_until(lambda: netns.threaded(FF) == 1, 10, "wg\\xff threaded")
    netns.veth(EM, "pem")  # after: an event (udev: no DEVTYPE for a veth, asked of rtnetlink)
    netns.make_settable(EM)
    wait_until(lambda: netns.threaded(EM) == 1, 10, "x\\u2003y threaded")
    wait_until(lambda: d.link_state(EM) == "threaded", 10, "x\\u2003y threaded in the status file")

    entries = wait_journal(d, lambda e: sum(x.get("WGNAPID_STATE") == "threaded" for x in e) >= 2,
                           "two threaded entries")
    rc, _ = d.stop()
    assert rc == 0
    threaded = [e for e in entries if e.get("WGNAPID_STATE") == "threaded"]
    # journalctl -o json gives a field that is not UTF-8 as a list of bytes: exact.
    interfaces = {bytes(e["INTERFACE"]) if isinstance(e["INTERFACE"], list) else e["INTERFACE"].encode()
                  for e in threaded}
    assert interfaces == {b"wg\xff", EM.encode()}, threaded
    assert {e["MESSAGE"].split(":")[0] for e in threaded} == {"wg\\xff", "x\\u2003y"}
    assert all(e["WGNAPID_NETNS"] == str(netns.inode) for e in threaded)
