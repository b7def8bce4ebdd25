"""wgnapid.netns: the identity proof of every sysfs access, and the sysfs-view
check, against a fake class/net tree and a fake rtnetlink."""

from __future__ import annotations

import os

import pytest

from wgnapid import netns as netns_mod
from wgnapid.links import Link
from wgnapid.netns import NetNamespace, NsId
from wgnapid.sysfs import Opened, Outcome, Result

from .helpers import fake_ns, tree


@pytest.fixture
def ns(fakesys):
    n = fake_ns(fakesys)
    yield n
    n.close()


def value_through(ns, opened) -> int:
    try:
        return ns.attr.read_opened(opened).value
    finally:
        ns.attr.close(opened)


def test_the_proven_name_is_opened_without_asking_rtnetlink(fakesys, ns):
    fakesys.add("wg0", "1\n", 5)
    opened, corrected = ns.open_threaded(5, "wg0")
    assert isinstance(opened, Opened) and corrected is None
    assert value_through(ns, opened) == 1
    assert ns.rtnl.gets == []


def test_a_name_now_held_by_another_link_is_corrected_and_the_right_link_opened(fakesys, ns):
    # wg0 (ifindex 5) was renamed to r0, and a new link (ifindex 6) took the name.
    fakesys.add("r0", "0\n", 5)
    fakesys.add("wg0", "1\n", 6, kind="veth")
    opened, corrected = ns.open_threaded(5, "wg0")
    assert corrected == Link(5, "r0", "wireguard")
    assert ns.rtnl.gets == [5]
    assert ns.attr.write_opened(opened, 1).outcome is Outcome.OK
    ns.attr.close(opened)
    assert fakesys.get("r0") == "1\n"
    assert fakesys.get("wg0") == "1\n"  # untouched (it was 1 already; and was never opened)


def test_a_wrong_ifindex_is_never_written(fakesys, ns):
    fakesys.add("wg0", "0\n", 6)  # the name is another link's
    ns.rtnl.override[5] = Link(5, "wg0", "wireguard")  # rtnetlink insists: a foreign view
    opened, _ = ns.open_threaded(5, "wg0")
    assert isinstance(opened, Result) and opened.outcome is Outcome.ERROR
    assert "not ifindex 5" in opened.detail
    assert fakesys.get("wg0") == "0\n"


def test_a_vanished_ifindex_is_gone(fakesys, ns):
    fakesys.add("wg0", "0\n", 6)
    opened, _ = ns.open_threaded(5, "wg0")
    assert isinstance(opened, Result) and opened.outcome is Outcome.GONE


def test_a_link_renamed_while_looking_is_retried_then_given_up(fakesys, ns, monkeypatch):
    # rtnetlink always answers with a name sysfs no longer has: bounded.
    fakesys.add("x9", "0\n", 6)
    names = iter(f"n{i}" for i in range(100))
    monkeypatch.setattr(ns.rtnl, "get", lambda i: Link(i, next(names), "wireguard"))
    opened, _ = ns.open_threaded(5, "wg0")
    assert isinstance(opened, Result) and opened.outcome is Outcome.ERROR
    assert "renamed" in opened.detail
    assert next(names) == f"n{netns_mod.PROOF_ATTEMPTS}"


def test_the_open_file_stays_with_its_link_across_a_rename(fakesys, ns):
    # The in-flight write: opened under the proven directory, the link renamed
    # and another takes its name before the write; the write reaches the first.
    fakesys.add("wg0", "0\n", 5)
    opened, _ = ns.open_threaded(5, "wg0")
    fakesys.rename("wg0", "r0")
    fakesys.add("wg0", "0\n", 6)
    assert ns.attr.write_opened(opened, 1).outcome is Outcome.OK
    ns.attr.close(opened)
    assert (fakesys.get("r0"), fakesys.get("wg0")) == ("1\n", "0\n")


BAD = ["", ".", "..", "a/b", "../x", "/abs", "x" * 16, "a b", "a:b", "a\tb", "wg0\n", "\nwg0",
       "é" * 8, "a\xa0b", "à"]


@pytest.mark.parametrize("name", BAD)
def test_names_the_kernel_refuses_never_reach_a_path(tmp_path, name):
    root = tmp_path / "sys" / "net"
    root.mkdir(parents=True)
    for trap in ("sys/threaded", "sys/net/threaded", "sys/x/threaded", "sys/net/a/b/threaded",
                 "sys/net/abs/threaded"):
        (tmp_path / trap).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / trap).write_text("0\n")
        (tmp_path / trap).with_name("ifindex").write_text("5\n")
    before = {p: (tmp_path / p).read_bytes() for p in tree(tmp_path) if (tmp_path / p).is_file()}
    from .helpers import FakeRtnl, FakeSysfs
    fs = FakeSysfs(root)
    rtnl = FakeRtnl(fs)
    rtnl.override[5] = Link(5, name, "wireguard")
    n = NetNamespace(NsId(0, 1), "t", rtnl, os.open(root, os.O_RDONLY | os.O_DIRECTORY), str(root))
    try:
        opened, _ = n.open_threaded(5, name)
    finally:
        n.close()
    assert isinstance(opened, Result) and opened.outcome is Outcome.ERROR, opened
    assert "name" in opened.detail
    after = {p: (tmp_path / p).read_bytes() for p in tree(tmp_path) if (tmp_path / p).is_file()}
    assert after == before


@pytest.mark.parametrize("name", ["wg\udcff", "x\u2003y", "a\\b", "wg-office.1", "\udcff" * 15])
def test_names_the_kernel_accepts_are_opened_by_their_bytes(fakesys, ns, name):
    raw = name.encode("utf-8", "surrogateescape")
    d = fakesys.root / os.fsdecode(raw)
    d.mkdir()
    (d / "threaded").write_text("1\n")
    (d / "ifindex").write_text("7\n")
    opened, corrected = ns.open_threaded(7, name)
    assert isinstance(opened, Opened) and corrected is None, opened
    assert value_through(ns, opened) == 1


# -- the sysfs view ------------------------------------------------------------------


def test_check_view_accepts_its_own_view(fakesys, ns):
    fakesys.add("lo", "0\n", 1)
    fakesys.add("wg0", "0\n", 5)
    assert ns.check_view() is None


def test_check_view_refuses_same_names_with_other_ifindexes(fakesys, ns, monkeypatch):
    fakesys.add("lo", "0\n", 1)
    fakesys.add("wg0", "0\n", 5)
    monkeypatch.setattr(ns.rtnl, "dump_consistent",
                        lambda attempts=5: ([Link(1, "lo", ""), Link(2, "wg0", "bridge")], True))
    problem = ns.check_view()
    assert problem and "wg0 is ifindex 5" in problem and "ifindex 2" in problem


def test_check_view_refuses_same_names_and_ifindexes_with_other_addresses(fakesys, ns, monkeypatch):
    fakesys.add("lo", "0\n", 1)
    fakesys.add("wg0", "0\n", 2)
    (fakesys.root / "wg0" / "address").write_text("aa:bb:cc:dd:ee:01\n")
    monkeypatch.setattr(ns.rtnl, "dump_consistent", lambda attempts=5: (
        [Link(1, "lo", ""), Link(2, "wg0", "bridge", bytes.fromhex("aabbccddee02"))], True))
    problem = ns.check_view()
    assert problem and "address aa:bb:cc:dd:ee:01" in problem
    # The same address: accepted.
    (fakesys.root / "wg0" / "address").write_text("aa:bb:cc:dd:ee:02\n")
    assert ns.check_view() is None


def test_check_view_refuses_links_rtnetlink_does_not_know(fakesys, ns, monkeypatch):
    fakesys.add("lo", "0\n", 1)
    fakesys.add("va0", "0\n", 2)
    (fakesys.root / "bonding_masters").write_text("\n")  # a class attribute, not a link
    monkeypatch.setattr(ns.rtnl, "dump_consistent", lambda attempts=5: ([Link(1, "lo", "")], True))
    problem = ns.check_view()
    assert problem and "shows va0" in problem
    monkeypatch.setattr(ns.rtnl, "dump_consistent",
                        lambda attempts=5: ([Link(1, "lo", ""), Link(2, "va0", "veth")], True))
    assert ns.check_view() is None
    assert "does not show" in ns.problem_line("x")


def test_check_view_is_not_failed_by_churn(fakesys, ns, monkeypatch):
    # va0 is being deleted and re-created while the check looks: rtnetlink's two
    # dumps disagree about it, so what sysfs says of it proves nothing.
    fakesys.add("lo", "0\n", 1)
    fakesys.add("va0", "0\n", 7)
    dumps = iter([[Link(1, "lo", ""), Link(5, "va0", "veth")], [Link(1, "lo", ""), Link(8, "va0", "veth")]] * 3)
    monkeypatch.setattr(ns.rtnl, "dump_consistent", lambda attempts=5: (next(dumps), True))
    assert ns.check_view() is None


def test_check_view_counts_a_contradiction_about_an_unchanged_link(fakesys, ns, monkeypatch):
    fakesys.add("lo", "0\n", 1)
    fakesys.add("va0", "0\n", 7)
    fakesys.add("vb0", "0\n", 9)
    # va0 churns, vb0 is listed identically twice and sysfs disagrees: a foreign view.
    dumps = iter([[Link(1, "lo", ""), Link(5, "va0", "veth"), Link(3, "vb0", "veth")],
                  [Link(1, "lo", ""), Link(8, "va0", "veth"), Link(3, "vb0", "veth")]])
    monkeypatch.setattr(ns.rtnl, "dump_consistent", lambda attempts=5: (next(dumps), True))
    problem = ns.check_view()
    assert problem and "vb0 is ifindex 9" in problem
