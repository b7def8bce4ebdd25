"""What a whole pass found and did, and the policy in use, in plain words.

The daemon says this once after its first reconcile (and after a reload), so
that a person watching its log, in a terminal or with `kubectl logs`, learns
that it started, what it found and what it did, and so that a host with no
matching link (most laptops: no WireGuard) gets one line saying so rather
than silence.
"""

from __future__ import annotations

import syslog
from collections.abc import Iterable

from wgnapid.config import Policy, Rule
from wgnapid.ifname import printable
from wgnapid.reconciler import (FAILED, HELD, IGNORED, NATIVE, OFF, THREADED, WAITING,
                                LinkState)

NAMES_SHOWN = 5  # link names listed per state before "and N more"

# The order states are told in, with their words.
_STATES = (
    (THREADED, "threaded"),
    (WAITING, "waiting"),
    (HELD, "held by the kernel guard"),
    (NATIVE, "threaded by the kernel itself"),
    (OFF, "kept off"),
    (FAILED, "failed"),
    (IGNORED, "ignored by policy"),
)


def _names(names: list[str]) -> str:
    shown = ", ".join(printable(n) for n in sorted(names)[:NAMES_SHOWN])
    if len(names) > NAMES_SHOWN:
        shown += f" and {len(names) - NAMES_SHOWN} more"
    return shown


def describe_rule(rule: Rule) -> str:
    """One rule in words, e.g. ``rule "wireguard" sets threaded on for wireguard links named *``."""
    links = "links of any kind" if "*" in rule.kinds else f"{'/'.join(rule.kinds)} links"
    links += f" named {' '.join(rule.interfaces)}"
    if rule.threaded == "ignore":
        return f'rule "{rule.name}" leaves {links} alone'
    return f'rule "{rule.name}" sets threaded {rule.threaded} for {links}'


def describe_policy(policy: Policy) -> str:
    """The policy files and every rule in words, for one log line."""
    rules = "; ".join(describe_rule(rule) for rule in policy.rules) or "no rules"
    return f"{', '.join(policy.files)} ({rules})"


def pass_summary(links: Iterable[LinkState], policy: Policy, when: str) -> tuple[str, int, str]:
    """(MESSAGE_IDS kind, syslog priority, message) for the links a full pass
    left in the reconciler. ``when`` names the pass ("start-up", "reload").

    No matched link: kind "nothing-to-do" at LOG_NOTICE, naming the links seen
    and the policy, so that this is said even at log_level "notice". Otherwise
    "pass-summary" at LOG_INFO: how many links match and each state with its
    link names (at most NAMES_SHOWN each). Links in states the summary does not
    tell (none today) still count as matched.
    """
    links = list(links)
    matched = [st for st in links if st.rule is not None]
    if not matched:
        names = _names([st.name for st in links])
        if len(links) > 1:
            seen = f"none of the {len(links)} links here ({names}) matches the policy"
        elif links:
            seen = f"the one link here ({names}) does not match the policy"
        else:
            seen = "there are no links here; the policy is"
        return (
            "nothing-to-do", syslog.LOG_NOTICE,
            f"nothing to do after {when}: {seen} {describe_policy(policy)}; watching for new links",
        )
    parts = []
    for state, words in _STATES:
        names = [st.name for st in matched if st.state == state]
        if names:
            parts.append(f"{len(names)} {words} ({_names(names)})")
    return (
        "pass-summary", syslog.LOG_INFO,
        f"{when} done: {len(matched)} of {len(links)} links match the policy: {', '.join(parts)}; "
        "watching for changes",
    )
