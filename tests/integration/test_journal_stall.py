"""wgnapid.log against the real libsystemd and a real journald: bytes pass
exactly, and a journald that stops reading never stalls the daemon.

The stalled journald is one started here, in a journal namespace of its own
(`systemd-journald NS`: sockets under /run/systemd/journal.NS, files in a
private tmpfs), and shown to the daemon as /run/systemd/journal by a bind mount
in the daemon's private mount namespace. The machine's own journald is never
stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from wgnapid.log import MESSAGE_IDS

from wgtest import JOURNALD, WGNAPID, journal_entries, wait_until, write_policy

UNSHARE = ["unshare", "--mount", "--propagation", "private"]


def test_link_name_bytes_and_newlines_reach_journald_exactly(journald, tmp_path):
    # INTERFACE= is the kernel's bytes of the name (0xff is not UTF-8):
    # journalctl -o json shows a non-UTF-8 value as an array of byte values.
    since = time.time()
    script = textwrap.dedent("""
        import os, sys
        from wgnapid.log import Log
        log = Log("journal", "info")
        log.link("link-threaded", 6, "threaded NAPI on\\nsecond line",
                 name=b"wg\\xff0".decode("utf-8", "surrogateescape"), ifindex=4242, rule="r", state="threaded")
        log.close()
        print(os.getpid())
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr, res.stderr
    pid = int(res.stdout)
    entries = wait_until(lambda: journal_entries(pid, since), 20, "the entry in the journal")
    assert len(entries) == 1, entries
    e = entries[0]
    assert e["INTERFACE"] == list(b"wg\xff0"), e["INTERFACE"]
    assert e["MESSAGE"] == "wg\\xff0: threaded NAPI on\nsecond line", e["MESSAGE"]
    assert e["IFINDEX"] == "4242" and e["WGNAPID_STATE"] == "threaded" and e["PRIORITY"] == "6"


def test_a_short_lived_command_gets_its_entries_out_before_exit(journald, tmp_path):
    # No close() in the code path: the flush at exit (atexit) sends them.
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nresync_interval = -3\n")
    since = time.time()
    proc = subprocess.Popen([WGNAPID, "--config", str(bad), "--log-target", "journal", "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    # stderr (not the journal's stream here) gets the same line for a person;
    # the journal got it too: no fallback notice.
    assert proc.returncode == 78, (proc.returncode, err)
    assert err.startswith("wgnapid: ") and "resync_interval" in err and "not reachable" not in err, err
    entries = wait_until(lambda: journal_entries(proc.pid, since), 20, "the config-invalid entry")
    assert [e["MESSAGE_ID"] for e in entries] == [MESSAGE_IDS["config-invalid"]] * len(entries)
    assert any("resync_interval" in e["MESSAGE"] for e in entries), entries


def test_a_socket_that_never_reads_stalls_no_thread(tmp_path):
    # The real libsystemd send blocks on a full socket queue. systemd-python's
    # journal.send() would hold the GIL there and freeze the process; here the
    # flood (the event loop's thread) ends, the outage is said once, and the
    # exit is bounded (JOURNAL_FLUSH) although a send is still stuck.
    script = textwrap.dedent("""
        import socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind("/run/systemd/journal/socket")  # bound, never read
        from wgnapid.log import Log
        log = Log("journal", "info")
        for i in range(20000):
            log.info("resync", f"entry {i}")
        print("flood done", flush=True)
    """)
    res = subprocess.run([*UNSHARE, "sh", "-c", 'mount -t tmpfs wgn-logj /run/systemd/journal && exec "$@"', "sh",
                          sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout == "flood done\n", (res.returncode, res.stdout, res.stderr[-2000:])
    err = res.stderr.splitlines()
    outage = [l for l in err if "journald is not reachable" in l]
    assert len(outage) == 1 and "not reading" in outage[0], outage[:3]
    assert "wgnapid: info: entry 19999" in err
    assert "Traceback" not in res.stderr


class PrivateJournald:
    """systemd-journald in a journal namespace of its own, its files in a
    private tmpfs; stop()/cont() SIGSTOP and SIGCONT it."""

    def __init__(self):
        self.ns = f"wgnlogj{secrets.token_hex(3)}"
        self.dir = f"/run/systemd/journal.{self.ns}"
        self.socket = f"{self.dir}/socket"
        self.proc = subprocess.Popen(
            [*UNSHARE, "sh", "-c", 'mount -t tmpfs wgn-logj /var/log/journal && exec "$@"', "sh", JOURNALD, self.ns],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self) -> None:
        def ready():
            assert self.proc.poll() is None, "the private journald exited"
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                    s.connect(self.socket)
                return True
            except OSError:
                return False
        wait_until(ready, 30, "the private journald's socket")

    def entries(self, pid: int) -> list[dict]:
        res = subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "journalctl", "--namespace", self.ns,
                              "--no-pager", "-o", "json", f"_PID={pid}"], capture_output=True, text=True, timeout=60)
        return [json.loads(l) for l in res.stdout.splitlines() if l.strip()]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def fill(self) -> int:
        """Fill the stopped journald's socket queue, so the next send blocks."""
        n = 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK) as s:
            while True:
                try:
                    s.sendto(b"MESSAGE=wgnapid test filler\nSYSLOG_IDENTIFIER=wgnapid-test-filler\n", self.socket)
                except BlockingIOError:
                    return n
                n += 1

    def close(self) -> None:
        if self.proc.poll() is None:
            self.cont()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_journald():
    if not os.path.exists(JOURNALD):
        pytest.skip(f"{JOURNALD} is missing")
    j = PrivateJournald()
    try:
        j.wait_ready()
        yield j
    finally:
        j.close()


def test_a_stopped_journald_does_not_stop_enforcement(private_journald, netns, daemon_factory, tmp_path):
    j = private_journald
    policy = write_policy(tmp_path / "p.toml")
    netns.veth("va0", "vb0")
    netns.make_settable("va0")
    prefix = [*UNSHARE, "sh", "-c", f'mount --bind {j.dir} /run/systemd/journal && exec "$@"', "sh"]
    d = daemon_factory(policy, log_target="journal", prefix=prefix).start()
    assert netns.threaded("va0") == 1
    wait_until(lambda: any(e.get("INTERFACE") == "va0" for e in j.entries(d.pid)), 20, "va0's entry")

    # journald stops reading and its queue is full: every send now blocks.
    j.stop()
    try:
        assert j.fill() > 0
        netns.veth("va1", "vb1")
        netns.make_settable("va1")
        wait_until(lambda: netns.threaded("va1") == 1, 20, "va1 threaded while journald is stopped")
        # The daemon still answers: its status document shows va1 threaded.
        wait_until(lambda: d.link_state("va1") == "threaded", 20, "va1 in the status document")
        assert d.alive()
    finally:
        j.cont()
    # Nothing lost: va1's entry reaches journald once it reads again.
    wait_until(lambda: any(e.get("INTERFACE") == "va1" for e in j.entries(d.pid)), 30, "va1's entry")

    # Stopped again, and the daemon is stopped: the exit is bounded, and what
    # could not reach the journal (the stopping entry) goes to stderr.
    j.stop()
    try:
        j.fill()
        rc, _ = d.stop()
        assert rc == 0, d.log()
    finally:
        j.cont()
    lines = d.log_lines()
    assert "wgnapid: info: wgnapid stopping (SIGTERM)" in lines, lines
    assert len([l for l in lines if "journald is not reachable" in l]) == 1, lines
    assert "Traceback" not in d.log()


def test_stopping_entry_reaches_journald(private_journald, netns, daemon_factory, tmp_path):
    j = private_journald
    policy = write_policy(tmp_path / "p.toml")
    prefix = [*UNSHARE, "sh", "-c", f'mount --bind {j.dir} /run/systemd/journal && exec "$@"', "sh"]
    d = daemon_factory(policy, log_target="journal", prefix=prefix).start()
    rc, _ = d.stop()
    assert rc == 0 and "Traceback" not in d.log(), d.log()
    entries = wait_until(lambda: (e := j.entries(d.pid)) and any(x["MESSAGE"] == "wgnapid stopping (SIGTERM)" for x in e) and e,
                         20, "the stopping entry")
    assert entries[-1]["MESSAGE"] == "wgnapid stopping (SIGTERM)"
    assert entries[-1]["SYSLOG_IDENTIFIER"] == "wgnapid"
