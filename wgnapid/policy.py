"""The one policy function: what does a link get?"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from wgnapid.config import Policy, Rule


@dataclass(frozen=True, slots=True)
class Decision:
    rule: str | None  # name of the first matching rule; None: no rule matches
    wanted: str  # "on" | "off" | "ignore"; "ignore" when no rule matches


UNMATCHED = Decision(rule=None, wanted="ignore")


def _matches(rule: Rule, name: str, kind: str, netns: str) -> bool:
    if "*" not in rule.kinds and kind not in rule.kinds:
        return False
    if not _netns_matches(rule, netns):
        return False
    return any(fnmatchcase(name, pattern) for pattern in rule.interfaces)


def _netns_matches(rule: Rule, netns: str) -> bool:
    return "*" in rule.netns or any(fnmatchcase(netns, pattern) for pattern in rule.netns)


def decide(policy: Policy, name: str, kind: str, netns: str = "self") -> Decision:
    """First matching rule decides; ``kind`` is IFLA_INFO_KIND ("" when none),
    ``netns`` the display name of the link's network namespace ("self",
    a /run/netns name, "docker:<id>", "pid:<pid>"; see discovery.py)."""
    for rule in policy.rules:
        if _matches(rule, name, kind, netns):
            return Decision(rule=rule.name, wanted=rule.threaded)
    return UNMATCHED


def covers_netns(policy: Policy, netns: str) -> bool:
    """Whether any rule can match a link in the namespace called ``netns``: a
    namespace no rule covers is not entered at all (no sockets, no sysfs)."""
    return any(_netns_matches(rule, netns) for rule in policy.rules)
