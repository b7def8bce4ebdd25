"""wgnapid.policywatch: which changes of the policy files count."""

from __future__ import annotations

import os

from wgnapid import config
from wgnapid.policywatch import PolicyWatch


def test_edit_in_place_counts_once_and_a_touch_does_not(tmp_path):
    p = tmp_path / "wgnapid.toml"
    p.write_text("[daemon]\nresync_interval = 5\n")
    w = PolicyWatch(str(p))
    assert not w.changed()
    os.utime(p, (1, 1))
    assert not w.changed(), "a touch that changes nothing is no change"
    p.write_text("[daemon]\nresync_interval = 6\n")
    assert w.changed()
    assert not w.changed(), "reported once"


def test_a_swapped_configmap_symlink_counts(tmp_path):
    for v, text in (("..v1", "a = 1\n"), ("..v2", "a = 2\n")):
        (tmp_path / v).mkdir()
        (tmp_path / v / "wgnapid.toml").write_text(text)
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/wgnapid.toml", tmp_path / "wgnapid.toml")
    w = PolicyWatch(str(tmp_path / "wgnapid.toml"))
    os.symlink("..v2", tmp_path / "..tmp")
    os.rename(tmp_path / "..tmp", tmp_path / "..data")
    assert w.changed()


def test_missing_file_and_conf_d_snippets(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "wgnapid.toml"))
    w = PolicyWatch(None)  # no main file, no snippets: the built-in default
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-a.toml").write_text("")
    assert w.changed(), "a new snippet counts"
    (tmp_path / "wgnapid.toml").write_text("")
    assert w.changed(), "a main file appearing counts"
    (tmp_path / "conf.d" / "10-a.toml").rename(tmp_path / "conf.d" / "20-a.toml")
    assert w.changed(), "a renamed snippet counts (order may change)"
    (tmp_path / "wgnapid.toml").unlink()
    assert w.changed()
    assert not w.changed()


def test_unreadable_file_is_no_error(tmp_path):
    w = PolicyWatch(str(tmp_path / "absent.toml"))
    assert not w.changed()
