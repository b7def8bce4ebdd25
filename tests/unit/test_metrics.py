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


def test_napi_thread_series_only_where_the_threads_are_the_links_own():
    """NAPI threads carry no namespace: the figures are keyed by (netns,
    ifindex) (NapiThreads.per_link), and a link left out of them (its threads
    could be a namesake's) gets no NAPI-thread series rather than a 0 or
    another's. A name that is not UTF-8 (shown escaped in the rows) has its
    series too."""
    from wgnapid.napithreads import NapiThread, NapiThreads

    odd = b"wg\xff".decode(errors="surrogateescape")
    doc = {"netns": OWN, "summary": {"threaded": 4}, "stats": {}, "kernel": {},
           "links": [_row(OWN, "self", 7), _row(TENANT, "tenant-a", 7),
                     _row(TENANT, "tenant-a", 8, "wg1"), _row(OWN, "self", 9, "wg\\xff")]}
    threads = [NapiThread(100, "napi/wg0-0", 0, 2.0, "other", 0, 0, frozenset({0})),
               NapiThread(101, "napi/wg1-0", 0, 0.5, "other", 0, 0, frozenset({0})),
               NapiThread(102, f"napi/{odd}-0", 0, 0.25, "other", 0, 0, frozenset({0}))]
    figures = NapiThreads(threads, whole_names=True).per_link(
        [(OWN, 7, "wg0"), (TENANT, 7, "wg0"), (TENANT, 8, "wg1"), (OWN, 9, odd)])
    # Both wg0 left out: the thread is one of theirs.
    assert figures == {(TENANT, 8): (1, 0.5), (OWN, 9): (1, 0.25)}
    fams = metrics.families(doc, figures)
    assert _samples(fams, "wgnapid_link_napi_threads") == {
        (str(TENANT), "wg1", "wireguard", "tunnels"): 1, (str(OWN), "wg\\xff", "wireguard", "tunnels"): 1}
    assert _samples(fams, "wgnapid_link_napi_thread_cpu_seconds") == {
        (str(TENANT), "wg1", "wireguard", "tunnels"): 0.5,
        (str(OWN), "wg\\xff", "wireguard", "tunnels"): 0.25}
    # Alone, the daemon's wg0 has its thread, and a link with none a true 0.
    figures = NapiThreads(threads, whole_names=True).per_link([(OWN, 7, "wg0"), (OWN, 10, "wg2")])
    assert figures == {(OWN, 7): (1, 2.0), (OWN, 10): (0, 0.0)}
    hidden = NapiThreads(threads, whole_names=True)
    hidden.visible = False  # a PID namespace of its own: no kthread is seen
    assert hidden.per_link([(OWN, 7, "wg0")]) == {}
