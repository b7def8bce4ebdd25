"""What proving a link's identity costs at each sysfs access (issue 9).

    python -m bench.identitycost NAMES.json

Run inside the namespace whose links NAMES.json lists (the worker runs it with
`ip netns exec` semantics: /sys/class/net shows that namespace), with the
daemon's code first on PYTHONPATH. For every link, one access as the daemon
makes it, and its CPU time (process CPU clock, ns):

- ``path``: before identity checks (wgnapid up to 61879e8): open
  /sys/class/net/NAME/threaded by path, pread, close;
- ``proven``: NetNamespace.open_threaded (openat of the directory, the
  `ifindex` attribute read and compared, `threaded` opened by openat), pread,
  close;
- ``stale``: the same with a name that is another link's (as after a rename
  and a new link taking the name): the mismatch, an RTM_GETLINK by ifindex,
  and the proof again.

Median over rounds of the mean per access. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time


def _rounds(fn, items, rounds: int = 7) -> float:
    fn(items)  # warm
    per = []
    for _ in range(rounds):
        t = time.process_time_ns()
        fn(items)
        per.append((time.process_time_ns() - t) / len(items) / 1000)
    return statistics.median(per)


def main(argv: list[str]) -> int:
    from wgnapid.netns import NetNamespace

    with open(argv[0]) as f:
        names = json.load(f)
    ns = NetNamespace.current()
    try:
        links = {l.name: l for l in ns.dump()[0]}
        items = [(links[n].ifindex, n) for n in names if n in links]
        # Each link asked for under the next link's name: always the mismatch path.
        stale = [(items[i][0], items[(i + 1) % len(items)][1]) for i in range(len(items))]

        def path(batch):
            for _ifindex, name in batch:
                fd = os.open(f"/sys/class/net/{name}/threaded", os.O_RDWR | os.O_CLOEXEC)
                os.pread(fd, 16, 0)
                os.close(fd)

        def proven(batch):
            for ifindex, name in batch:
                op, _ = ns.open_threaded(ifindex, name)
                ns.attr.read_opened(op)
                ns.attr.close(op)

        out = {"links": len(items), "python": sys.version.split()[0],
               "path_us": _rounds(path, items), "proven_us": _rounds(proven, items),
               "stale_us": _rounds(proven, stale)}
    finally:
        ns.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
