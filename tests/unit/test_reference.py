"""wgnapid.reference: the man pages and the README's key reference come from the code."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from wgnapid import cli, config, log, reference

README = Path(__file__).resolve().parents[2] / "README.md"


def _fields(model, prefix=""):
    """Every (dotted key, FieldInfo) of a model and the models nested in it."""
    from pydantic import BaseModel

    for name, info in model.model_fields.items():
        ann = info.annotation
        inner = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type)]
        nested = [a for a in [ann, *inner] if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            yield from _fields(nested[0], f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def test_every_policy_key_has_a_description():
    missing = [k for k, info in _fields(config.PolicyFile) if not (info.description or "").strip()]
    assert missing == [], f"keys without Field(description=...): {missing}"


def test_sections_cover_every_key_of_the_model():
    documented = {f"{s.name}.{k.name}" for s in reference.sections() for k in s.keys}
    assert documented == {k for k, _ in _fields(config.PolicyFile)}


def test_key_types_and_defaults_are_read_from_the_model():
    keys = {(s.name, k.name): k for s in reference.sections() for k in s.keys}
    assert keys["daemon", "resync_interval"].default == "30"
    assert keys["daemon", "resync_interval"].type == "number (>= 1, <= 86400)"
    assert keys["daemon", "source"].type == '"netlink" | "udev"'
    assert keys["rules", "threaded"].default is None  # required
    assert keys["rules", "kinds"].default == '["*"]'
    assert [s.header for s in reference.sections()][:2] == ["[daemon]", "[[rules]]"]


def test_a_key_without_a_description_is_refused():
    from pydantic import BaseModel

    class Sub(BaseModel):
        undocumented: int = 1

    class Top(BaseModel):
        daemon: Sub = Sub()

    with pytest.raises(ValueError, match="daemon.undocumented"):
        reference.sections(Top)


def test_toml5_lists_every_key_with_type_default_and_meaning():
    page = reference.toml5()
    assert page.startswith(".TH WGNAPID.TOML 5 ")
    for sec in reference.sections():
        for key in sec.keys:
            assert f".B {reference._roff(key.name)}\n" in page
            assert reference._roff(key.description) in page


def test_man8_sections_come_from_the_code():
    inc = reference.man8_include()
    for kind, mid in log.MESSAGE_IDS.items():
        assert mid in inc and reference._roff(kind) in inc
    for value, _name, _meaning in reference.exit_statuses():
        assert f".B {value}\n" in inc
    assert reference._roff(config.DEFAULT_PATH) in inc


def test_every_exit_status_of_the_cli_is_described():
    names = {n for n in vars(cli) if re.fullmatch(r"EXIT_[A-Z_]+", n) and isinstance(getattr(cli, n), int)}
    assert names <= set(reference.EXIT_MEANINGS), names - set(reference.EXIT_MEANINGS)
    assert [v for v, _, _ in reference.exit_statuses()] == sorted(getattr(cli, n) for n in names)


def test_roff_escapes_what_troff_would_eat():
    assert reference._roff(".x\n'y a-b c\\d") == "\\&.x\n\\&'y a\\-b c\\ed"


def test_readme_key_reference_is_generated_from_the_model():
    r = subprocess.run([sys.executable, "-m", "wgnapid.reference", "check", str(README)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + "\n" + reference.readme_block()


def test_readme_command_line_names_every_command_and_option():
    text = README.read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    parser = cli._parser()
    words = set()
    for action in parser._actions:
        words.update(o for o in action.option_strings if o.startswith("--") and o != "--help")
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words.add(name)
                words.update(o for a in sub._actions for o in a.option_strings
                             if o.startswith("--") and o != "--help")
    missing = sorted(w for w in words if w not in section)
    assert missing == [], f"README's command line section does not mention {missing}"


def test_man_pages_render(tmp_path):
    pytest.importorskip("argparse_manpage", reason="argparse-manpage not installed "
                        "(Debian: python3-argparse-manpage; tests/requirements-*.txt)")
    paths = reference.write_man(str(tmp_path))
    page8 = Path(paths[0]).read_text()
    assert page8.startswith(".TH WGNAPID \"8\" ")
    for heading in ("SYNOPSIS", "EXIT STATUS", "SIGNALS", "FILES", "JOURNAL FIELDS", "SEE ALSO"):
        assert f".SH {heading}" in page8
    for sub in ("run", "apply", "status", "check-config", "doctor"):
        assert reference._roff(f"wgnapid {sub}") in page8
    man = subprocess.run(["man", "--warnings", "-l", "-E", "UTF-8", "-Tutf8", paths[1]],
                         capture_output=True, text=True) if Path("/usr/bin/man").exists() else None
    if man is not None:
        assert man.returncode == 0 and "resync_interval" in man.stdout, man.stderr
        assert man.stderr == "", man.stderr
