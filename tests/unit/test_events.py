"""Events that arrive together keep their meaning (issue 9): the batch order of
wgnapid.daemon, and the reconciler following renames, also while a write is
in flight, against a fake class/net tree."""

from __future__ import annotations

import threading

from wgnapid.daemon import Daemon, batch_order
from wgnapid.links import Link, LinkEvent

from .helpers import rule
from .test_reconciler import make, until


def new(i, name="x", kind="veth"):
    return LinkEvent(i, False, Link(i, name, kind))


def gone(i):
    return LinkEvent(i, True, None)


def test_the_last_event_of_a_link_counts():
    assert batch_order([new(5, "t0"), new(6), new(5, "r0")]) == [(5, False, new(5, "r0")), (6, False, new(6))]


def test_a_removal_in_the_batch_ends_the_link_before_the_next():
    assert batch_order([new(5, "a"), gone(5), new(5, "b")]) == [(5, True, new(5, "b"))]
    assert batch_order([gone(5), new(5, "b"), new(5, "c")]) == [(5, True, new(5, "c"))]
    assert batch_order([new(5, "a"), gone(5)]) == [(5, True, gone(5))]
    assert batch_order([]) == []


class Source:
    name = "fake"

    def __init__(self, events):
        self.events = events

    def read(self):
        out, self.events = self.events, []
        return out


class Spaces:
    def touch(self, space):
        pass


def handle(rec, events):
    from wgnapid.spaces import Space

    d = Daemon.__new__(Daemon)
    d.log, d.spaces = rec.log, Spaces()
    d._handle_events(Space(rec.ns, rec, Source(events)))  # one namespace's events
    rec.drain()


def test_delete_and_create_of_one_ifindex_in_one_batch_are_two_links(fakesys, attr, rlog, clock):
    fakesys.add("va0", "0\n", 40, kind="veth")
    rec = make(attr, rlog, clock)
    handle(rec, [new(40, "va0")])
    assert rec.links[40].state == "threaded"
    fakesys.remove("va0")
    fakesys.add("va0", "0\n", 40, kind="veth")  # the ifindex reused, by a new link
    handle(rec, [gone(40), new(40, "va0")])
    assert fakesys.get("va0") == "1\n"
    assert [e[0] for e in rlog.events] == ["link-threaded", "link-gone", "link-threaded"]
    assert not [e for e in rlog.events if "re-asserted" in e[2]]


def test_moved_in_and_renamed_the_old_name_first_is_not_acted_on(fakesys, attr, rlog, clock):
    # `ip link set t0 netns A name y0`: RTM_NEWLINK(t0) then RTM_NEWLINK(y0).
    fakesys.add("y0", "0\n", 3, kind="veth")
    rec = make(attr, rlog, clock, rule("ts", "off", kinds=["veth"], interfaces=["t*"]),
               rule("ys", "on", kinds=["veth"], interfaces=["y*"]))
    handle(rec, [new(3, "t0")])  # handled alone (another batch): the name is proven stale
    assert rec.links[3].name == "y0" and rec.links[3].state == "threaded"
    handle(rec, [new(3, "y0")])
    assert [e[3]["interface"] for e in rlog.events] == [b"y0"]
    assert fakesys.get("y0") == "1\n"


def test_a_stale_name_after_a_rename_writes_the_renamed_link_not_the_new_owner(fakesys, attr, rlog, clock):
    fakesys.add("t0", "0\n", 5)
    rec = make(attr, rlog, clock, rule("wg", "on", kinds=["wireguard"]))
    fakesys.rename("t0", "r0")
    fakesys.add("t0", "0\n", 6, kind="veth")
    st = rec.observe(Link(5, "t0", "wireguard"))  # the event of its creation, handled late
    assert (st.name, st.state) == ("r0", "threaded")
    assert (fakesys.get("r0"), fakesys.get("t0")) == ("1\n", "0\n")
    assert attr.writes == [("r0", 1)]
    assert rlog.events[0][3]["interface"] == b"r0" and rlog.events[0][2].startswith("r0: ")


def test_renamed_out_of_its_rule_is_left_alone(fakesys, attr, rlog, clock):
    fakesys.add("zz0", "0\n", 5)
    rec = make(attr, rlog, clock, rule("wg", "on", kinds=["wireguard"], interfaces=["wg*"]))
    st = rec.observe(Link(5, "wg0", "wireguard"))  # it was wg0 when the event was sent
    assert (st.name, st.state, st.rule) == ("zz0", "unmatched", None)
    assert attr.writes == [] and fakesys.get("zz0") == "0\n"


def test_a_rename_during_the_write_names_the_link_right_and_hits_it(fakesys, attr, rlog, clock):
    fakesys.add("wg0", "0\n", 5)
    attr.gate = threading.Event()
    rec = make(attr, rlog, clock)
    rec.inline = False  # the write goes to a writer thread and is held there
    rec.observe_many([(Link(5, "wg0", "wireguard"), True)], wait=False)
    assert until(lambda: len(attr.writes) == 1)  # the write is "in the kernel"
    fakesys.rename("wg0", "r0")
    fakesys.add("wg0", "0\n", 6, kind="veth")  # another link takes the name
    rec.observe_many([(Link(5, "r0", "wireguard"), False)], wait=False)
    assert rec.links[5].name == "r0"  # followed at once, not after the write
    attr.gate.set()
    rec.drain()
    rec.close()
    assert (fakesys.get("r0"), fakesys.get("wg0")) == ("1\n", "0\n")
    assert rec.links[5].state == "threaded" and rec.links[5].name == "r0"
    assert [(e[0], e[3]["interface"]) for e in rlog.events] == [("link-threaded", b"r0")]
    assert not [e for e in rlog.events if "re-asserted" in e[2]]
