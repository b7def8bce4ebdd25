"""wgnapid.policy.decide: the first matching rule decides; kinds and name globs."""

import pytest

from wgnapid.policy import UNMATCHED, Decision, covers_netns, decide

from .helpers import policy, rule


def test_first_match_wins_even_when_a_later_rule_is_more_specific():
    p = policy(
        rule("all-wg", "on", kinds=["wireguard"]),
        rule("wg-lab", "off", kinds=["wireguard"], interfaces=["wg-lab*"]),
    )
    assert decide(p, "wg-lab0", "wireguard") == Decision("all-wg", "on")


def test_an_earlier_specific_rule_shadows_a_later_catch_all():
    p = policy(
        rule("lab-off", "off", kinds=["wireguard"], interfaces=["wg-lab*"]),
        rule("lab-ignored", "ignore", interfaces=["wg-lab*"]),
        rule("all-wg", "on", kinds=["wireguard"]),
    )
    assert decide(p, "wg-lab0", "wireguard") == Decision("lab-off", "off")
    assert decide(p, "wg0", "wireguard") == Decision("all-wg", "on")
    # Kind mismatch on the first rule: the second one (any kind) is next.
    assert decide(p, "wg-lab1", "veth") == Decision("lab-ignored", "ignore")


def test_star_kind_matches_any_kind_including_none():
    p = policy(rule("any", "on", kinds=["*"], interfaces=["eth*"]))
    for kind in ("veth", "wireguard", "tun", ""):
        assert decide(p, "eth0", kind) == Decision("any", "on"), kind


def test_specific_kind_is_an_exact_match_not_a_glob_or_prefix():
    p = policy(rule("wg", "on", kinds=["wireguard"]))
    assert decide(p, "wg0", "wireguard").rule == "wg"
    assert decide(p, "wg0", "wireguard2") is UNMATCHED
    assert decide(p, "wg0", "wire") is UNMATCHED
    assert decide(p, "wg0", "WireGuard") is UNMATCHED
    assert decide(p, "wg0", "") is UNMATCHED


def test_a_kind_pattern_with_glob_characters_is_taken_literally():
    # kinds are IFLA_INFO_KIND values: only a lone "*" means "any".
    p = policy(rule("v", "on", kinds=["v*"]))
    assert decide(p, "x", "veth") is UNMATCHED


def test_several_kinds_in_one_rule():
    p = policy(rule("virt", "on", kinds=["veth", "tun"]))
    assert decide(p, "a", "veth").rule == "virt"
    assert decide(p, "a", "tun").rule == "virt"
    assert decide(p, "a", "wireguard") is UNMATCHED


def test_empty_kind_matches_only_star_or_an_explicit_empty_kind():
    p = policy(rule("wg", "on", kinds=["wireguard"]), rule("rest", "off"))
    assert decide(p, "lo", "") == Decision("rest", "off")


@pytest.mark.parametrize(
    "pattern, name, matches",
    [
        ("*", "anything", True),
        ("wg*", "wg0", True),
        ("wg*", "wg", True),
        ("wg*", "xwg0", False),
        ("wg?", "wg1", True),
        ("wg?", "wg10", False),
        ("wg[0-3]", "wg2", True),
        ("wg[0-3]", "wg7", False),
        ("wg[!0-3]", "wg7", True),
        ("wg0", "wg0", True),
        ("wg0", "wg01", False),
        # Case-sensitive, whatever the platform's fnmatch default.
        ("WG*", "wg0", False),
        ("wg*", "WG0", False),
        ("Wg0", "wg0", False),
    ],
)
def test_interface_globs(pattern, name, matches):
    p = policy(rule("r", "on", interfaces=[pattern]))
    assert (decide(p, name, "wireguard").rule == "r") is matches


def test_any_of_several_interface_patterns_matches():
    p = policy(rule("r", "on", interfaces=["wg-a*", "wg-b*"]))
    assert decide(p, "wg-b7", "wireguard").rule == "r"
    assert decide(p, "wg-c7", "wireguard") is UNMATCHED


def test_kind_and_name_must_both_match():
    p = policy(rule("r", "on", kinds=["wireguard"], interfaces=["wg*"]))
    assert decide(p, "wg0", "veth") is UNMATCHED
    assert decide(p, "eth0", "wireguard") is UNMATCHED


def test_unmatched_is_rule_none_and_ignore():
    p = policy(rule("wg", "on", kinds=["wireguard"]))
    d = decide(p, "eth0", "veth")
    assert d.rule is None and d.wanted == "ignore"


def test_no_rules_at_all_is_unmatched():
    assert decide(policy(), "wg0", "wireguard") == Decision(None, "ignore")


@pytest.mark.parametrize("threaded", ["on", "off", "ignore"])
def test_wanted_is_the_rules_threaded_value(threaded):
    p = policy(rule("r", threaded))
    assert decide(p, "wg0", "wireguard") == Decision("r", threaded)


def test_ignore_rule_is_distinguishable_from_unmatched():
    p = policy(rule("quiet", "ignore", kinds=["veth"]))
    assert decide(p, "v0", "veth") == Decision("quiet", "ignore")
    assert decide(p, "v0", "veth") != UNMATCHED


def test_netns_globs_match_the_namespace_name():
    p = policy(
        rule("tenants", "on", kinds=["wireguard"], netns=["tenant-*", "docker:*"]),
        rule("lab", "off", kinds=["wireguard"], netns=["pid:*"]),
    )
    assert decide(p, "wg0", "wireguard", "tenant-a") == Decision("tenants", "on")
    assert decide(p, "wg0", "wireguard", "docker:3f2a") == Decision("tenants", "on")
    assert decide(p, "wg0", "wireguard", "pid:4242") == Decision("lab", "off")
    assert decide(p, "wg0", "wireguard", "self") is UNMATCHED
    # Case-sensitive, like the interface globs.
    assert decide(p, "wg0", "wireguard", "Tenant-a") is UNMATCHED


def test_netns_defaults_to_every_namespace_including_self():
    p = policy(rule("wg", "on", kinds=["wireguard"]))
    for ns in ("self", "tenant-a", "docker:1", "pid:1"):
        assert decide(p, "wg0", "wireguard", ns) == Decision("wg", "on"), ns
    # Without a namespace, a link is the daemon's own.
    assert decide(policy(rule("s", "on", netns=["self"])), "x", "veth") == Decision("s", "on")


def test_covers_netns_is_any_rule_whatever_its_kind_or_value():
    p = policy(rule("a", "ignore", kinds=["veth"], netns=["wgn-*"]), rule("b", "on", netns=["self"]))
    assert covers_netns(p, "wgn-1") and covers_netns(p, "self")
    assert not covers_netns(p, "pid:7") and not covers_netns(policy(), "self")
