"""wgnapid.log: journald that refuses, is missing or does not read never stops or
blocks logging (issue 11). Real unix datagram sockets at temporary paths."""

from __future__ import annotations

import socket
import syslog
import threading

import pytest

from wgnapid.log import MESSAGE_IDS, Log, journald_reachable


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


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
    assert Log("auto", journal_path=stale).target == "stderr"


def test_entries_reach_a_live_journal_socket_in_the_native_protocol(live):
    path, server = live
    Log("journal", journal_path=path).event("link-threaded", syslog.LOG_INFO, "two\nlines", interface="wg0")
    data = server.recv(65536)
    assert b"PRIORITY=6\n" in data and b"INTERFACE=wg0\n" in data
    assert f"MESSAGE_ID={MESSAGE_IDS['link-threaded']}\n".encode() in data
    # A value with a newline goes in the binary-safe form: KEY\n<le64 length>value\n.
    assert b"MESSAGE\n" + (9).to_bytes(8, "little") + b"two\nlines\n" in data


def test_refused_sends_fall_back_to_stderr_reported_once(stale, capsys):
    clock = Clock()
    log = Log("journal", journal_path=stale, clock=clock)
    for i in range(5):
        log.info("resync", f"entry {i}")
        clock.t += 1
    err = capsys.readouterr().err.splitlines()
    assert [l for l in err if "journald is not reachable" in l and "Connection refused" in l] == [err[0]]
    assert err[1:] == [f"wgnapid: info: entry {i}" for i in range(5)]


def test_a_full_journal_socket_neither_blocks_nor_raises(live, capsys):
    # journald stopped reading (hung, SIGSTOPped): its receive queue fills, and a
    # blocking send (systemd-python's) would stall the event loop for good.
    path, _server = live
    log = Log("journal", journal_path=path)
    done = threading.Event()

    def flood():
        for i in range(20000):
            log.info("resync", f"entry {i} " + "x" * 200)
        done.set()

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    t.join(60)
    assert done.is_set(), "a log call blocked on a full journal socket"
    err = capsys.readouterr().err.splitlines()
    outage = [l for l in err if "journald is not reachable" in l]
    assert len(outage) == 1 and "Resource temporarily unavailable" in outage[0], outage
    assert err[-1] == "wgnapid: info: entry 19999 " + "x" * 200


def test_journal_is_tried_again_and_its_return_is_said_once(tmp_path, capsys):
    path = str(tmp_path / "j")
    clock = Clock()
    log = Log("journal", journal_path=path, clock=clock)
    log.info("resync", "while missing")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    try:
        log.info("resync", "still within the retry delay")
        clock.t += 60
        log.info("resync", "after it")
        got = [server.recv(65536) for _ in range(2)]
    finally:
        server.close()
    assert b"MESSAGE=after it\n" in got[0] and b"journald is reachable again" in got[1]
    err = capsys.readouterr().err
    assert "still within the retry delay" in err and "after it" not in err
