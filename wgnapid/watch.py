"""`wgnapid status --watch`: the status, refreshed, with each NAPI thread's CPU use."""

from __future__ import annotations

import json
import sys
import time
from typing import Callable


def usage(prev: dict[int, float], doc: dict, elapsed: float) -> dict[int, float]:
    """{pid: CPU % of one CPU over ``elapsed`` seconds}, from two documents'
    `cpu_seconds` (threads new since the previous one count from their start)."""
    out = {}
    for row in doc["links"]:
        for t in row.get("threads", []):
            before = prev.get(t["pid"], 0.0)
            out[t["pid"]] = max(0.0, t["cpu_seconds"] - before) * 100.0 / elapsed if elapsed > 0 else 0.0
    return out


def _seconds(doc: dict) -> dict[int, float]:
    return {t["pid"]: t["cpu_seconds"] for row in doc["links"] for t in row.get("threads", [])}


def watch(document: Callable[[], dict], interval: float, count: int | None, as_json: bool) -> int:
    """Print the status every ``interval`` seconds (``count`` times, or until
    Ctrl-C, which ends with exit 0). ``as_json``: one JSON document per line."""
    from wgnapid.cli import print_threads

    tty = sys.stdout.isatty() and not as_json
    prev, prev_t, n = {}, None, 0
    try:
        while count is None or n < count:
            doc = document()
            now = time.monotonic()
            use = usage(prev, doc, now - prev_t) if prev_t is not None else {}
            prev, prev_t = _seconds(doc), now
            n += 1
            if as_json:
                for row in doc["links"]:
                    for t in row.get("threads", []):
                        t["cpu_percent"] = round(use.get(t["pid"], 0.0), 1)
                print(json.dumps(doc), flush=True)
            else:
                if tty:
                    sys.stdout.write("\033[H\033[2J")
                print(time.strftime("%H:%M:%S"), f"- every {interval:g} s, Ctrl-C ends")
                for row in doc["links"]:
                    if row["rule"] is None:
                        continue
                    print(f"{row['name']:<16} {row['state']:<9} {row['napi_threads']} NAPI thread(s)")
                    print_threads(row, use)
                sys.stdout.flush()
            if count is None or n < count:
                time.sleep(max(0.05, interval - (time.monotonic() - now)))
    except KeyboardInterrupt:
        print()
    return 0
