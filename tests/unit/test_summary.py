"""wgnapid.summary: the one line after a full pass, from a real Reconciler's states."""

from __future__ import annotations

import syslog

from wgnapid import kernel
from wgnapid.links import Link
from wgnapid.reconciler import Reconciler
from wgnapid.summary import NAMES_SHOWN, describe_policy, describe_rule, pass_summary
from .helpers import fake_ns, policy, rule

SAFE = kernel.verdict_for("6.12.117+deb12-amd64")


def _pass(fakesys, rlog, p, links):
    for link in links:
        fakesys.add(link.name, ifindex=link.ifindex, kind=link.kind)
    rec = Reconciler(p, rlog, fake_ns(fakesys), verdict=SAFE, peer_count=lambda name: 1)
    rec.sync(links)
    try:
        return pass_summary(rec.links.values(), p, "start-up")
    finally:
        rec.close()


def test_nothing_matched_says_so_with_the_links_seen_and_the_policy(fakesys, rlog):
    p = policy(rule("wireguard", "on", kinds=["wireguard"]))
    kind, priority, text = _pass(fakesys, rlog, p, [Link(1, "lo", ""), Link(2, "eth0", "")])
    assert kind == "nothing-to-do" and priority == syslog.LOG_NOTICE
    assert text == ("nothing to do after start-up: none of the 2 links here (eth0, lo) matches the policy "
                    '<test> (rule "wireguard" sets threaded on for wireguard links named *); watching for new links')


def test_no_links_at_all():
    kind, _, text = pass_summary([], policy(rule("any", "on")), "reload")
    assert kind == "nothing-to-do"
    assert text == ('nothing to do after reload: there are no links here; the policy is <test> '
                    '(rule "any" sets threaded on for links of any kind named *); watching for new links')


def test_one_link(fakesys, rlog):
    _, _, text = _pass(fakesys, rlog, policy(rule("wg", "on", kinds=["wireguard"])), [Link(1, "lo", "")])
    assert text.startswith("nothing to do after start-up: the one link here (lo) does not match the policy <test> (")


def test_matched_links_by_state_with_their_names(fakesys, rlog):
    p = policy(rule("on", "on", kinds=["veth"], interfaces=["va*"]),
               rule("off", "off", interfaces=["vo*"]),
               rule("quiet", "ignore", interfaces=["vi*"]))
    links = [Link(1, "lo", ""), Link(2, "va0", "veth"), Link(3, "va1", "veth"),
             Link(4, "vo0", "veth"), Link(5, "vi0", "veth")]
    kind, priority, text = _pass(fakesys, rlog, p, links)
    assert kind == "pass-summary" and priority == syslog.LOG_INFO
    assert text == ("start-up done: 4 of 5 links match the policy: 2 threaded (va0, va1), 1 kept off (vo0), "
                    "1 ignored by policy (vi0); watching for changes")


def test_long_name_lists_are_cut(fakesys, rlog):
    n = NAMES_SHOWN + 3
    links = [Link(10 + i, f"va{i}", "veth") for i in range(n)]
    _, _, text = _pass(fakesys, rlog, policy(rule("on", "on")), links)
    assert f"{n} threaded (va0, va1, va2, va3, va4 and 3 more)" in text


def test_rules_in_words():
    assert describe_rule(rule("all", "off")) == 'rule "all" sets threaded off for links of any kind named *'
    p = policy(rule("a", "on", kinds=["wireguard", "veth"], interfaces=["wg*", "va*"]), rule("b", "ignore"))
    assert describe_policy(p) == ('<test> (rule "a" sets threaded on for wireguard/veth links named wg* va*; '
                                  'rule "b" leaves links of any kind named * alone)')
    assert describe_policy(policy()) == "<test> (no rules)"
