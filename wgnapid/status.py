"""The status document: where each daemon publishes it, how readers find them,
and its link rows kept as JSON text between writes.

Each daemon writes one document, ``status-<netns>.json`` in its runtime
directory, at most once per second while link states change (wgnapid.daemon).
`wgnapid status`, `ready` and `reload` read them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

DEFAULT_RUNTIME_DIR = "/run/wgnapid"


def runtime_dir() -> str:
    """$RUNTIME_DIRECTORY (systemd's RuntimeDirectory=, its first entry), else
    DEFAULT_RUNTIME_DIR."""
    return os.environ.get("RUNTIME_DIRECTORY", DEFAULT_RUNTIME_DIR).split(":")[0]


def status_path(netns: int) -> str:
    """The status document of the daemon running in network namespace ``netns``
    (nsfs inode): one per daemon, so daemons in different namespaces sharing a
    runtime directory never overwrite or remove each other's."""
    return os.path.join(runtime_dir(), f"status-{netns}.json")


def status_documents() -> list[dict]:
    """Every status document in the runtime directory whose daemon is alive."""
    docs = []
    try:
        names = sorted(os.listdir(runtime_dir()))
    except OSError:
        return docs
    for name in names:
        if not (name.startswith("status-") and name.endswith(".json")):
            continue
        try:
            with open(os.path.join(runtime_dir(), name)) as f:
                doc = json.load(f)
            os.kill(int(doc["pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        docs.append(doc)
    return docs


def link_row(st, placement: dict | None = None) -> dict:
    """One link's row in the status document: LinkState.as_dict(), with
    ``placement`` (wgnapid.placement.Steering.status) when there is one."""
    row = st.as_dict()
    if placement is not None:
        row["placement"] = placement
    return row


class LinkRows:
    """The document's ``links`` array as JSON text, each row encoded again only
    when what it shows changed.

    On a host with thousands of links, most stay as they are while a few come
    and go, and the document is written up to once a second all the while:
    encoding every row each time cost ~66 ms at 10,000 links (a new link every
    100 ms then cost 6.6% of a core; bench/README.md, "Links at scale").
    Comparing what each row shows (LinkState.shown(), a tuple) costs ~1 us a
    link. Rows of links that are gone are dropped at the next encode()."""

    def __init__(self) -> None:
        self._rows: dict[tuple[int, int], tuple[tuple, str]] = {}

    def encode(self, states: Iterable, placement: Callable[[str], dict | None] | None = None) -> str:
        """The JSON array of ``states`` (reconciler LinkStates, in order):
        each row is link_row(st, placement(st.name))."""
        old = self._rows
        new: dict[tuple[int, int], tuple[tuple, str]] = {}
        parts = []
        dumps = json.dumps
        for st in states:
            place = placement(st.name) if placement is not None else None
            shown = (st.shown(), place)
            key = (st.netns, st.ifindex)
            row = old.get(key)
            if row is None or row[0] != shown:
                row = (shown, dumps(link_row(st, place)))
            new[key] = row
            parts.append(row[1])
        self._rows = new
        return "[" + ", ".join(parts) + "]"
