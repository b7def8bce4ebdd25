"""wgnapid.log: journald that refuses, is missing or does not read never stops or
blocks logging (issue 11). The reachability test uses real unix datagram sockets
at temporary paths; the send is a fake here (libsystemd always sends to
/run/systemd/journal/socket: tests/integration/test_journal_stall.py runs the
real one against a socket that never reads and against journald)."""

from __future__ import annotations

import errno
import os
import socket
import syslog
import threading
import time

import pytest

from wgnapid.log import MESSAGE_IDS, Log, journald_reachable

from .helpers import Clock


class Sent:
    """A fake sd_journal_sendv: keeps what it got; raises ``fail`` for entries
    whose MESSAGE starts with ``refuse`` (decided per entry: the logger thread
    runs at its own pace)."""

    def __init__(self, fail: OSError | None = None, refuse: bytes = b"MESSAGE="):
        self.entries: list[list[bytes]] = []
        self.fail = fail
        self.refuse = refuse

    def __call__(self, fields):
        if self.fail is not None and any(f.startswith(self.refuse) for f in fields):
            raise self.fail
        self.entries.append(list(fields))

    def messages(self) -> list[bytes]:
        return [next(f for f in e if f.startswith(b"MESSAGE=")) for e in self.entries]


class Stalled:
    """A send that blocks until released: journald that stopped reading."""

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.sent: list[list[bytes]] = []

    def __call__(self, fields):
        self.entered.set()
        self.release.wait()
        self.sent.append(list(fields))


@pytest.fixture
def stale(tmp_path):
    """A socket file left behind by a journald that is gone."""
    path = str(tmp_path / "socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.close()
    return path


@pytest.fixture
def live(tmp_path):
    path = str(tmp_path / "live")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    yield path, s
    s.close()


def test_reachability_is_a_real_connect(stale, live, tmp_path):
    assert "Connection refused" in journald_reachable(stale)
    assert "No such file" in journald_reachable(str(tmp_path / "missing"))
    assert journald_reachable(live[0]) is None


def test_auto_picks_stderr_for_a_stale_socket(stale):
    log = Log("auto", journal_path=stale)
    assert log.target == "stderr"
    assert log._thread is None  # stderr needs no logger thread


def test_entries_keep_their_fields_bytes_and_order(live):
    sent = Sent()
    log = Log("journal", journal_path=live[0], send=sent)
    log.event("link-threaded", syslog.LOG_INFO, "two\nlines", interface=b"wg\xff0", ifindex=7)
    for i in range(100):
        log.info("resync", f"entry {i}")
    log.close()
    first = sent.entries[0]
    assert b"PRIORITY=6" in first and b"INTERFACE=wg\xff0" in first and b"IFINDEX=7" in first
    assert f"MESSAGE_ID={MESSAGE_IDS['link-threaded']}".encode() in first
    assert b"MESSAGE=two\nlines" in first and b"SYSLOG_IDENTIFIER=wgnapid" in first
    assert sent.messages()[1:] == [f"MESSAGE=entry {i}".encode() for i in range(100)]


def test_refused_sends_fall_back_to_stderr_reported_once(stale, capsys):
    clock = Clock()
    sent = Sent()
    log = Log("journal", journal_path=stale, clock=clock, send=sent)
    for i in range(5):
        log.info("resync", f"entry {i}")
        clock.t += 1
    log.close()
    err = capsys.readouterr().err.splitlines()
    assert [l for l in err if "journald is not reachable" in l and "Connection refused" in l] == [err[0]]
    assert err[1:] == [f"wgnapid: info: entry {i}" for i in range(5)]
    assert sent.entries == []


@pytest.mark.parametrize("code", [errno.ECONNREFUSED, errno.EAGAIN, errno.ENOENT])
def test_a_raising_send_falls_back_once_and_recovers(live, capsys, code):
    clock = Clock()
    sent = Sent(OSError(code, os.strerror(code)))
    log = Log("journal", journal_path=live[0], clock=clock, send=sent)
    for i in range(3):
        log.info("resync", f"down {i}")
        clock.t += 20  # past the retry delay: each entry is a new attempt, still one report
    log.close(timeout=30)
    err = capsys.readouterr().err.splitlines()
    assert len([l for l in err if "journald is not reachable" in l]) == 1, err
    assert sent.fail.strerror in err[0]
    assert err[1:] == [f"wgnapid: info: down {i}" for i in range(3)]

    sent = Sent(OSError(code, os.strerror(code)), refuse=b"MESSAGE=lost")
    log = Log("journal", journal_path=live[0], clock=clock, send=sent)
    log.info("resync", "lost")
    clock.t += 20
    log.info("resync", "back")
    log.close(timeout=30)
    assert sent.messages() == [b"MESSAGE=back", b"MESSAGE=journald is reachable again; logging to the journal"]
    assert f"MESSAGE_ID={MESSAGE_IDS['journal-back']}".encode() in sent.entries[1]


def test_a_stalled_journal_neither_blocks_nor_raises(live, capsys):
    # journald stopped reading (hung, SIGSTOPped): libsystemd's blocking send
    # never returns. A log call must still return at once.
    stalled = Stalled()
    log = Log("journal", journal_path=live[0], send=stalled, queue_max=64)
    done = threading.Event()

    def flood():
        for i in range(20000):
            log.info("resync", f"entry {i} " + "x" * 200)
        done.set()

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    t.join(60)
    assert done.is_set(), "a log call blocked on a stalled journal send"
    assert stalled.entered.wait(10)
    err = capsys.readouterr().err.splitlines()
    outage = [l for l in err if "journald is not reachable" in l]
    assert len(outage) == 1 and "not reading" in outage[0], outage
    assert err[-1] == "wgnapid: info: entry 19999 " + "x" * 200
    on_stderr = [int(l.split()[3]) for l in err if l.startswith("wgnapid: info: entry ")]
    assert on_stderr == sorted(on_stderr)

    # Stop while still stalled: close() returns (bounded); the entry in the
    # stuck send and the queued ones go to stderr.
    log.info("stopping", "wgnapid stopping")  # queue full: straight to stderr
    log.close(timeout=0.2)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "wgnapid: info: wgnapid stopping"
    drained = [int(l.split()[3]) for l in err[1:]]
    assert drained == sorted(drained) and len(drained) == 65 and drained[0] == 0
    # Nothing lost: each entry on stderr exactly once.
    assert sorted(drained + on_stderr) == list(range(20000))
    stalled.release.set()


def test_stop_flushes_the_queue_to_the_journal(live):
    stalled = Stalled()
    log = Log("journal", journal_path=live[0], send=stalled)
    log.info("resync", "first")
    assert stalled.entered.wait(10)
    log.info("stopping", "wgnapid stopping")
    stalled.release.set()  # journald reads again
    log.close(timeout=30)
    assert [e[0] for e in stalled.sent] == [b"MESSAGE=first", b"MESSAGE=wgnapid stopping"]
    log.info("resync", "after close")  # no thread left: stderr, no error


def test_journal_is_tried_again_and_its_return_is_said_once(tmp_path, capsys):
    path = str(tmp_path / "j")
    clock = Clock()
    sent = Sent()
    log = Log("journal", journal_path=path, clock=clock, send=sent)
    log.info("resync", "while missing")
    # The logger thread is asynchronous: the socket appears after its attempt.
    deadline = time.monotonic() + 30
    while not log.journal_down and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log.journal_down
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    try:
        log.info("resync", "still within the retry delay")
        clock.t += 60
        log.info("resync", "after it")
        log.close()
    finally:
        server.close()
    got = sent.messages()
    assert got == [b"MESSAGE=after it", b"MESSAGE=journald is reachable again; logging to the journal"]
    err = capsys.readouterr().err
    assert "No such file" in err
    assert "still within the retry delay" in err and "after it" not in err


def test_a_slow_journal_is_one_outage_and_one_return(live, capsys):
    # journald reads again after a stall that filled the queue: one outage line,
    # one journal-back notice once the backlog is out, no flapping per entry.
    stalled = Stalled()
    clock = Clock()
    log = Log("journal", journal_path=live[0], send=stalled, queue_max=4, clock=clock)
    log.info("resync", "first")
    assert stalled.entered.wait(10)
    for i in range(10):
        log.info("resync", f"entry {i}")
    stalled.release.set()
    back = b"MESSAGE=journald is reachable again; logging to the journal"
    deadline = time.monotonic() + 30
    while back not in [e[0] for e in stalled.sent] and time.monotonic() < deadline:
        time.sleep(0.01)
    clock.t += 60  # past the retry delay
    log.info("resync", "after")
    log.close(timeout=30)
    err = capsys.readouterr().err.splitlines()
    assert len([l for l in err if "journald is not reachable" in l]) == 1, err
    got = [e[0] for e in stalled.sent]
    # The backlog (queued before the queue was full) first, then one notice.
    assert got == [b"MESSAGE=first"] + [f"MESSAGE=entry {i}".encode() for i in range(4)] + [
        back, b"MESSAGE=after"], got
    assert [l for l in err if "entry" in l] == [f"wgnapid: info: entry {i}" for i in range(4, 10)], err
