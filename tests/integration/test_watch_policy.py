"""`run --watch-policy` and `status --ready`: what the Kubernetes DaemonSet relies on.

The policy is laid out as the kubelet lays out a ConfigMap volume: the file is
a symlink through `..data`, which points at a timestamped directory, and an
update writes a new directory and swaps `..data` with one rename.
"""

from __future__ import annotations

import os
from pathlib import Path

from wgtest import assert_clean_log, wait_until, write_policy

ON_VA = (("va", ["veth"], ["va*"], "on"),)
ON_VB = (("vb", ["veth"], ["vb*"], "on"), ("va", ["veth"], ["va*"], "off"))


class ConfigMapDir:
    """A directory like a mounted ConfigMap holding wgnapid.toml."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir()
        self.n = 0

    @property
    def policy(self) -> Path:
        return self.root / "wgnapid.toml"

    def update(self, write) -> None:
        """``write(path)`` fills the new version; then ..data is swapped atomically."""
        self.n += 1
        version = self.root / f"..2026_11_29_00_00_0{self.n}.{os.getpid()}"
        version.mkdir()
        write(version / "wgnapid.toml")
        tmp = self.root / "..data_tmp"
        os.symlink(version.name, tmp)
        os.rename(tmp, self.root / "..data")
        if not self.policy.is_symlink():
            os.symlink("..data/wgnapid.toml", self.policy)


def test_watch_policy_reloads_a_swapped_configmap_and_refuses_a_broken_one_once(netns, daemon_factory, tmp_path):
    cm = ConfigMapDir(tmp_path / "cm")
    cm.update(lambda p: write_policy(p, resync_interval=1, rules=ON_VA))
    for dev, peer in (("va0", "pa0"), ("vb0", "pb0")):
        netns.veth(dev, peer)
        netns.make_settable(dev)
    d = daemon_factory(cm.policy, run_args=("--watch-policy",))
    res = d.cli("status", "--ready")
    assert res.returncode == 1 and res.stderr.startswith("not ready:"), res
    d.start()
    res = d.cli("status", "--ready")
    assert res.returncode == 0 and res.stdout.startswith(f"ready: daemon pid {d.pid}, 1 threaded"), res
    assert netns.values("va0", "vb0") == {"va0": 1, "vb0": 0}

    cm.update(lambda p: write_policy(p, resync_interval=1, rules=ON_VB))
    wait_until(lambda: netns.values("va0", "vb0") == {"va0": 0, "vb0": 1}, 20, "the new policy in force")
    changed = [l for l in d.log_lines() if "the policy files changed; reloading" in l]
    assert len(changed) == 1, d.log()
    assert any("policy reloaded from" in l for l in d.log_lines()), d.log()

    # A broken version: refused once, the running policy stays, and later
    # resyncs neither reload nor complain again.
    cm.update(lambda p: p.write_text('[[rules]]\nname = "vb"\nthreaded = "sometimes"\n'))
    wait_until(lambda: any("reload failed" in l for l in d.log_lines()), 20, "the refused reload")
    for _ in range(3):
        d.barrier("vb0")  # a full resync after this point, each time
    failed = [l for l in d.log_lines() if "reload failed" in l]
    assert len(failed) == 1 and "rules[0].threaded" in failed[0], d.log()
    assert len([l for l in d.log_lines() if "the policy files changed" in l]) == 2, d.log()
    assert netns.values("va0", "vb0") == {"va0": 0, "vb0": 1}
    assert d.cli("status", "--ready").returncode == 0

    rc, _ = d.stop()
    assert rc == 0
    res = d.cli("status", "--ready")
    assert res.returncode == 1, res


def test_without_watch_policy_a_changed_file_waits_for_sighup(netns, daemon_factory, tmp_path):
    policy = write_policy(tmp_path / "p.toml", resync_interval=1, rules=ON_VA)
    for dev, peer in (("va0", "pa0"), ("vb0", "pb0")):
        netns.veth(dev, peer)
        netns.make_settable(dev)
    d = daemon_factory(policy).start()
    write_policy(policy, resync_interval=1, rules=(("vb", ["veth"], ["vb*"], "on"),) + ON_VA)
    for _ in range(2):
        d.barrier("va0")
    assert netns.values("va0", "vb0") == {"va0": 1, "vb0": 0}
    d.reload()
    assert netns.values("va0", "vb0") == {"va0": 1, "vb0": 1}
    rc, _ = d.stop()
    assert rc == 0
    assert_clean_log(d)
