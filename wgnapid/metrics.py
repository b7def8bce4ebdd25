"""Prometheus metrics in a node_exporter textfile (`daemon.metrics_file`).

prometheus-client is optional (pip extra `metrics`, Debian's
python3-prometheus-client): without it the daemon runs and says once that it
cannot write metrics. The file is written with the library's
write_to_textfile (a temporary file beside it, then rename(2): a reader
never sees half a file), from the same document the daemon publishes as
status.json, so the metrics and `status --json` agree by construction.

Names follow Prometheus' conventions: `wgnapid_` prefix, base units
(seconds), `_total` on counters, and low-cardinality labels only
(namespace, interface, kind, rule; state where a metric counts states).
"""

from __future__ import annotations

import os
import time
from typing import Callable

from wgnapid import DROP_INS

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import write_to_textfile
    from prometheus_client.registry import CollectorRegistry
except ImportError:  # optional dependency
    CollectorRegistry = None

MIN_INTERVAL = 5.0  # seconds between two writes of the file
# At most this share of one core on average: a write that cost 1 s of CPU
# (10,000 links: the /proc scan for NAPI thread CPU time, and prometheus-
# client formatting 60,000 samples) waits 50 s for the next.
MAX_CPU_SHARE = 0.02
LINK_LABELS = ["namespace", "interface", "kind", "rule"]



def available() -> bool:
    return CollectorRegistry is not None


def families(doc: dict, threads: dict[tuple[int, int], tuple[int, float]]) -> list:
    """The metric families for one daemon status document.

    ``doc``: Daemon.status_document(); ``threads``: {(netns inode,
    ifindex): (NAPI thread count, their CPU seconds)}
    (NapiThreads.per_link). A link missing from it has no NAPI-thread series:
    its threads cannot be told from another link's, or are not visible here,
    and a 0 would be false.

    Stalled peers: the hook is the document's ``stalled_peers`` list
    ([{interface, ifindex, ...}], issue 14's stall watch). Where the document
    has that key, every matched WireGuard link gets
    ``wgnapid_link_stalled_peers`` (0 when none is stalled); without it (no
    stall watch in this daemon) the metric is absent, not a false 0."""
    ns = str(doc.get("netns", ""))
    g = GaugeMetricFamily
    state = g("wgnapid_link_state", "The link's state (1 for the state it is in).",
              labels=LINK_LABELS + ["state"])
    wanted = g("wgnapid_link_threaded_wanted", "The threaded value the policy wants (1 on, 0 off).",
               labels=LINK_LABELS)
    current = g("wgnapid_link_threaded", "The link's threaded value as last read from the kernel.",
                labels=LINK_LABELS)
    nthreads = g("wgnapid_link_napi_threads", "The link's napi/ kernel threads.", labels=LINK_LABELS)
    cpu = CounterMetricFamily("wgnapid_link_napi_thread_cpu_seconds",
                              "CPU time (user + system) of the link's current napi/ kernel threads.",
                              labels=LINK_LABELS)
    for link in doc.get("links", []):
        if link.get("rule") is None:
            continue  # unmatched links are not wgnapid's business
        # The link's own namespace: with namespaces = "all" two links may share
        # a name, never a (namespace, name) pair.
        labels = [str(link.get("netns", ns)), link["name"], link.get("kind") or "", link["rule"]]
        state.add_metric(labels + [link["state"]], 1)
        if link.get("wanted") in ("on", "off"):
            wanted.add_metric(labels, 1 if link["wanted"] == "on" else 0)
        if link.get("current") is not None:
            current.add_metric(labels, link["current"])
        figures = threads.get((link.get("netns", doc.get("netns")), link.get("ifindex")))
        if figures is not None:
            nthreads.add_metric(labels, figures[0])
            cpu.add_metric(labels, figures[1])
    counts = g("wgnapid_links", "Links by state.", labels=["namespace", "state"])
    for st, n in sorted(doc.get("summary", {}).items()):
        counts.add_metric([ns, st], n)
    out = [state, wanted, current, counts, nthreads, cpu]
    stats = doc.get("stats", {})
    for key, name, text in (
        ("writes", "wgnapid_threaded_writes", "Writes of /sys/class/net/*/threaded."),
        ("failures", "wgnapid_link_failures", "Evaluations that ended with the link failed."),
        ("overflows", "wgnapid_event_overflows", "Event queue overflows (events lost, all links re-listed)."),
        ("resyncs", "wgnapid_resyncs", "Full re-reads of every link."),
        ("evaluations", "wgnapid_evaluations", "Link evaluations."),
    ):
        c = CounterMetricFamily(name, text, labels=["namespace"])
        c.add_metric([ns], stats.get(key, 0))
        out.append(c)
    k = doc.get("kernel", {})
    verdict = g("wgnapid_kernel_guard_verdict",
                "The kernel guard's verdict on threaded NAPI for WireGuard here (1 for the verdict).",
                labels=["guard", "verdict"])
    verdict.add_metric([k.get("guard") or "", k.get("verdict") or ""], 1)
    native = g("wgnapid_kernel_native", "1 when the kernel threads WireGuard links itself.")
    native.add_metric([], 1 if doc.get("kernel_native") else 0)
    out += [verdict, native]
    if isinstance(doc.get("stalled_peers"), list):
        sp = g("wgnapid_link_stalled_peers",
               "WireGuard peers of the link whose receive side is stalled (CVE-2026-52945).",
               labels=LINK_LABELS)
        stalled: dict[tuple, int] = {}
        for p in doc["stalled_peers"]:
            if isinstance(p, dict):
                key = (p.get("netns", doc.get("netns")), p.get("ifindex"))
                stalled[key] = stalled.get(key, 0) + 1
        for link in doc.get("links", []):
            if link.get("rule") is not None and link.get("kind") == "wireguard":
                labels = [str(link.get("netns", ns)), link["name"], "wireguard", link["rule"]]
                key = (link.get("netns", doc.get("netns")), link["ifindex"])
                sp.add_metric(labels, stalled.get(key, 0))
        out.append(sp)
    return out


class _Doc:
    def __init__(self, fams):
        self.fams = fams

    def collect(self):
        return self.fams


class MetricsFile:
    """Writes the metrics file, at most once every MIN_INTERVAL seconds, and
    never more often than keeps its CPU time (the last write's, collection
    included) at MAX_CPU_SHARE of one core.

    ``log``: wgnapid.log.Log; problems (no library, a directory that cannot
    be written) are logged once each, never per write."""

    def __init__(self, path: str, log, *, clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.log = log
        self.clock = clock
        self.dirty = True
        self.written_at: float | None = None
        self.cost = 0.0  # CPU seconds of the last write, collection included
        self.writes = 0
        self._error = ""
        if not available():
            log.warning("metrics", f"daemon.metrics_file is set ({path}) but the Python library "
                        "prometheus-client is not installed (python3-prometheus-client, or pip "
                        "install 'wgnapid[metrics]'): no metrics are written")

    def next_due(self) -> float | None:
        if not self.dirty or not available():
            return None
        if self.written_at is None:
            return 0.0
        return self.written_at + max(MIN_INTERVAL, self.cost / MAX_CPU_SHARE)

    def write(self, doc: dict, threads: dict[tuple[int, int], tuple[int, float]], *,
              collect_cpu: float = 0.0) -> bool:
        """Write now (the caller checked next_due). True when the file was replaced.
        ``collect_cpu``: CPU seconds the caller spent collecting ``doc`` and
        ``threads``, counted with the write's own in the spacing of writes."""
        if not available():
            return False
        started = time.thread_time()
        self.dirty = False
        self.written_at = self.clock()
        try:
            return self._write(doc, threads)
        finally:
            self.cost = collect_cpu + time.thread_time() - started

    def _write(self, doc: dict, threads: dict[tuple[int, int], tuple[int, float]]) -> bool:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Doc(families(doc, threads)))
        # The service's UMask=0077 would leave the file unreadable for node_exporter.
        old = os.umask(0o022)
        try:
            write_to_textfile(self.path, registry)
        except OSError as exc:
            error = f"cannot write {self.path}: {exc.strerror}"
            if error != self._error:
                self.log.error("metrics", error + " (is its directory writable? see the drop-in "
                               f"metrics.conf: {DROP_INS})")
                self._error = error
            return False
        finally:
            os.umask(old)
        self._error = ""
        self.writes += 1
        return True
