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


def _matches(rule: Rule, name: str, kind: str) -> bool:
    if "*" not in rule.kinds and kind not in rule.kinds:
        return False
    return any(fnmatchcase(name, pattern) for pattern in rule.interfaces)


def decide(policy: Policy, name: str, kind: str) -> Decision:
    """First matching rule decides; ``kind`` is IFLA_INFO_KIND ("" when none)."""
    for rule in policy.rules:
        if _matches(rule, name, kind):
            return Decision(rule=rule.name, wanted=rule.threaded)
    return UNMATCHED
