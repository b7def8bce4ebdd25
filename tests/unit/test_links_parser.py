"""wgnapid.links: the minimal rtnetlink reader on hand-built netlink bytes."""

from __future__ import annotations

import socket
import struct

import pytest

from wgnapid import links
from wgnapid.links import (IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINKINFO, NLM_F_DUMP_INTR,
                           NLM_F_MULTI, NLMSG_DONE, RTM_DELLINK, RTM_NEWLINK, Link, _messages,
                           parse_link)

IFLA_MTU, IFLA_INFO_DATA, IFLA_STATS64 = 4, 2, 23
NLA_F_NESTED, NLA_F_NET_BYTEORDER = 0x8000, 0x4000


def rta(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes (the length field excludes the padding)."""
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def ifinfomsg(ifindex: int, flags: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 1, ifindex, flags, 0)


def nlmsg(mtype: int, body: bytes, flags: int = 0, seq: int = 0) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), mtype, flags, seq, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def link_body(ifindex: int, name: str | None, kind: str | None, *, nested_flag=0,
              extra_before=b"", extra_after=b"") -> bytes:
    body = ifinfomsg(ifindex) + extra_before
    if name is not None:
        body += rta(IFLA_IFNAME, name.encode() + b"\0")
    if kind is not None:
        info = rta(IFLA_INFO_KIND, kind.encode() + b"\0")
        body += rta(IFLA_LINKINFO | nested_flag, info)
    return body + extra_after


def parse_all(buf: bytes) -> list[tuple[int, int, int, Link | None]]:
    out = []
    for mtype, flags, seq, data, start, end in _messages(buf):
        link = parse_link(data, start, end) if mtype in (RTM_NEWLINK, RTM_DELLINK) else None
        out.append((mtype, flags, seq, link))
    return out


def parse_body(body: bytes) -> Link:
    return parse_link(memoryview(body), 0, len(body))


# -- well-formed messages ---------------------------------------------------------


def test_wireguard_link():
    assert parse_body(link_body(7, "wg0", "wireguard")) == Link(7, "wg0", "wireguard")


def test_no_linkinfo_means_empty_kind():
    assert parse_body(link_body(1, "lo", None)) == Link(1, "lo", "")


def test_linkinfo_without_a_kind():
    body = ifinfomsg(3) + rta(IFLA_IFNAME, b"eth0\0") + rta(IFLA_LINKINFO, rta(IFLA_INFO_DATA, b""))
    assert parse_body(body) == Link(3, "eth0", "")


def test_nested_flag_on_linkinfo_is_masked():
    assert parse_body(link_body(7, "wg0", "wireguard", nested_flag=NLA_F_NESTED)).kind == "wireguard"


def test_byteorder_flag_is_masked_too():
    body = ifinfomsg(2) + rta(IFLA_IFNAME | NLA_F_NET_BYTEORDER, b"v0\0")
    assert parse_body(body).name == "v0"


def test_kind_after_info_data_is_found():
    info = rta(IFLA_INFO_DATA | NLA_F_NESTED, rta(1, b"\x01\x00\x00\x00")) + rta(IFLA_INFO_KIND, b"veth\0")
    body = ifinfomsg(4) + rta(IFLA_IFNAME, b"veth0\0") + rta(IFLA_LINKINFO, info)
    assert parse_body(body) == Link(4, "veth0", "veth")


def test_info_data_that_looks_like_a_kind_is_not_taken():
    # Type 1 inside IFLA_INFO_DATA is a driver attribute, not IFLA_INFO_KIND.
    info = rta(IFLA_INFO_KIND, b"vlan\0") + rta(IFLA_INFO_DATA, rta(IFLA_INFO_KIND, b"xxxx\0"))
    body = ifinfomsg(4) + rta(IFLA_LINKINFO, info)
    assert parse_body(body).kind == "vlan"


@pytest.mark.parametrize("name", ["a", "ab", "abc", "wg0x", "wg-office", "x" * 15])
def test_names_of_every_padding_length_then_more_attributes(name):
    # The attribute after the name is only found if padding is handled.
    body = link_body(9, name, "wireguard", extra_after=rta(IFLA_MTU, struct.pack("=I", 1420)))
    assert parse_body(body) == Link(9, name, "wireguard")
    body = ifinfomsg(9) + rta(IFLA_IFNAME, name.encode() + b"\0") + rta(
        IFLA_LINKINFO, rta(IFLA_INFO_KIND, b"tun\0"))
    assert parse_body(body) == Link(9, name, "tun")


def test_unknown_and_large_attributes_are_skipped():
    before = rta(IFLA_MTU, struct.pack("=I", 1500)) + rta(IFLA_STATS64, b"\0" * 200) + rta(999, b"z")
    body = link_body(11, "wg1", "wireguard", extra_before=before)
    assert parse_body(body) == Link(11, "wg1", "wireguard")


def test_name_without_nul_and_with_non_utf8():
    body = ifinfomsg(2) + rta(IFLA_IFNAME, b"wg0")
    assert parse_body(body).name == "wg0"
    body = ifinfomsg(2) + rta(IFLA_IFNAME, b"w\xffg\0")
    # Lossless (surrogateescape): the kernel's bytes come back exactly.
    name = parse_body(body).name
    assert name == "w\udcffg" and name.encode("utf-8", "surrogateescape") == b"w\xffg"


def test_largest_ifindex():
    assert parse_body(link_body(2**31 - 1, "a", None)).ifindex == 2**31 - 1


def test_parse_at_an_offset_inside_a_bigger_buffer():
    body = link_body(7, "wg0", "wireguard")
    buf = b"\xaa" * 20 + body + b"\xbb" * 20
    assert parse_link(memoryview(buf), 20, 20 + len(body)) == Link(7, "wg0", "wireguard")


# -- several messages ------------------------------------------------------------------


def test_messages_splits_a_dump_reply():
    buf = (
        nlmsg(RTM_NEWLINK, link_body(1, "lo", None), NLM_F_MULTI, 42)
        + nlmsg(RTM_NEWLINK, link_body(7, "wg0", "wireguard"), NLM_F_MULTI | NLM_F_DUMP_INTR, 42)
        + nlmsg(RTM_DELLINK, link_body(8, "veth0", "veth"), 0, 0)
        + nlmsg(NLMSG_DONE, struct.pack("=i", 0), NLM_F_MULTI, 42)
    )
    assert parse_all(buf) == [
        (RTM_NEWLINK, NLM_F_MULTI, 42, Link(1, "lo", "")),
        (RTM_NEWLINK, NLM_F_MULTI | NLM_F_DUMP_INTR, 42, Link(7, "wg0", "wireguard")),
        (RTM_DELLINK, 0, 0, Link(8, "veth0", "veth")),
        (NLMSG_DONE, NLM_F_MULTI, 42, None),
    ]


def test_messages_offsets_exclude_the_header_and_follow_padding():
    body = link_body(7, "wg0x", "tun")[:-1]  # odd length: the message is padded
    first = nlmsg(RTM_NEWLINK, body)
    assert len(first) % 4 == 0 and len(first) > 16 + len(body)
    spans = [(start, end) for *_x, start, end in _messages(first + first)]
    assert spans == [(16, 16 + len(body)), (len(first) + 16, len(first) + 16 + len(body))]


def test_messages_empty_buffer():
    assert list(_messages(b"")) == []


def test_messages_stops_at_a_zero_header():
    # A header shorter than itself would loop forever if not stopped.
    buf = nlmsg(RTM_NEWLINK, link_body(1, "lo", None)) + b"\0" * 32
    assert [l for *_, l in parse_all(buf)] == [Link(1, "lo", "")]


def test_messages_ignores_trailing_bytes_shorter_than_a_header():
    buf = nlmsg(RTM_NEWLINK, link_body(1, "lo", None)) + b"\x01\x02\x03"
    assert len(parse_all(buf)) == 1


# -- truncated and garbage input: no exception, good parts kept --------------------------------


def test_zero_length_attribute_stops_attribute_parsing():
    body = ifinfomsg(5) + rta(IFLA_IFNAME, b"wg0\0") + struct.pack("=HH", 0, IFLA_LINKINFO) + b"\0" * 8
    assert parse_body(body) == Link(5, "wg0", "")


def test_attribute_length_below_header_size():
    body = ifinfomsg(5) + rta(IFLA_IFNAME, b"wg0\0") + struct.pack("=HH", 3, IFLA_MTU) + b"\0" * 8
    assert parse_body(body) == Link(5, "wg0", "")


def test_name_attribute_claiming_more_than_the_message():
    body = ifinfomsg(5) + struct.pack("=HH", 200, IFLA_IFNAME) + b"wg0\0"
    link = parse_body(body)
    assert link.ifindex == 5


def test_linkinfo_claiming_more_than_the_buffer():
    body = ifinfomsg(5) + rta(IFLA_IFNAME, b"wg0\0") + struct.pack("=HH", 64, IFLA_LINKINFO)
    link = parse_body(body)
    assert (link.ifindex, link.name) == (5, "wg0")


def test_linkinfo_cut_inside_its_kind():
    whole = link_body(5, "wg0", "wireguard")
    cut = whole[:-6]
    link = parse_body(cut)
    assert (link.ifindex, link.name) == (5, "wg0")


def test_kind_claiming_more_than_its_linkinfo():
    inner = struct.pack("=HH", 40, IFLA_INFO_KIND) + b"wireguard\0\0\0"
    body = ifinfomsg(5) + rta(IFLA_IFNAME, b"wg0\0") + rta(IFLA_LINKINFO, inner)
    link = parse_body(body)
    assert (link.ifindex, link.name) == (5, "wg0")


def test_message_shorter_than_ifinfomsg():
    buf = struct.pack("=IHHII", 20, RTM_NEWLINK, 0, 0, 0) + b"\0\0\0\0"
    parse_all(buf)  # must not raise


def test_message_header_claiming_more_than_the_buffer():
    # A cut recv: the second message's header says more than arrived.
    good = nlmsg(RTM_NEWLINK, link_body(1, "lo", None))
    cut = nlmsg(RTM_NEWLINK, link_body(7, "wg0", "wireguard"))[:30]
    out = parse_all(good + cut)
    assert out[0][3] == Link(1, "lo", "")


def test_nothing_past_end_is_read():
    # The name attribute claims 3 bytes more than the message has; the bytes
    # after `end` belong to someone else (the next message).
    body = ifinfomsg(5) + struct.pack("=HH", 4 + 3 + 3, IFLA_IFNAME) + b"wg0"
    buf = body + b"XYZ" + b"\0" * 8
    link = parse_link(memoryview(buf), 0, len(body))
    assert link == Link(5, "wg0", "")


def test_garbage_inside_attributes_never_raises():
    # Random bytes in the attributes of a message whose own length is right.
    import random

    rng = random.Random(1)
    whole = nlmsg(RTM_NEWLINK, link_body(7, "wg0", "wireguard",
                                         extra_after=rta(IFLA_MTU, b"\0\0\0\0")))
    for _ in range(2000):
        buf = bytearray(whole)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(32, len(buf))] = rng.randrange(256)
        (mtype, _f, _s, link), = parse_all(bytes(buf))
        assert link.ifindex == 7


def test_a_buffer_cut_anywhere_never_raises():
    # A recv cut short (or a header lying about its length) at every offset.
    whole = (nlmsg(RTM_NEWLINK, link_body(1, "lo", None))
             + nlmsg(RTM_NEWLINK, link_body(7, "wg0", "wireguard")))
    failures = []
    for cut in range(len(whole) + 1):
        try:
            parse_all(whole[:cut])
        except Exception as exc:  # noqa: BLE001 - any exception is the failure
            failures.append((cut, repr(exc)))
    assert failures == []
