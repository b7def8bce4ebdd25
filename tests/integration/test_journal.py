"""What the daemon tells journald: per-link fields, and one entry per state change."""

from __future__ import annotations

import re
import time

from wgnapid.log import MESSAGE_IDS
from wgtest import journal_entries, wait_journal, wait_until, write_policy

LINK_FIELDS = ("INTERFACE", "IFINDEX", "WGNAPID_RULE", "WGNAPID_STATE", "MESSAGE_ID")


def test_per_link_entries_and_one_waiting_entry(journald, netns, daemon_factory, tmp_path):
    # Retries every <= 1 s and a full re-list every second: plenty of chances to
    # log "waiting" again, which must not happen.
    policy = write_policy(tmp_path / "p.toml", resync_interval=1, pending_max_delay=1)
    netns.veth("va0", "vb0")
    ifindex = netns.ifindex("va0")
    d = daemon_factory(policy, log_target="journal").start()
    assert not d.log().replace("--- start 1\n", ""), f"journal target wrote to stderr: {d.log()}"

    wait_journal(d, lambda e: any(x.get("INTERFACE") == "va0" for x in e), "va0's first entry")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5.0:  # the scenario: left waiting for 5 s
        assert d.alive()
        time.sleep(0.5)
    assert netns.threaded("va0") == 0
    netns.make_settable("va0")
    wait_until(lambda: netns.threaded("va0") == 1, 5, "va0 threaded")
    rc, _ = d.stop()
    assert rc == 0

    entries = wait_journal(d, lambda e: any(x.get("MESSAGE_ID") == MESSAGE_IDS["stopping"] for x in e),
                           "the stopping entry")
    for e in entries:
        assert e["SYSLOG_IDENTIFIER"] == "wgnapid"
        assert e["_PID"] == str(d.pid)
    assert any(e["MESSAGE_ID"] == MESSAGE_IDS["started"] for e in entries)

    va0 = [e for e in entries if e.get("INTERFACE") == "va0"]
    assert [e["WGNAPID_STATE"] for e in va0] == ["waiting", "threaded"], [e["MESSAGE"] for e in va0]
    for e in va0:
        for field in LINK_FIELDS:
            assert e.get(field), f"{field} missing from {e}"
        assert e["IFINDEX"] == str(ifindex)
        assert e["WGNAPID_RULE"] == "veths"
        assert e["MESSAGE_ID"] == MESSAGE_IDS[f"link-{e['WGNAPID_STATE']}"]
        assert re.fullmatch(r"[0-9a-f]{32}", e["MESSAGE_ID"])
        assert e["PRIORITY"] == "6"  # info
        assert e["MESSAGE"].startswith("va0: ")
    assert va0[0]["MESSAGE_ID"] != va0[1]["MESSAGE_ID"]
    # Nothing at error priority (0-3).
    assert not [e["MESSAGE"] for e in entries if int(e["PRIORITY"]) <= 3]
    # Unmatched links (vb0, lo) are logged at debug only, below the info threshold.
    assert not [e for e in entries if e.get("INTERFACE") in ("vb0", "lo")]


def test_drift_entry_is_a_notice_with_link_fields(journald, netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml", resync_interval=1)
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    d = daemon_factory(policy, log_target="journal").start()
    assert netns.threaded("va0") == 1
    netns.set_threaded("va0", 0)
    wait_until(lambda: netns.threaded("va0") == 1, 5, "drift re-asserted")
    entries = wait_journal(d, lambda e: any("re-asserted" in x["MESSAGE"] for x in e), "the drift entry")
    drift = [e for e in entries if "re-asserted" in e["MESSAGE"]]
    assert len(drift) == 1, drift
    assert drift[0]["PRIORITY"] == "5"  # notice
    for field in LINK_FIELDS:
        assert drift[0].get(field), f"{field} missing from {drift[0]}"
    assert drift[0]["INTERFACE"] == "va0" and drift[0]["WGNAPID_STATE"] == "threaded"
    rc, _ = d.stop()
    assert rc == 0
    assert len([e for e in journal_entries(d.pid, d.started_wall) if e.get("INTERFACE") == "va0"]) == 2
