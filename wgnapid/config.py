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

# strict float still takes TOML integers. nan and inf are refused as such
# ("Input should be a finite number"), not with a misleading bound message.
# The lower bounds keep the loop from burning a core: the retry timer of a
# waiting link fires about every 0.9 * pending_max_delay, and a full re-list
# of every link runs every resync_interval.
PENDING_MAX_DELAY_MIN = 0.1  # seconds
RESYNC_INTERVAL_MIN = 1.0  # seconds
Seconds = Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)]


class _Strict(BaseModel):
    # strict: TOML already has types; "30" for a number is a mistake to report.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DaemonConfig(_Strict):
    """How the daemon runs: where events come from, how often it re-reads, what it logs.
    Later files (conf.d snippets) override single keys."""

    stall_window: float = Field(
        default=30, ge=0, le=86400,
        description=(
            "Seconds between reads of the peer counters of threaded WireGuard links, to "
            "notice a peer whose receive side has stopped (CVE-2026-52945): one warning per "
            "stalled peer, one notice when it recovers, stalled peers in `wgnapid status` and "
            "`wgnapid doctor`. A suspicion is confirmed by one more read 12 s later, so a "
            "stall shows within two windows + 12 s (and the time a read takes). Default 30; 0 "
            "turns the watch off."),
    )

    namespaces: Literal["self", "all"] = Field(
        default="self",
        description=(
            'Which network namespaces the daemon covers: "self" (default) only the one it '
            'runs in; "all" every namespace on the host: named ones (/run/netns, Docker\'s '
            "/run/docker/netns, both watched with inotify) and every namespace a process is in "
            "(a /proc scan at start and every resync_interval). \"all\" needs CAP_SYS_ADMIN "
            "(setns, and a sysfs instance per namespace); `apply`, `status` and `doctor` follow it too."
        ),
    )

    source: Literal["netlink", "udev"] = Field(
        "netlink",
        description="Where link events come from: rtnetlink (netlink) or kernel uevents "
        "through libudev (udev). Events only say when to look; values are always read "
        "back from sysfs.",
    )
    resync_interval: Seconds = Field(
        30,
        json_schema_extra={"minimum": RESYNC_INTERVAL_MIN},  # checked by _resync_floor
        description="Seconds between full re-reads of every matched link; re-asserts a "
        "threaded flag that was cleared without an event.",
    )
    pending_max_delay: Seconds = Field(
        2,
        json_schema_extra={"minimum": PENDING_MAX_DELAY_MIN},  # checked by _pending_floor
        description="Longest wait, in seconds, between retries of a link that cannot be "
        "set yet (a WireGuard link before its first peer: adding a peer emits no event).",
    )
    log_level: Literal["debug", "info", "notice", "warning", "error"] = Field(
        "info", description="Lowest priority logged; --log-level overrides it."
    )
    kernel_guard: Literal["strict", "warn", "off"] = Field(
        "strict",
        description="On kernels older than 6.10 (threaded NAPI on WireGuard can stall "
        "receive for good, CVE-2026-52945): strict holds WireGuard links, warn enables "
        "them with a warning, off does not check.",
    )

    @field_validator("resync_interval")
    @classmethod
    def _resync_floor(cls, value: float) -> float:
        if value < RESYNC_INTERVAL_MIN:
            raise ValueError(f"must be at least {RESYNC_INTERVAL_MIN:g} s (every link is re-read this often)")
        return value

    @field_validator("pending_max_delay")
    @classmethod
    def _pending_floor(cls, value: float) -> float:
        if value < PENDING_MAX_DELAY_MIN:
            raise ValueError(f"must be at least {PENDING_MAX_DELAY_MIN:g} s (a waiting link is retried "
                             "this often; less would keep a core busy)")
        return value

    metrics_file: str | None = Field(
        default=None,
        description=(
            "Path (string) of a Prometheus text-format file the daemon keeps up to date for "
            "node_exporter's textfile collector (it must end in .prom), replaced atomically after "
            "state changes and at each resync, at most every 5 s, and less often on big hosts (its "
            "writes are kept to 2% of one core: about 50 s apart with 10,000 links). Default: unset (no "
            "metrics). Needs the optional prometheus-client library and a unit drop-in "
            "that makes the directory writable (systemd/drop-ins/metrics.conf)."
        ),
    )

    @field_validator("metrics_file")
    @classmethod
    def _metrics_path(cls, value: str | None) -> str | None:
        if value is not None and (not os.path.isabs(value) or not value.endswith(".prom")):
            raise ValueError("must be an absolute path ending in .prom (node_exporter reads only those)")
        return value

class Rule(_Strict):
    """One rule: which links it matches and what they get. Rules are tried in
    order; the first that matches a link decides, and a link no rule matches is
    left alone. Files append their rules."""

    name: str = Field(
        min_length=1, description="Unique name, used in logs (WGNAPID_RULE=) and status."
    )
    kinds: list[str] = Field(
        default=["*"],
        min_length=1,
        description='IFLA_INFO_KIND values to match (e.g. "wireguard", "veth"); "*" matches any kind.',
    )
    interfaces: list[str] = Field(
        default=["*"],
        min_length=1,
        description="Shell globs on the interface name (case-sensitive).",
    )
    netns: list[str] = Field(
        default=["*"],
        min_length=1,
        description=(
            "Shell globs (case-sensitive) on the name of the link's network namespace: "
            '"self" for the daemon\'s own, the /run/netns name for a named one, "docker:<id>" '
            'for Docker\'s, "pid:<pid>" (the lowest PID in it) otherwise. Default ["*"]: every '
            'namespace. Only matters with daemon.namespaces = "all"; a namespace that no rule '
            "matches is not even entered."
        ),
    )
    threaded: Literal["on", "off", "ignore"] = Field(
        description="What matched links get: on writes 1 to /sys/class/net/<dev>/threaded, "
        "off writes 0, ignore leaves them alone (shown in status)."
    )
    cpus: str | None = Field(
        default=None,
        description=(
            'CPUs (kernel list format, e.g. "2-15,18") the matched links\' NAPI kernel threads '
            "may run on, applied to every thread as soon as it exists, and again whenever the "
            "kernel re-creates them. Every CPU must exist and be online. Default: unset "
            "(threads stay where the kernel puts them)."
        ),
    )
    sched: str | None = Field(
        default=None,
        description=(
            'Scheduling of the matched links\' NAPI kernel threads: "other" (nice 0), '
            '"other:nice=N" (N -20..19), "fifo:N" or "rr:N" (real-time priority N 1..99). '
            "Negative nice and fifo/rr need CAP_SYS_NICE, fifo/rr also RestrictRealtime=no "
            "(the unit's drop-ins). Default: unset (the kernel's default, other with nice 0)."
        ),
    )

    @field_validator("cpus")
    @classmethod
    def _cpu_list(cls, value: str | None) -> str | None:
        if value is not None:
            from wgnapid.placement import check_cpus

            check_cpus(value)
        return value

    @field_validator("sched")
    @classmethod
    def _sched(cls, value: str | None) -> str | None:
        if value is not None:
            from wgnapid.placement import parse_sched

            parse_sched(value)
        return value

    @field_validator("kinds", "interfaces", "netns")
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
    # One line each (file, rule, key, what is doubtful): accepted, but a rule
    # that can never match as written. Every entry point shows them.
    warnings: tuple[str, ...] = ()


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
        elif err["type"] == "value_error" and err.get("ctx", {}).get("error"):
            msg = str(err["ctx"]["error"])  # without pydantic's "Value error, " prefix
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rules = data.get("rules")
            if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
                name = rules[loc[1]].get("name")
                if isinstance(name, str) and name:
                    where += f' (rule "{name}")'
        lines.append(f"{path}: {where}: {msg}")
    return lines


def parse_file(path: str, text: str) -> PolicyFile:
    # A UTF-8 byte-order mark (Windows editors) is not TOML; strip it as other
    # TOML tools do rather than report a syntax error at line 1, column 1.
    text = text.removeprefix("\ufeff")
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


# Kernel rule for link names (dev_valid_name, KERNEL-FACTS.md "Link names").
IFNAMSIZ_BYTES = 15
_NEVER_IN_IFNAME = ("/", ":")


def _glob_literals(pattern: str) -> tuple[int, str]:
    """(fewest bytes a name matching the fnmatch ``pattern`` has, its literal characters)."""
    least, literals, i = 0, "", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            i += 1
        elif ch == "?":
            least, i = least + 1, i + 1
        elif ch == "[" and (end := pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "]") else i + 1)) != -1:
            least, i = least + 1, end + 1  # one character from a set (fnmatch's rules)
        else:
            least, literals, i = least + len(ch.encode()), literals + ch, i + 1
    return least, literals


def rule_warnings(path: str, index: int, rule: Rule) -> list[str]:
    """Lines for patterns of ``rule`` that can never match a link.

    IFLA_INFO_KIND values are lowercase ("wireguard", "veth"); a link name is
    1-15 bytes without "/", ":" or whitespace (KERNEL-FACTS.md, "Link names").
    """
    where = f'{path}: rules[{index}]'
    named = f' (rule "{rule.name}")'
    out = []
    for j, kind in enumerate(rule.kinds):
        if kind != "*" and kind != kind.lower():
            out.append(f'{where}.kinds[{j}]{named}: "{kind}" never matches: IFLA_INFO_KIND values '
                       f'are lowercase (did you mean "{kind.lower()}"?)')
    for j, pattern in enumerate(rule.interfaces):
        least, literals = _glob_literals(pattern)
        bad = [c for c in literals if c in _NEVER_IN_IFNAME or c.isspace()]
        if bad:
            out.append(f'{where}.interfaces[{j}]{named}: "{pattern}" never matches: link names '
                       f'never contain {bad[0]!r}')
        elif least > IFNAMSIZ_BYTES:
            out.append(f'{where}.interfaces[{j}]{named}: "{pattern}" never matches: it needs at '
                       f'least {least} bytes and link names have at most {IFNAMSIZ_BYTES}')
    return out


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
    warnings: list[str] = []
    seen: dict[str, str] = {}
    for path, part in parts:
        daemon.update({k: getattr(part.daemon, k) for k in part.daemon.model_fields_set})
        for i, rule in enumerate(part.rules):
            warnings += rule_warnings(path, i, rule)
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
        warnings=tuple(warnings),
    )
