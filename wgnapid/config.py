"""Finding, parsing and validating the policy.

Every problem becomes one line that names the file, the key path and what is
wrong, e.g. ``/etc/wgnapid/wgnapid.toml: rules[1].threaded: Input should be
'on', 'off' or 'ignore'``.
"""

from __future__ import annotations

import glob
import os
import tomllib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_PATH = "/etc/wgnapid/wgnapid.toml"
BUILTIN = "<built-in default>"

# The built-in policy: equal to the shipped config/wgnapid.toml (a test keeps
# the two in step).
BUILTIN_TOML = """
[daemon]
source = "netlink"
resync_interval = 30
pending_max_delay = 2
log_level = "info"
kernel_guard = "strict"
stall_window = 30

[[rules]]
name = "wireguard"
kinds = ["wireguard"]
interfaces = ["*"]
threaded = "on"
"""

# strict float still takes TOML integers.
Seconds = Annotated[float, Field(gt=0, le=86400)]


class _Strict(BaseModel):
    # strict: TOML already has types; "30" for a number is a mistake to report.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DaemonConfig(_Strict):
    source: Literal["netlink", "udev"] = "netlink"
    resync_interval: Seconds = 30
    pending_max_delay: Seconds = 2
    log_level: Literal["debug", "info", "notice", "warning", "error"] = "info"
    kernel_guard: Literal["strict", "warn", "off"] = "strict"
    stall_window: float = Field(
        default=30, ge=0, le=86400,
        description=(
            "Seconds between reads of the peer counters of threaded WireGuard links, to "
            "notice a peer whose receive side has stopped (CVE-2026-52945): one warning per "
            "stalled peer, one notice when it recovers, stalled peers in `wgnapid status` and "
            "`wgnapid doctor`. A suspicion is confirmed by one more read 12 s later, so a "
            "stall shows within two windows + 12 s. Default 30; 0 turns the watch off."),
    )


class Rule(_Strict):
    name: str = Field(min_length=1)
    kinds: list[str] = Field(default=["*"], min_length=1)
    interfaces: list[str] = Field(default=["*"], min_length=1)
    threaded: Literal["on", "off", "ignore"]

    @field_validator("kinds", "interfaces")
    @classmethod
    def _no_empty_patterns(cls, value: list[str]) -> list[str]:
        if any(not item for item in value):
            raise ValueError("empty pattern")
        return value


class PolicyFile(_Strict):
    daemon: DaemonConfig = DaemonConfig()
    rules: list[Rule] = []


class Policy(BaseModel):
    """The merged policy the daemon runs with."""

    model_config = ConfigDict(frozen=True)
    daemon: DaemonConfig
    rules: tuple[Rule, ...]
    files: tuple[str, ...]


class ConfigError(Exception):
    """One or more one-line errors, each naming file, key and problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _errors(path: str, exc: ValidationError, data: dict) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        where = _loc(loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rules = data.get("rules")
            if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
                name = rules[loc[1]].get("name")
                if isinstance(name, str) and name:
                    where += f' (rule "{name}")'
        lines.append(f"{path}: {where}: {msg}")
    return lines


def parse_file(path: str, text: str) -> PolicyFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message carries "(at line N, column M)".
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None
    try:
        return PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_errors(path, exc, data)) from None


def read_file(path: str) -> PolicyFile:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 at byte {exc.start}"]) from None
    return parse_file(path, text)


def policy_paths(config: str | None) -> tuple[str | None, list[str]]:
    """(main file or None when it does not exist, conf.d snippets in lexical order)."""
    if config is not None:
        return config, []
    main = DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None
    snippets = sorted(glob.glob(os.path.join(os.path.dirname(DEFAULT_PATH), "conf.d", "*.toml")))
    return main, snippets


def builtin() -> PolicyFile:
    return parse_file(BUILTIN, BUILTIN_TOML)


def load(config: str | None = None) -> Policy:
    """Load the policy: ``config`` alone when given, else the default file (or the
    built-in default when it is missing) with conf.d snippets on top: later
    daemon keys override, rules append. All errors are collected, not just the first."""
    main, snippets = policy_paths(config)
    errors: list[str] = []
    parts: list[tuple[str, PolicyFile]] = []
    for path in ([main] if main else []) + snippets:
        try:
            parts.append((path, read_file(path)))
        except ConfigError as exc:
            errors.extend(exc.lines)
    if errors:
        raise ConfigError(errors)
    if main is None:
        parts.insert(0, (BUILTIN, builtin()))

    daemon: dict = {}
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for path, part in parts:
        daemon.update({k: getattr(part.daemon, k) for k in part.daemon.model_fields_set})
        for i, rule in enumerate(part.rules):
            if rule.name in seen:
                errors.append(
                    f'{path}: rules[{i}].name: duplicate rule name "{rule.name}" '
                    f"(first in {seen[rule.name]})"
                )
            seen[rule.name] = path
            rules.append(rule)
    if errors:
        raise ConfigError(errors)
    return Policy(
        daemon=DaemonConfig(**daemon),
        rules=tuple(rules),
        files=tuple(path for path, _ in parts),
    )
