"""Issue 11: one validation path for every entry point, sane bounds, warnings.

Each input here was accepted or misreported by the code before: a UTF-8 BOM
(a syntax error at line 1, column 1), `nan` (reported as "greater than 0"),
pending_max_delay = 1e-9 (accepted: a busy loop on one waiting link), a kind
in the wrong case and globs that can never match (accepted silently), and
duplicate rule names in one file (accepted by `check-config FILE`).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from wgnapid import config
from wgnapid.config import ConfigError

from .helpers import write

RULE = '[[rules]]\nname = "{name}"\nkinds = {kinds}\ninterfaces = {interfaces}\nthreaded = "on"\n'


def load_error(path: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load(path)
    return info.value.lines


def test_a_utf8_bom_is_accepted(tmp_path):
    path = write(tmp_path / "bom.toml", b"\xef\xbb\xbf[daemon]\nresync_interval = 7\n")
    assert config.load(path).daemon.resync_interval == 7


@pytest.mark.parametrize("key", ["resync_interval", "pending_max_delay"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_inf_are_not_finite(tmp_path, key, value):
    [line] = load_error(write(tmp_path / "p.toml", f"[daemon]\n{key} = {value}\n"))
    assert line == f"{tmp_path / 'p.toml'}: daemon.{key}: Input should be a finite number"


@pytest.mark.parametrize("key, value, bound", [
    ("pending_max_delay", "1e-9", "0.1"), ("pending_max_delay", "0.09", "0.1"),
    ("resync_interval", "0.001", "1"), ("resync_interval", "0.5", "1"),
])
def test_lower_bounds_that_cannot_burn_a_core(tmp_path, key, value, bound):
    [line] = load_error(write(tmp_path / "p.toml", f"[daemon]\n{key} = {value}\n"))
    assert line.startswith(f"{tmp_path / 'p.toml'}: daemon.{key}: must be at least {bound} s"), line
    assert "Value error" not in line


@pytest.mark.parametrize("key, value", [("pending_max_delay", "0.1"), ("resync_interval", "1")])
def test_the_lower_bounds_themselves_are_accepted(tmp_path, key, value):
    policy = config.load(write(tmp_path / "p.toml", f"[daemon]\n{key} = {value}\n"))
    assert getattr(policy.daemon, key) == float(value)


def test_duplicate_rule_names_in_one_file_are_rejected_by_load(tmp_path):
    text = RULE.format(name="a", kinds='["veth"]', interfaces='["*"]') * 2
    [line] = load_error(write(tmp_path / "p.toml", text))
    assert line.startswith(f"{tmp_path / 'p.toml'}: rules[1].name: duplicate rule name \"a\""), line


@pytest.mark.parametrize("kinds, interfaces, key, says", [
    ('["WireGuard"]', '["*"]', "rules[0].kinds[0]", 'did you mean "wireguard"'),
    ('["wireguard"]', '["wg-a-very-long-name*"]', "rules[0].interfaces[0]", "at least 19 bytes"),
    ('["wireguard"]', '["????????????????"]', "rules[0].interfaces[0]", "at least 16 bytes"),
    ('["wireguard"]', '["wg/*"]', "rules[0].interfaces[0]", "never contain '/'"),
    ('["wireguard"]', '["wg:1"]', "rules[0].interfaces[0]", "never contain ':'"),
    ('["wireguard"]', '["wg 1"]', "rules[0].interfaces[0]", "never contain ' '"),
])
def test_patterns_that_never_match_are_one_warning_line(tmp_path, kinds, interfaces, key, says):
    path = write(tmp_path / "p.toml", RULE.format(name="tun", kinds=kinds, interfaces=interfaces))
    policy = config.load(path)
    assert len(policy.warnings) == 1, policy.warnings
    line = policy.warnings[0]
    assert line.startswith(f'{path}: {key} (rule "tun"): '), line
    assert says in line and "never matches" in line and "\n" not in line


@pytest.mark.parametrize("kinds, interfaces", [
    ('["wireguard", "*"]', '["*"]'), ('["veth"]', '["wg[0-9]*", "a23456789012345", "[!/]?"]'),
    ('["tun"]', '["ěšč*"]'),
])
def test_patterns_that_can_match_give_no_warning(tmp_path, kinds, interfaces):
    path = write(tmp_path / "p.toml", RULE.format(name="ok", kinds=kinds, interfaces=interfaces))
    assert config.load(path).warnings == ()


# -- every entry point: the same checks through the command line -----------------------


def wgnapid(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wgnapid", *args], capture_output=True, text=True, timeout=60)


def test_check_config_file_rejects_what_run_rejects(tmp_path):
    path = write(tmp_path / "p.toml", RULE.format(name="a", kinds='["veth"]', interfaces='["*"]') * 2)
    res = wgnapid("check-config", path)
    assert res.returncode == 78, res
    assert res.stderr.strip().splitlines() == [
        f'{path}: rules[1].name: duplicate rule name "a" (first in {path})']


def test_check_config_prints_warnings_and_passes(tmp_path):
    path = write(tmp_path / "p.toml", RULE.format(name="a", kinds='["WireGuard"]', interfaces='["*"]'))
    res = wgnapid("check-config", path)
    assert res.returncode == 0, res
    [warning] = res.stderr.strip().splitlines()
    assert warning.startswith(f'warning: {path}: rules[0].kinds[0] (rule "a"): '), warning


@pytest.mark.parametrize("argv", [
    ["--config", "{p}", "check-config"], ["check-config", "--config", "{p}"],
    ["check-config", "{p}"], ["--log-target", "stderr", "check-config", "--config", "{p}"],
])
def test_global_options_before_and_after_the_command(tmp_path, argv):
    path = write(tmp_path / "p.toml", "[daemon]\nresync_interval = 5\n")
    res = wgnapid(*[a.format(p=path) for a in argv])
    assert res.returncode == 0, res
    assert res.stdout.strip() == f"policy OK: {path}"


def test_an_option_after_the_command_overrides_the_one_before(tmp_path):
    good = write(tmp_path / "good.toml", "[daemon]\nresync_interval = 5\n")
    bad = write(tmp_path / "bad.toml", "[daemon]\nresync_interval = nan\n")
    assert wgnapid("--config", good, "check-config", "--config", bad).returncode == 78
    assert wgnapid("--config", bad, "check-config", "--config", good).returncode == 0


def test_reload_validates_first(tmp_path):
    # A broken policy never reaches the daemon: refused before any signal is sent.
    bad = write(tmp_path / "bad.toml", "[daemon]\npending_max_delay = 1e-9\n")
    res = wgnapid("--config", bad, "reload")
    assert res.returncode == 78, res
    assert "daemon.pending_max_delay" in res.stderr and "Traceback" not in res.stderr
