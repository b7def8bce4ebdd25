"""wgnapid.config: every error path, one line per error naming the file, and merging."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from wgnapid import config
from wgnapid.config import BUILTIN, ConfigError

from .helpers import write

REPO = Path(__file__).resolve().parents[2]

VALID_RULE = '[[rules]]\nname = "r"\nthreaded = "on"\n'


def errors_of(path: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.read_file(path)
    lines = info.value.lines
    assert lines, "a ConfigError must carry at least one line"
    assert str(info.value) == "\n".join(lines)
    for line in lines:
        assert "\n" not in line
        assert line.startswith(f"{path}: "), line
    return lines


def one_error(tmp_path: Path, text: str | bytes) -> tuple[str, str]:
    path = write(tmp_path / "wgnapid.toml", text)
    lines = errors_of(path)
    assert len(lines) == 1, lines
    return path, lines[0]


# -- TOML and file-level problems ----------------------------------------------


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path, line = one_error(tmp_path, '[daemon]\nsource = "netlink"\nlog_level = \n')
    assert "TOML syntax error" in line
    assert "line 3" in line


def test_toml_syntax_error_unclosed_table(tmp_path):
    path, line = one_error(tmp_path, "# comment\n[daemon\n")
    assert "line 2" in line


def test_non_utf8_file(tmp_path):
    path, line = one_error(tmp_path, b'[daemon]\nsource = "net\xfflink"\n')
    assert "UTF-8" in line
    assert "byte 22" in line  # zero-based offset of the bad byte


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.toml")
    (line,) = errors_of(path)
    assert "cannot read" in line
    assert os.strerror(errno.ENOENT) in line


def test_directory_instead_of_file(tmp_path):
    path = str(tmp_path / "dir.toml")
    os.mkdir(path)
    (line,) = errors_of(path)
    assert "cannot read" in line


def test_unreadable_file(tmp_path, monkeypatch):
    # Root ignores mode bits, so the permission error is simulated.
    path = write(tmp_path / "wgnapid.toml", VALID_RULE)

    def denied(p, *a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), p)

    monkeypatch.setattr(config, "open", denied, raising=False)
    (line,) = errors_of(path)
    assert "cannot read" in line and os.strerror(errno.EACCES) in line


def test_empty_file_is_valid_and_has_no_rules(tmp_path):
    pf = config.read_file(write(tmp_path / "empty.toml", ""))
    assert pf.rules == []
    assert pf.daemon == config.DaemonConfig()


# -- unknown keys ----------------------------------------------------------------


def test_unknown_top_level_key(tmp_path):
    _, line = one_error(tmp_path, "bogus = 1\n")
    assert ": bogus: unknown key" in line


def test_unknown_top_level_table(tmp_path):
    _, line = one_error(tmp_path, "[demon]\nsource = 'udev'\n")
    assert ": demon: unknown key" in line


def test_unknown_daemon_key(tmp_path):
    _, line = one_error(tmp_path, "[daemon]\nresync = 5\n")
    assert "daemon.resync" in line and "unknown key" in line


def test_unknown_rule_key_has_index_and_rule_name(tmp_path):
    _, line = one_error(
        tmp_path, VALID_RULE + '[[rules]]\nname = "second"\nthreaded = "on"\nbogus = 1\n'
    )
    assert "rules[1].bogus" in line
    assert "unknown key" in line
    assert '"second"' in line


def test_unknown_rule_key_without_a_name(tmp_path):
    path = write(tmp_path / "w.toml", '[[rules]]\nthreaded = "on"\nbogus = 1\n')
    lines = errors_of(path)
    assert any("rules[0].bogus" in l and "unknown key" in l for l in lines), lines
    assert any("rules[0].name" in l for l in lines), lines


# -- types (strict: TOML has types, "30" is a mistake) -----------------------------


@pytest.mark.parametrize(
    "text, where",
    [
        ('[daemon]\nresync_interval = "30"\n', "daemon.resync_interval"),
        ('[daemon]\npending_max_delay = "2"\n', "daemon.pending_max_delay"),
        ("[daemon]\nresync_interval = true\n", "daemon.resync_interval"),
        ("[daemon]\nresync_interval = [30]\n", "daemon.resync_interval"),
        ("[daemon]\nsource = 1\n", "daemon.source"),
        ("[daemon]\nlog_level = true\n", "daemon.log_level"),
        ('daemon = "x"\n', "daemon"),
        ('rules = "x"\n', "rules"),
        ('[[rules]]\nname = 5\nthreaded = "on"\n', "rules[0].name"),
        ('[[rules]]\nname = "r"\nthreaded = true\n', "rules[0].threaded"),
        ('[[rules]]\nname = "r"\nthreaded = 1\n', "rules[0].threaded"),
        ('[[rules]]\nname = "r"\nthreaded = "on"\nkinds = "wireguard"\n', "rules[0].kinds"),
        ('[[rules]]\nname = "r"\nthreaded = "on"\ninterfaces = "wg*"\n', "rules[0].interfaces"),
        ('[[rules]]\nname = "r"\nthreaded = "on"\ninterfaces = [1]\n', "rules[0].interfaces[0]"),
    ],
)
def test_wrong_types_are_errors(tmp_path, text, where):
    _, line = one_error(tmp_path, text)
    assert f": {where}" in line, line


def test_integer_and_float_seconds_are_both_accepted(tmp_path):
    pf = config.read_file(
        write(tmp_path / "w.toml", "[daemon]\nresync_interval = 45\npending_max_delay = 0.5\n")
    )
    assert pf.daemon.resync_interval == 45
    assert pf.daemon.pending_max_delay == 0.5


# -- ranges ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["resync_interval", "pending_max_delay"])
@pytest.mark.parametrize("value", ["0", "-1", "-0.5", "0.0", "86401", "inf", "nan"])
def test_out_of_range_seconds(tmp_path, key, value):
    _, line = one_error(tmp_path, f"[daemon]\n{key} = {value}\n")
    assert f"daemon.{key}" in line


@pytest.mark.parametrize("value", ["1", "1.5", "86400"])
def test_in_range_seconds(tmp_path, value):
    pf = config.read_file(write(tmp_path / "w.toml", f"[daemon]\nresync_interval = {value}\n"))
    assert pf.daemon.resync_interval == float(value)


# -- enums -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, where, allowed",
    [
        ('[daemon]\nsource = "kernel"\n', "daemon.source", ["netlink", "udev"]),
        ('[daemon]\nsource = "Netlink"\n', "daemon.source", ["netlink", "udev"]),
        ('[daemon]\nlog_level = "verbose"\n', "daemon.log_level", ["debug", "error"]),
        ('[daemon]\nlog_level = "warn"\n', "daemon.log_level", ["warning"]),
        ('[daemon]\nkernel_guard = "maybe"\n', "daemon.kernel_guard", ["strict", "warn", "off"]),
        ('[daemon]\nkernel_guard = "on"\n', "daemon.kernel_guard", ["strict"]),
        ('[[rules]]\nname = "r"\nthreaded = "yes"\n', "rules[0].threaded", ["on", "off", "ignore"]),
        ('[[rules]]\nname = "r"\nthreaded = "ON"\n', "rules[0].threaded", ["on", "off", "ignore"]),
        ('[daemon]\nnamespaces = "every"\n', "daemon.namespaces", ["self", "all"]),
    ],
)
def test_bad_enum_values_list_the_allowed_ones(tmp_path, text, where, allowed):
    _, line = one_error(tmp_path, text)
    assert f": {where}" in line
    for value in allowed:
        assert f"'{value}'" in line, line


@pytest.mark.parametrize("source", ["netlink", "udev"])
@pytest.mark.parametrize("guard", ["strict", "warn", "off"])
def test_every_valid_enum_value_loads(tmp_path, source, guard):
    pf = config.read_file(
        write(tmp_path / "w.toml", f'[daemon]\nsource = "{source}"\nkernel_guard = "{guard}"\n')
    )
    assert (pf.daemon.source, pf.daemon.kernel_guard) == (source, guard)


# -- lists, patterns, required fields ------------------------------------------------


@pytest.mark.parametrize("key", ["kinds", "interfaces", "netns"])
def test_empty_list(tmp_path, key):
    _, line = one_error(tmp_path, VALID_RULE + f"{key} = []\n")
    assert f"rules[0].{key}" in line


@pytest.mark.parametrize("key", ["kinds", "interfaces", "netns"])
def test_empty_pattern_string(tmp_path, key):
    _, line = one_error(tmp_path, VALID_RULE + f'{key} = ["wg*", ""]\n')
    assert f"rules[0].{key}" in line
    assert "empty pattern" in line


def test_missing_name(tmp_path):
    _, line = one_error(tmp_path, '[[rules]]\nthreaded = "on"\n')
    assert "rules[0].name" in line
    assert "required" in line.lower()


def test_empty_name(tmp_path):
    _, line = one_error(tmp_path, '[[rules]]\nname = ""\nthreaded = "on"\n')
    assert "rules[0].name" in line


def test_missing_threaded_names_the_rule(tmp_path):
    _, line = one_error(tmp_path, '[[rules]]\nname = "wg"\n')
    assert "rules[0].threaded" in line
    assert '(rule "wg")' in line
    assert "required" in line.lower()


def test_rule_defaults_are_any_kind_any_name(tmp_path):
    pf = config.read_file(write(tmp_path / "w.toml", VALID_RULE))
    assert pf.rules[0].kinds == ["*"] and pf.rules[0].interfaces == ["*"]


def test_duplicate_rule_names_within_one_file(tmp_path):
    path = write(tmp_path / "w.toml", VALID_RULE + VALID_RULE)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    (line,) = info.value.lines
    assert line.startswith(f"{path}: rules[1].name")
    assert 'duplicate rule name "r"' in line


# -- several errors at once ----------------------------------------------------------


def test_all_errors_of_one_file_are_collected(tmp_path):
    path = write(
        tmp_path / "w.toml",
        '[daemon]\nsource = "kernel"\nresync_interval = 0\nbogus = 1\n'
        '[[rules]]\nname = "a"\nthreaded = "yes"\n'
        '[[rules]]\nthreaded = "on"\nkinds = []\n',
    )
    lines = errors_of(path)
    assert len(lines) == 6, lines
    for where in ("daemon.source", "daemon.resync_interval", "daemon.bogus",
                  "rules[0].threaded", "rules[1].name", "rules[1].kinds"):
        assert sum(f": {where}" in l for l in lines) == 1, (where, lines)


def test_load_collects_errors_from_every_file(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    main = write(etc / "wgnapid.toml", "bogus = 1\n")
    a = write(etc / "conf.d" / "10-a.toml", "[daemon\n")
    b = write(etc / "conf.d" / "20-b.toml", b"\xff")
    ok = write(etc / "conf.d" / "30-ok.toml", VALID_RULE)
    monkeypatch.setattr(config, "DEFAULT_PATH", str(etc / "wgnapid.toml"))
    with pytest.raises(ConfigError) as info:
        config.load()
    lines = info.value.lines
    assert len(lines) == 3, lines
    assert [l.split(": ", 1)[0] for l in lines] == [main, a, b]
    assert not any(ok in l for l in lines)


def test_duplicate_rule_name_across_files_names_both(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    main = write(etc / "wgnapid.toml", VALID_RULE)
    snip = write(etc / "conf.d" / "50-x.toml", '[[rules]]\nname = "other"\nthreaded = "off"\n'
                 + VALID_RULE)
    monkeypatch.setattr(config, "DEFAULT_PATH", main)
    with pytest.raises(ConfigError) as info:
        config.load()
    (line,) = info.value.lines
    assert line.startswith(f"{snip}: rules[1].name")
    assert 'duplicate rule name "r"' in line
    assert main in line


def test_conf_d_rule_reusing_the_builtin_rule_name_is_a_duplicate(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    snip = write(etc / "conf.d" / "50-x.toml", '[[rules]]\nname = "wireguard"\nthreaded = "off"\n')
    monkeypatch.setattr(config, "DEFAULT_PATH", str(etc / "wgnapid.toml"))
    with pytest.raises(ConfigError) as info:
        config.load()
    (line,) = info.value.lines
    assert line.startswith(f"{snip}: ")
    assert BUILTIN in line


# -- merging -------------------------------------------------------------------------


@pytest.fixture
def etc(tmp_path, monkeypatch):
    d = tmp_path / "etc" / "wgnapid"
    (d / "conf.d").mkdir(parents=True)
    monkeypatch.setattr(config, "DEFAULT_PATH", str(d / "wgnapid.toml"))
    return d


def test_main_then_conf_d_in_lexical_order(etc):
    # Created out of order: the result must follow the names, not the directory.
    s20 = write(etc / "conf.d" / "2-late.toml",
                '[daemon]\nresync_interval = 20\n[[rules]]\nname = "late"\nthreaded = "off"\n')
    s10 = write(etc / "conf.d" / "10-early.toml",
                '[daemon]\nresync_interval = 10\nlog_level = "debug"\n'
                '[[rules]]\nname = "early"\nthreaded = "ignore"\n')
    main = write(etc / "wgnapid.toml",
                 '[daemon]\nsource = "udev"\nresync_interval = 5\nkernel_guard = "warn"\n'
                 '[[rules]]\nname = "main"\nthreaded = "on"\n')
    p = config.load()
    assert p.files == (main, s10, s20)
    assert [r.name for r in p.rules] == ["main", "early", "late"]
    assert p.daemon.resync_interval == 20  # last writer wins ("2-late" > "10-early")
    assert p.daemon.log_level == "debug"  # only set in 10-early: kept
    assert p.daemon.source == "udev"  # only set in main: kept
    assert p.daemon.kernel_guard == "warn"
    assert p.daemon.pending_max_delay == 2  # never set: default


def test_a_later_file_restating_a_default_value_still_overrides(etc):
    write(etc / "wgnapid.toml", '[daemon]\nkernel_guard = "off"\n')
    write(etc / "conf.d" / "z.toml", '[daemon]\nkernel_guard = "strict"\n')
    assert config.load().daemon.kernel_guard == "strict"


def test_a_snippet_without_a_daemon_table_changes_no_daemon_key(etc):
    write(etc / "wgnapid.toml", '[daemon]\nlog_level = "error"\n')
    write(etc / "conf.d" / "z.toml", VALID_RULE)
    assert config.load().daemon.log_level == "error"


def test_only_toml_files_in_conf_d_are_read(etc):
    write(etc / "wgnapid.toml", "")
    write(etc / "conf.d" / "a.toml.bak", "garbage [")
    write(etc / "conf.d" / "b.conf", "garbage [")
    write(etc / "conf.d" / "README", "garbage [")
    keep = write(etc / "conf.d" / "c.toml", VALID_RULE)
    p = config.load()
    assert p.files == (str(etc / "wgnapid.toml"), keep)


def test_no_main_file_builtin_rules_first_then_conf_d(etc):
    snip = write(etc / "conf.d" / "10-veth.toml",
                 '[daemon]\nlog_level = "debug"\n'
                 '[[rules]]\nname = "veth"\nkinds = ["veth"]\nthreaded = "on"\n')
    p = config.load()
    assert p.files == (BUILTIN, snip)
    assert [r.name for r in p.rules] == ["wireguard", "veth"]
    assert p.rules[0] == config.builtin().rules[0]
    assert p.daemon.log_level == "debug"
    assert p.daemon.kernel_guard == "strict"


def test_no_main_file_and_no_conf_d_is_the_builtin_default(etc):
    (etc / "conf.d").rmdir()
    p = config.load()
    assert p.files == (BUILTIN,)
    assert p.rules == tuple(config.builtin().rules)
    assert p.daemon == config.builtin().daemon


def test_an_existing_empty_main_file_means_no_rules(etc):
    # The built-in default replaces a *missing* file only.
    write(etc / "wgnapid.toml", "")
    p = config.load()
    assert p.rules == ()
    assert p.files == (str(etc / "wgnapid.toml"),)


def test_explicit_config_ignores_conf_d(etc, tmp_path):
    write(etc / "wgnapid.toml", '[[rules]]\nname = "default-main"\nthreaded = "on"\n')
    write(etc / "conf.d" / "a.toml", '[[rules]]\nname = "default-snippet"\nthreaded = "on"\n')
    other = tmp_path / "other"
    write(other / "conf.d" / "b.toml", '[[rules]]\nname = "other-snippet"\nthreaded = "on"\n')
    mine = write(other / "mine.toml", '[[rules]]\nname = "mine"\nthreaded = "off"\n')
    p = config.load(mine)
    assert p.files == (mine,)
    assert [r.name for r in p.rules] == ["mine"]


def test_explicit_config_that_is_missing_is_an_error_not_the_builtin(etc, tmp_path):
    missing = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError) as info:
        config.load(missing)
    (line,) = info.value.lines
    assert line.startswith(f"{missing}: cannot read")


def test_policy_paths(etc):
    assert config.policy_paths(None) == (None, [])
    write(etc / "wgnapid.toml", "")
    b = write(etc / "conf.d" / "b.toml", "")
    a = write(etc / "conf.d" / "a.toml", "")
    assert config.policy_paths(None) == (str(etc / "wgnapid.toml"), [a, b])
    assert config.policy_paths("/x.toml") == ("/x.toml", [])


# -- the built-in default is the shipped file ---------------------------------------------


def test_builtin_default_equals_the_shipped_config_file():
    shipped = config.read_file(str(REPO / "config" / "wgnapid.toml"))
    builtin = config.builtin()
    assert builtin.daemon == shipped.daemon
    assert builtin.rules == shipped.rules
    assert builtin.daemon.model_fields_set == shipped.daemon.model_fields_set


def test_builtin_default_content():
    b = config.builtin()
    assert [(r.name, r.kinds, r.interfaces, r.threaded) for r in b.rules] == [
        ("wireguard", ["wireguard"], ["*"], "on")
    ]
    assert b.daemon.kernel_guard == "strict"


def test_namespaces_default_self_and_all_loads(tmp_path):
    assert config.read_file(write(tmp_path / "d.toml", "")).daemon.namespaces == "self"
    pf = config.read_file(write(tmp_path / "a.toml", '[daemon]\nnamespaces = "all"\n'))
    assert pf.daemon.namespaces == "all"


def test_netns_key_defaults_to_every_namespace_and_is_a_list(tmp_path):
    pf = config.read_file(write(tmp_path / "r.toml", VALID_RULE))
    assert pf.rules[0].netns == ["*"]
    _, line = one_error(tmp_path, VALID_RULE + 'netns = "tenant-*"\n')
    assert "rules[0].netns" in line


def test_namespace_keys_are_described():
    # Issue 12 builds the man page and the key reference from these descriptions.
    assert "CAP_SYS_ADMIN" in config.DaemonConfig.model_fields["namespaces"].description
    assert "pid:<pid>" in config.Rule.model_fields["netns"].description
