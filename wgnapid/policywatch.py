"""Noticing that the policy files changed, for `wgnapid run --watch-policy`.

Made for a Kubernetes ConfigMap mounted as a volume: the kubelet writes a new
directory beside the old one and swaps the `..data` symlink, so the policy
path (itself a symlink through `..data`) names a new file without any event
on the path the daemon opened. The daemon asks `changed()` at every periodic
resync, so a change is applied within `resync_interval` seconds of the file
changing (plus the kubelet's own delay in updating the volume).

What is compared is the content of every file the policy is made of (the
main file and each conf.d snippet, as `config.policy_paths` finds them), and
which files those are: a rename, a swapped symlink, an added or removed
snippet and an edit in place all count; a touch that changes nothing does not.
"""

from __future__ import annotations

import hashlib

from wgnapid import config


def fingerprint(config_path: str | None) -> str:
    """A digest of the policy's file list and contents. A file that cannot be
    read counts by its error (so a file appearing or disappearing is a
    change); nothing is raised."""
    main, snippets = config.policy_paths(config_path)
    h = hashlib.sha256()
    for path in ([main] if main else []) + snippets:
        h.update(path.encode(errors="surrogateescape") + b"\0")
        try:
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
        except OSError as exc:
            h.update(f"error {exc.errno}".encode())
    return h.hexdigest()


class PolicyWatch:
    """Remembers the policy's fingerprint; `changed()` says whether it differs now."""

    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self.seen = fingerprint(config_path)

    def changed(self) -> bool:
        """True once per change: the new fingerprint becomes the one remembered,
        so a change that makes a broken policy is reported (and refused) once,
        not at every resync."""
        now = fingerprint(self.config_path)
        if now == self.seen:
            return False
        self.seen = now
        return True
