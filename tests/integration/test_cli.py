"""The command line against real links in a test namespace."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from wgtest import WGNAPID, napi_threads, run_cli, write_policy

RULES = [("veths", ["veth"], ["va*"], "on"), ("offs", ["veth"], ["vo*"], "off")]


def _links(netns):
    """va0: settable, 0 (wants on) / va1: down, so not settable (waiting) /
    vo0: settable, 1 (wants off) / vx0: settable, 1, no rule."""
    for dev, peer in (("va0", "pa0"), ("va1", "pa1"), ("vo0", "po0"), ("vx0", "px0")):
        netns.veth(dev, peer)
    for dev in ("va0", "vo0", "vx0"):
        netns.make_settable(dev)
    netns.set_threaded("vo0", 1)
    netns.set_threaded("vx0", 1)
    return {"va0": 0, "va1": 0, "vo0": 1, "vx0": 1}


def _apply(netns, policy, *extra):
    res = run_cli(netns, policy, "--log-target", "stderr", "apply", "--json", *extra)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout)


def test_apply_json_dry_run_then_apply_then_nothing_to_do(netns, tmp_path):
    policy = write_policy(tmp_path / "p.toml", rules=RULES)
    before = _links(netns)

    rc, doc = _apply(netns, policy, "--dry-run")
    assert rc == 0, doc
    assert doc["dry_run"] is True
    rows = {r["name"]: r for r in doc["links"]}
    assert set(rows) == {"va0", "va1", "vo0"}, "unmatched links are not listed"
    for name in rows:
        assert rows[name]["state"] == "pending" and rows[name]["changed"] is False, rows[name]
        assert rows[name]["before"] == rows[name]["after"] == before[name], rows[name]
    assert netns.values(*before) == before, "--dry-run wrote something"

    rc, doc = _apply(netns, policy)
    assert rc == 0, doc
    assert set(doc) >= {"links", "summary"}
    rows = {r["name"]: r for r in doc["links"]}
    assert set(rows) == {"va0", "va1", "vo0"}
    for row in rows.values():  # docs/DESIGN.md, apply --json
        assert set(row) == {"name", "name_hex", "netns", "netns_name", "ifindex", "kind", "rule", "wanted", "before",
                            "after", "changed", "state", "reason"}, row
        assert row["netns_name"] == "self"
        assert row["netns"] == netns.inode
    assert {k: rows["va0"][k] for k in ("rule", "wanted", "before", "after", "changed", "state")} == {
        "rule": "veths", "wanted": "on", "before": 0, "after": 1, "changed": True, "state": "threaded"}
    assert {k: rows["vo0"][k] for k in ("rule", "wanted", "before", "after", "changed", "state")} == {
        "rule": "offs", "wanted": "off", "before": 1, "after": 0, "changed": True, "state": "off"}
    assert rows["va1"]["state"] == "waiting" and rows["va1"]["changed"] is False and rows["va1"]["reason"]
    assert rows["va0"]["kind"] == "veth" and rows["va0"]["ifindex"] == netns.ifindex("va0")
    assert doc["summary"] == {"threaded": 1, "off": 1, "waiting": 1}
    assert netns.values(*before) == {"va0": 1, "va1": 0, "vo0": 0, "vx0": 1}
    assert napi_threads("va0")

    rc, doc = _apply(netns, policy)
    assert rc == 0
    assert [r["name"] for r in doc["links"] if r["changed"]] == [], doc
    rows = {r["name"]: r for r in doc["links"]}
    assert rows["va0"]["before"] == rows["va0"]["after"] == 1
    assert rows["vo0"]["before"] == rows["vo0"]["after"] == 0
    assert netns.values(*before) == {"va0": 1, "va1": 0, "vo0": 0, "vx0": 1}


def test_status_json_without_and_with_daemon(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml", rules=RULES)
    _links(netns)
    runtime = tmp_path / "no-daemon"  # no status file there: no daemon

    res = run_cli(netns, policy, "status", "--json", env={"RUNTIME_DIRECTORY": str(runtime)}, check=True)
    doc = json.loads(res.stdout)
    assert doc["daemon"] is None
    assert doc["kernel"]["verdict"] in ("safe", "risky", "unknown") and doc["kernel"]["release"] == os.uname().release
    rows = {r["name"]: r for r in doc["links"]}
    assert rows["va0"]["state"] == "pending" and rows["va0"]["current"] == 0
    assert rows["vo0"]["state"] == "pending" and rows["vo0"]["current"] == 1
    assert rows["vx0"]["rule"] is None and rows["vx0"]["state"] == "unmatched"
    assert rows["vo0"]["napi_threads"] >= 1  # threaded by _links, napi/vo0-N exists
    assert rows["va0"]["napi_threads"] == 0
    assert {"threaded", "waiting"}.isdisjoint(doc["summary"]), "status wrote something?"

    d = daemon_factory(policy).start()
    res = d.cli("status", "--json", check=True)
    doc = json.loads(res.stdout)
    # docs/DESIGN.md, status --json
    assert set(doc) >= {"version", "kernel", "daemon", "links", "summary"}
    assert set(doc["daemon"]) >= {"pid", "since", "policy_files"}
    for row in doc["links"]:
        assert set(row) >= {"name", "ifindex", "kind", "rule", "wanted", "current", "state", "reason",
                            "napi_threads"}, row
    assert doc["daemon"]["pid"] == d.pid
    assert doc["daemon"]["policy_files"] == [str(policy)]
    assert doc["daemon"]["source"] == "netlink"
    rows = {r["name"]: r for r in doc["links"]}
    assert rows["va0"]["state"] == "threaded" and rows["va0"]["current"] == 1
    # The threads status lists are real napi/va0-N kthreads. (Names carry no
    # namespace: a va0 of an earlier test whose namespace is being torn down
    # may still have a thread, so only membership is asserted, not the count.)
    listed = {t["pid"] for t in rows["va0"]["threads"]}
    assert rows["va0"]["napi_threads"] == len(listed) >= 1, rows["va0"]
    assert all(t["name"].startswith("napi/va0-") for t in rows["va0"]["threads"]), rows["va0"]
    assert listed & {pid for pid, _ in napi_threads("va0")}, (rows["va0"], napi_threads("va0"))
    assert rows["va1"]["state"] == "waiting", rows["va1"]  # down: no NAPI yet
    assert rows["va1"]["reason"]
    assert rows["vo0"]["state"] == "off" and rows["vo0"]["current"] == 0
    assert doc["summary"].get("waiting") == 1 and doc["summary"].get("threaded") == 1
    # Writes are counted per link kind (issue 13): all of them were veth here.
    stats = doc["daemon"]["stats"]
    assert set(stats["writes_by_kind"]) == {"veth"} and stats["writes_by_kind"]["veth"] >= 2, stats
    assert sum(stats["writes_by_kind"].values()) == stats["writes"], stats
    assert {"native", "creation_default", "native_handling"} <= set(doc["kernel"])
    # The stall watch runs (no WireGuard here: nothing to flag; s12 of the kernel tier flags).
    assert doc["stalled_peers"] == []
    assert d.status_file()["stall_window"] == 30 and d.status_file()["stalled_peers"] == []

    # The plain text form names the same states, and native with the guard's verdict.
    text = d.cli("status", check=True).stdout
    assert f"daemon: pid {d.pid}" in text
    assert "\nnative: " in text, text
    assert any(l.startswith("va1 ") and l.rstrip().endswith(")") and "waiting" in l for l in text.splitlines()), text
    rc, _ = d.stop()
    assert rc == 0
    # Daemon gone: status says so, and falls back to its own reading.
    doc = json.loads(d.cli("status", "--json", check=True).stdout)
    assert doc["daemon"] is None
    assert {r["name"]: r["state"] for r in doc["links"]}["va1"] == "pending"


GOOD = '[daemon]\nresync_interval = 5\n\n[[rules]]\nname = "wg"\nkinds = ["wireguard"]\nthreaded = "on"\n'
BROKEN = [
    ("bad value", GOOD.replace('"on"', '"sometimes"'), 'rules[0].threaded'),
    ("unknown key", GOOD.replace("resync_interval", "resync_intervall"), "daemon.resync_intervall"),
    ("wrong type", GOOD.replace("= 5", '= "5"'), "daemon.resync_interval"),
    ("TOML syntax", GOOD.replace("= 5", "="), "line 2"),
]


def test_check_config_good_and_broken(netns, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    res = netns.run(WGNAPID, "check-config", good, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"policy OK: {good}"
    for what, text, key in BROKEN:
        bad = tmp_path / f"bad-{what.replace(' ', '-')}.toml"
        bad.write_text(text)
        res = netns.run(WGNAPID, "check-config", bad, check=False)
        assert res.returncode == 78, (what, res)  # EX_CONFIG
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, (what, res.stderr)
        assert lines[0].startswith(f"{bad}: ") and key in lines[0], (what, lines[0])
        assert "Traceback" not in res.stderr and not res.stdout.strip()
    # The same file through --config: `run` refuses it with the same line.
    res = run_cli(netns, tmp_path / "bad-bad-value.toml", "--log-target", "stderr", "run")
    assert res.returncode == 78 and "rules[0].threaded" in res.stderr and "Traceback" not in res.stderr


def test_non_root_gets_one_clear_line(netns, tmp_path):
    # A policy nobody can read is not the point here: put it where uid 65534 can.
    pubdir = tempfile.mkdtemp(prefix="wgn-pub-", dir="/tmp")
    try:
        os.chmod(pubdir, 0o755)
        policy = write_policy(Path(pubdir) / "p.toml", rules=RULES)
        os.chmod(policy, 0o644)
        netns.veth("va0", "pa0")
        netns.make_settable("va0")
        for args in (["apply"], ["apply", "--json"], ["run"], ["status"]):
            res = run_cli(netns, policy, *args, user="65534")
            if res.returncode in (126, 127) or "setpriv:" in res.stderr:
                pytest.skip(f"uid 65534 cannot start {WGNAPID} here: {res.stderr.strip()}")
            assert res.returncode == 1, (args, res)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1, (args, res.stderr)
            assert "root" in lines[0] and lines[0].startswith("wgnapid: "), lines[0]
            assert "Traceback" not in res.stderr and not res.stdout.strip(), res
        assert netns.threaded("va0") == 0, "a non-root run wrote something"
    finally:
        shutil.rmtree(pubdir, ignore_errors=True)


def test_run_refuses_a_sysfs_that_shows_another_namespace(netns, tmp_path):
    # `unshare -n` inside the test namespace: a new, empty network namespace
    # whose process still sees the test namespace's /sys. Its own veth pair is
    # invisible there, so wgnapid would see every link as gone: it must refuse.
    policy = write_policy(tmp_path / "p.toml", rules=RULES)
    res = netns.run(
        "unshare", "-n", "sh", "-c",
        f"ip link add vz0 type veth peer name vz1 && "
        f"exec {WGNAPID} --config {policy} --log-target stderr run",
        check=False, timeout=60,
    )
    assert res.returncode == 1, res.stderr
    assert "does not show this network namespace's links" in res.stderr
    assert "Traceback" not in res.stderr


def test_output_cut_short_by_its_reader_is_no_traceback(netns, tmp_path):
    # `wgnapid status --json | head -c 1`: head exits after one byte, and the
    # rest of the document (several pipe buffers with 300 links) hits a closed pipe.
    policy = write_policy(tmp_path / "p.toml", rules=RULES)
    netns.ip_batch([f"link add va{i} type veth peer name pa{i}" for i in range(150)])
    res = netns.run("sh", "-c", f"{WGNAPID} --config {policy} status --json | head -c 1 >/dev/null",
                    check=False, timeout=60)
    assert "Traceback" not in res.stderr, res.stderr
    assert "BrokenPipe" not in res.stderr, res.stderr
