"""wgnapid.discovery: naming, deduplication and readiness, over a fake /proc
and fake watched directories whose entries are symlinks to real nsfs files
(/proc/self/ns/{net,uts,ipc,...} are distinct nsfs inodes on the one nsfs
device, so they stand for distinct network namespaces). Nothing is entered.
"""

from __future__ import annotations

import os
import select

from wgnapid import discovery

OWN = "/proc/self/ns/net"
OTHER, THIRD, FOURTH = "/proc/self/ns/uts", "/proc/self/ns/ipc", "/proc/self/ns/cgroup"


def _key(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _proc(root, pids: dict):
    (root / "self" / "ns").mkdir(parents=True)
    (root / "self" / "ns" / "net").symlink_to(OWN)
    for pid, target in pids.items():
        (root / str(pid) / "ns").mkdir(parents=True)
        (root / str(pid) / "ns" / "net").symlink_to(target)
    (root / "net").mkdir()  # not a PID: ignored
    return str(root)


def test_names_and_dedup(tmp_path):
    proc = _proc(tmp_path / "proc", {1: OWN, 40: OTHER, 7: OTHER, 9: THIRD, 300: FOURTH, 12: FOURTH})
    run_netns, docker = tmp_path / "netns", tmp_path / "docker"
    run_netns.mkdir()
    docker.mkdir()
    (run_netns / "tenant-a").symlink_to(THIRD)       # named: the name wins over pid:9
    (docker / "3f2a9c").symlink_to(FOURTH)           # docker:<id>
    scan = discovery.scan(proc, (str(run_netns), str(docker)))
    by_name = {f.name: f for f in scan.found.values()}
    assert set(by_name) == {"self", "pid:7", "tenant-a", "docker:3f2a9c"}
    assert by_name["self"].key == _key(OWN)
    assert by_name["pid:7"].key == _key(OTHER)       # the lowest PID holding it
    assert by_name["pid:7"].path == f"{proc}/7/ns/net"
    assert by_name["tenant-a"].path == str(run_netns / "tenant-a")
    assert by_name["docker:3f2a9c"].key == _key(FOURTH)
    assert not scan.unready


def test_a_file_not_yet_a_namespace_is_unready_and_missing_dirs_are_fine(tmp_path):
    proc = _proc(tmp_path / "proc", {})
    run_netns = tmp_path / "netns"
    run_netns.mkdir()
    (run_netns / "half-made").write_text("")  # `ip netns add` before its bind mount
    scan = discovery.scan(proc, (str(run_netns), str(tmp_path / "no-docker")))
    assert [f.name for f in scan.found.values()] == ["self"]
    assert scan.unready


def test_dirwatch_wakes_for_a_new_entry_and_for_a_directory_made_later(tmp_path):
    present, later = tmp_path / "netns", tmp_path / "run" / "docker" / "netns"
    present.mkdir()
    (tmp_path / "run").mkdir()
    w = discovery.DirWatch((str(present), str(later)))
    try:
        assert select.select([w], [], [], 0)[0] == []
        (present / "x").write_text("")
        assert select.select([w], [], [], 5)[0] == [w]
        assert w.drain() is True
        assert select.select([w], [], [], 0)[0] == []
        # Other entries of a parent watched for a directory to come: read, no scan.
        (tmp_path / "run" / "something.pid").write_text("1")
        assert select.select([w], [], [], 5)[0] == [w]
        assert w.drain() is False
        later.parent.mkdir()  # seen through the nearest existing parent ...
        assert select.select([w], [], [], 5)[0] == [w]
        assert w.drain() is True
        later.mkdir()
        assert select.select([w], [], [], 5)[0] == [w]
        assert w.drain() is True
        (later / "abc").write_text("")  # ... and once it exists, its own watch
        assert select.select([w], [], [], 5)[0] == [w]
        assert w.drain() is True
    finally:
        w.close()
