"""wgnapid.ifname: the kernel's name rule (dev_valid_name), lossless decoding,
escaping for text and JSON. The same table is checked against the running
kernel in tests/integration/test_names.py."""

from __future__ import annotations

import json

import pytest

from wgnapid import ifname

# (bytes, accepted by the kernel). Seen on 6.18 through RTM_NEWLINK.
KERNEL_TABLE = [
    (b"wg0", True), (b"a" * 15, True), (b"a" * 16, False), (b"", False),
    (b".", False), (b"..", False), (b"...", True), (b".a", True),
    (b"a/b", False), (b"a:b", False), (b"a b", False), (b"a\tb", False), (b"a\nb", False),
    (b"a\vb", False), (b"a\fb", False), (b"a\rb", False),
    (b"a\xa0b", False),  # the kernel's isspace() is Latin-1: 0xA0 is a space
    (b"\xc3\xa0", False),  # so "à" (C3 A0) is refused
    (b"a\x85b", True), (b"a\x1cb", True), (b"a\x1fb", True), (b"a\x7fb", True),
    (b"wg\xff", True), (b"x\xe2\x80\x83y", True),  # U+2003 EM SPACE: accepted
    (b"a\\b", True), (b"\xff" * 15, True), (b"\xc3\xa9" * 7, True), (b"\xc3\xa9" * 8, False),
]


@pytest.mark.parametrize("raw, accepted", KERNEL_TABLE, ids=[r.hex() or "empty" for r, _ in KERNEL_TABLE])
def test_the_kernel_rule(raw, accepted):
    assert ifname.valid(raw) is accepted
    assert ifname.valid(ifname.decode(raw)) is accepted
    assert (ifname.problem(raw) is None) is accepted


def test_nul_is_refused():
    assert not ifname.valid(b"a\0b")


@pytest.mark.parametrize("raw", [r for r, ok in KERNEL_TABLE if ok])
def test_decoding_is_lossless(raw):
    assert ifname.encode(ifname.decode(raw)) == raw


@pytest.mark.parametrize("raw, text", [
    (b"wg0", "wg0"), (b"wg\xff", "wg\\xff"), (b"x\xe2\x80\x83y", "x\\u2003y"), (b"a\\b", "a\\\\b"),
    (b"a\x1fb", "a\\x1fb"), (b"\xc3\xa9t\xc3\xa9", "été"),
])
def test_printable_escapes_what_a_terminal_would_not_show(raw, text):
    assert ifname.printable(raw) == text
    assert ifname.printable(ifname.decode(raw)) == text
    assert text.isprintable()


def test_json_fields_are_exact():
    for raw in (b"wg0", b"wg\xff", b"x\xe2\x80\x83y"):
        doc = json.loads(json.dumps(ifname.json_fields(ifname.decode(raw))))
        assert bytes.fromhex(doc["name_hex"]) == raw
    assert ifname.json_fields("x\u2003y")["name"] == "x\u2003y"
    assert ifname.json_fields("wg\udcff")["name"] == "wg\\xff"


def test_policy_globs_match_such_names():
    from wgnapid.policy import decide

    from .helpers import policy, rule

    pol = policy(rule("wg", "on", interfaces=["wg*"]), rule("em", "off", interfaces=["x\u2003*"]))
    assert decide(pol, ifname.decode(b"wg\xff"), "veth").rule == "wg"
    assert decide(pol, ifname.decode(b"x\xe2\x80\x83y"), "veth").rule == "em"
