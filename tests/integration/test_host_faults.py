"""Issue 11: a real host's faults, each a test that failed before.

- SIGHUP/SIGTERM during start-up (imports and policy load) must not kill the
  daemon, and a reload asked for then is done after READY=1;
- journald gone with its socket file left behind: logging falls back to
  stderr, reported once, and enforcement goes on (a private mount namespace
  whose /run/systemd/journal/socket is a stale socket);
- a read-only /sys (as under ProtectKernelTunables=): the failure names the
  read-only mount and ReadWritePaths=, `doctor` says so without writing;
- `status` in a PID namespace of its own shows unknown NAPI thread counts.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from wgtest import WGNAPID, wait_until, write_policy

# `sh -c SCRIPT sh ARGV...`: the script sets up the private mount namespace,
# then execs the daemon's command line (so the daemon keeps the PID).
STALE_JOURNAL = (
    "mount -t tmpfs wgn-i11-journal /run/systemd/journal && "
    "python3 -c 'import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
    "s.bind(\"/run/systemd/journal/socket\"); s.close()' && "
    'exec "$@"'
)
READ_ONLY_SYS = 'mount -o remount,bind,ro /sys && exec "$@"'


def private_mounts(script: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


# -- signals from the first instant ----------------------------------------------------


def _caught(pid: int, signum: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        pass
    return False


def _heavy_imports_begun(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "pydantic_core" in f.read()
    except OSError:
        return False


def _signal_during_start_up(d, signum: int) -> None:
    """Send ``signum`` as early as the daemon could ever be told to reload or stop:
    the moment it catches the signal or starts its heavy imports, whichever
    comes first. Before this fix the handler came after the imports and the
    policy load, so this landed on the default disposition (death)."""
    wait_until(lambda: d.proc.poll() is not None or _caught(d.pid, signum) or _heavy_imports_begun(d.pid),
               30, "the daemon's start-up")
    d.signal(signum)


def test_sighup_during_start_up_is_a_reload_after_ready(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml", resync_interval=30)
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    d = daemon_factory(policy).start(wait_ready=False)
    t0 = time.monotonic()
    _signal_during_start_up(d, signal.SIGHUP)
    # The second input: another SIGHUP 0.3 s after the start.
    time.sleep(max(0.0, 0.3 - (time.monotonic() - t0)))
    if d.alive():
        d.signal(signal.SIGHUP)
    ready = d.wait_ready()
    assert d.alive(), d.log()
    # The reload runs after READY=1: RELOADING=1 then READY=1 again.
    reloading = d.wait_notify("RELOADING=1", after=ready + 1, timeout=20)
    d.wait_notify("READY=1", after=reloading + 1, timeout=20)
    doc = wait_until(lambda: (s := d.status_file()) and s["reload"]["generation"] >= 1 and s, 20,
                     "the reload in the status document")
    assert doc["reload"]["ok"] is True, doc["reload"]
    assert netns.threaded("va0") == 1
    assert "policy reloaded" in d.log()
    rc, _ = d.stop()
    assert rc == 0, d.log()
    assert "Traceback" not in d.log()


def test_sigterm_during_start_up_exits_cleanly(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml")
    d = daemon_factory(policy).start(wait_ready=False)
    _signal_during_start_up(d, signal.SIGTERM)
    rc = d.proc.wait(timeout=30)
    # 0: a clean stop (death by the signal, -15, is what systemd must not see).
    assert rc == 0, (rc, d.log())
    assert "Traceback" not in d.log()


# -- journald gone, its socket file left behind ---------------------------------------


def test_stale_journal_socket_auto_logs_to_stderr(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml")
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    d = daemon_factory(policy, log_target="auto", prefix=private_mounts(STALE_JOURNAL)).start()
    assert netns.threaded("va0") == 1
    lines = d.log_lines()
    # auto tested reachability (a connect), not the file's existence: stderr from the start.
    assert any("started" in l for l in lines), lines
    assert any(l.startswith("wgnapid: info: va0: threaded NAPI on") for l in lines), lines
    # doctor, in the same mount namespace, does not say ok.
    res = netns.run(*private_mounts(STALE_JOURNAL), WGNAPID, "--config", policy, "doctor", "--json",
                    check=False)
    doc = json.loads(res.stdout)
    assert res.returncode == 1 and doc["journald"] is False, doc
    assert any("journald is not reachable" in p and "Connection refused" in p for p in doc["problems"]), doc
    rc, _ = d.stop()
    assert rc == 0 and "Traceback" not in d.log()


def test_stale_journal_socket_with_journal_target_falls_back_once(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml")
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    d = daemon_factory(policy, log_target="journal", prefix=private_mounts(STALE_JOURNAL)).start()
    assert netns.threaded("va0") == 1
    # More state changes after the failure: they still reach stderr.
    netns.veth("va1", "vb1")
    netns.make_settable("va1")
    wait_until(lambda: netns.threaded("va1") == 1, 10, "va1 threaded")
    wait_until(lambda: any("va1: threaded NAPI on" in l for l in d.log_lines()), 10, "va1's line")
    assert d.alive()
    lines = d.log_lines()
    outage = [l for l in lines if "journald is not reachable" in l]
    assert len(outage) == 1, lines
    assert "Connection refused" in outage[0]
    rc, _ = d.stop()
    assert rc == 0
    assert "Traceback" not in d.log(), d.log()


# -- read-only /sys ----------------------------------------------------------------------


def test_read_only_sys_names_the_mount_not_root(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml")
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    d = daemon_factory(policy, prefix=private_mounts(READ_ONLY_SYS)).start()
    wait_until(lambda: d.link_state("va0") == "failed", 10, "va0 failed")
    doc = d.status_file()
    reason = next(l["reason"] for l in doc["links"] if l["name"] == "va0")
    assert "Read-only file system" in reason and "read-only mount" in reason, reason
    assert "ReadWritePaths=/sys/devices/virtual/net" in reason, reason
    assert "run as root" not in reason, reason
    assert netns.threaded("va0") == 0
    rc, _ = d.stop()
    assert rc == 0

    res = netns.run(*private_mounts(READ_ONLY_SYS), WGNAPID, "--config", policy, "doctor", check=False)
    assert res.returncode == 1, res.stdout
    problems = [l for l in res.stdout.splitlines() if l.startswith("PROBLEM:")]
    assert any("va0: cannot write threaded" in p and "read-only mount" in p for p in problems), res.stdout
    assert netns.threaded("va0") == 0, "doctor must not write"
    # The same doctor on a writable /sys has no such problem.
    res = netns.run(WGNAPID, "--config", policy, "doctor", "--json", check=False)
    doc = json.loads(res.stdout)
    assert doc["sysfs_writable"] == {"lo": True, "va0": True}, doc


# -- status where kernel threads are invisible ------------------------------------------


def test_status_napi_threads_unknown_in_own_pid_namespace(netns, tmp_path):
    policy = write_policy(tmp_path / "p.toml")
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    netns.run(WGNAPID, "--config", policy, "apply")
    assert netns.threaded("va0") == 1
    seen = json.loads(netns.run(WGNAPID, "--config", policy, "status", "--json").stdout)
    assert [l["napi_threads"] for l in seen["links"] if l["name"] == "va0"][0] >= 1
    res = netns.run("unshare", "--pid", "--fork", "--mount-proc", WGNAPID, "--config", policy, "status", "--json")
    row = [l for l in json.loads(res.stdout)["links"] if l["name"] == "va0"][0]
    assert row["napi_threads"] is None, row
    text = netns.run("unshare", "--pid", "--fork", "--mount-proc", WGNAPID, "--config", policy, "status").stdout
    assert "kernel threads are not visible here" in text, text


# -- wgnapid reload (the unit's ExecReload=) ---------------------------------------------


def test_reload_command_returns_once_the_daemon_reloaded(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml", resync_interval=30)
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    d = daemon_factory(policy).start()
    assert netns.threaded("va0") == 1
    write_policy(policy, resync_interval=30, rules=[("veths", ["veth"], ["va*"], "off")])
    res = d.cli("reload")
    assert res.returncode == 0, res.stderr
    # No waiting: the command returned after the daemon applied the policy.
    assert netns.threaded("va0") == 0
    assert d.status_file()["reload"] == {"generation": 1, "ok": True, "error": ""}

    # Broken: refused before the daemon is asked (EX_CONFIG), which keeps running as it was.
    (tmp_path / "p.toml").write_text('[daemon]\nresync_interval = "soon"\n')
    res = d.cli("reload")
    assert res.returncode == 78 and "daemon.resync_interval" in res.stderr, res
    assert d.status_file()["reload"]["generation"] == 1 and d.alive()


def test_reload_command_reports_a_refusal_by_the_daemon(netns, daemon_factory, tmp_path):
    # The daemon's own check (the file changed after `wgnapid reload` checked it):
    # request_reload() is the part of the command after validation.
    policy = write_policy(tmp_path / "p.toml", resync_interval=30)
    d = daemon_factory(policy).start()
    policy.write_text('[[rules]]\nname = "x"\nthreaded = "sometimes"\n')
    code = ("import sys; from wgnapid.reload import request_reload; ok, msg = request_reload(30); "
            "print(msg); sys.exit(0 if ok else 1)")
    res = netns.run(sys.executable, "-c", code, check=False,
                    env={**os.environ, "RUNTIME_DIRECTORY": str(d.runtime_dir)})
    assert res.returncode == 1, res
    assert "refused" in res.stdout and "rules[0].threaded" in res.stdout, res.stdout
    assert d.alive()
    doc = d.status_file()
    assert doc["reload"]["generation"] == 1 and doc["reload"]["ok"] is False
