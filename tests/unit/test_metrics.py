"""wgnapid.metrics.families on status documents of a daemon that covers several
namespaces (namespaces = "all"): a link is (netns, ifindex), and so are its series."""

from __future__ import annotations

import pytest

from wgnapid import metrics

pytestmark = pytest.mark.skipif(not metrics.available(), reason="prometheus-client is not installed")

OWN, TENANT = 4026531840, 4026532999


def _row(netns: int, netns_name: str, ifindex: int, name: str = "wg0") -> dict:
    return {"name": name, "ifindex": ifindex, "netns": netns, "netns_name": netns_name,
            "kind": "wireguard", "rule": "tunnels", "wanted": "on", "current": 1,
            "state": "threaded"}


def _samples(fams, name):
    (fam,) = [f for f in fams if f.name == name]
    return {tuple(s.labels.values()): s.value for s in fam.samples}


def test_links_named_alike_in_two_namespaces_are_two_series():
    doc = {"netns": OWN, "summary": {"threaded": 2}, "stats": {}, "kernel": {},
           "links": [_row(OWN, "self", 7), _row(TENANT, "tenant-a", 7)],
           "stalled_peers": [{"interface": "wg0", "ifindex": 7, "netns": TENANT,
                              "netns_name": "tenant-a", "public_key": "k"}]}
    fams = metrics.families(doc, {})
    state = _samples(fams, "wgnapid_link_state")
    assert state == {(str(OWN), "wg0", "wireguard", "tunnels", "threaded"): 1,
                     (str(TENANT), "wg0", "wireguard", "tunnels", "threaded"): 1}
    stalled = _samples(fams, "wgnapid_link_stalled_peers")
    assert stalled == {(str(OWN), "wg0", "wireguard", "tunnels"): 0,
                       (str(TENANT), "wg0", "wireguard", "tunnels"): 1}
