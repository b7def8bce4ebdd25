"""What is run: every (figure, scenario, subject) with its sizes and repeats.

`--quick` keeps the shape with small sizes, for development on a noisy
machine; its numbers are not the committed ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SUBJECTS = ("wgnapid", "hook", "udev", "timer1", "timer10", "floor", "pyfloor")


@dataclass
class Item:
    key: str  # e.g. "burst1000"; one key per scenario, one Item per subject
    subject: str
    spec: dict
    repeats: int = 1
    tags: tuple = field(default_factory=tuple)

    def full_spec(self, seed: int) -> dict:
        return dict(self.spec, subject=self.subject, seed=seed)


def build(quick: bool) -> list[Item]:
    q = quick
    items: list[Item] = []

    def add(key, subject, spec, repeats=1):
        items.append(Item(key, subject, spec, repeats))

    # 5. start-up (first: the machine is quiet, nothing cached but the venv)
    add("ready0", "wgnapid", {"type": "ready", "existing": 0, "repeats": 3 if q else 10})
    big = 2000 if q else 10000
    add("ready_big", "wgnapid", {"type": "ready", "existing": big, "repeats": 1 if q else 3,
                                 "restart": True})

    # 1. event path, tun links (settable from creation)
    n = 20 if q else 100
    add("single", "wgnapid", {"type": "single", "n": n, "timeout": 5}, 1 if q else 2)
    add("single_poll", "wgnapid", {"type": "single", "n": n, "poll": True})
    # The lower bounds: floor.c (C), and pyfloor (Python; one at a time only:
    # in a burst wgnapid batches, and a responder that writes inline is no bound).
    for alt in ("hook", "udev", "floor", "pyfloor"):
        add("single", alt, {"type": "single", "n": n, "timeout": 5}, 1 if q else 2)
    add("single", "timer1", {"type": "paced", "n": 10 if q else 40, "window_s": 5 if q else 20,
                             "timeout": 3})
    if not q:
        add("single", "timer10", {"type": "paced", "n": 30, "window_s": 30, "timeout": 12})
    for size, reps in ((100, (2, 5)), (1000, (1, 5))):
        key = f"burst{size}"
        add(key, "wgnapid", {"type": "burst", "size": size, "timeout": 15}, reps[0] if q else reps[1])
        # The lower bound, as many runs as wgnapid: what any responder can reach here.
        add(key, "floor", {"type": "burst", "size": size, "timeout": 15}, reps[0] if q else reps[1])
        for alt in ("hook", "udev"):
            add(key, alt, {"type": "burst", "size": size, "timeout": 30}, 1 if q else 3)
        add(key, "timer1", {"type": "burst", "size": size, "timeout": 5, "phase_s": 1}, 1 if q else 3)
        if not q and size == 100:
            add(key, "timer10", {"type": "burst", "size": size, "timeout": 15, "phase_s": 10}, 3)

    # 1b. event path, veth made settable later by `up` (an rtnetlink event)
    n = 20 if q else 100
    add("veth_up", "wgnapid", {"type": "single", "link": "veth-up", "n": n, "timeout": 5})
    for alt in ("hook", "udev"):
        add("veth_up", alt, {"type": "single", "link": "veth-up", "n": n // 2,
                             "per_link_wait": False, "timeout": 3})
    add("veth_up", "timer1", {"type": "paced", "link": "veth-up", "n": 10 if q else 30,
                              "window_s": 4 if q else 10, "timeout": 3})

    # 2. waiting links that become settable with no event
    n = 100
    add("waiting", "wgnapid", {"type": "waiting", "n": n, "settle_s": 6, "cpu_window_s": 5 if q else 30,
                               "attach_window_s": 4, "rounds": 1 if q else 2, "timeout": 8})
    add("waiting", "timer1", {"type": "waiting", "n": n, "settle_s": 2, "cpu_window_s": 5 if q else 20,
                              "attach_window_s": 4, "rounds": 1, "timeout": 4})
    if not q:
        add("waiting", "timer10", {"type": "waiting", "n": n, "settle_s": 2, "cpu_window_s": 30,
                                   "attach_window_s": 10, "rounds": 1, "timeout": 13})
    for alt in ("hook", "udev"):
        add("waiting", alt, {"type": "waiting", "n": n, "settle_s": 1, "cpu_window_s": 5 if q else 10,
                             "attach_window_s": 2, "rounds": 1, "timeout": 3})
    # 2b. waiting links at scale (issue 16): CPU while 100 / 1,000 / 10,000 wait
    # (30 s windows: one periodic resync falls in each), and the silent attach
    # with 1,000 waiting at once; beside the C lower bound (bench/floor.c keeps
    # every waiting fd and writes them all in one wake-up every 1.8 s).
    add("waiting", "floor", {"type": "waiting", "n": n, "settle_s": 6, "cpu_window_s": 5 if q else 30,
                             "attach_window_s": 4, "rounds": 1, "timeout": 8})
    for size, settle in ((1000, 8), (10000, 20)):
        key = f"waiting{size}"
        for subject in ("wgnapid", "floor"):
            add(key, subject, {"type": "waiting", "n": size // 5 if q else size, "settle_s": settle,
                               "cpu_window_s": 10 if q else 30, "attach_window_s": 4,
                               "attach": size == 1000, "rounds": 1, "timeout": 10})

    # 6. and 3. the big burst (CPU per link and peak RSS at 10,000 too)
    add("burst_big", "wgnapid", {"type": "burst", "size": big, "timeout": 20, "settle_s": 2},
        1 if q else 3)
    for alt in ("hook", "udev"):
        add("burst_big", alt, {"type": "burst", "size": big, "timeout": 20, "settle_s": 2})

    # parsing cost of one RTM_NEWLINK (cited by wgnapid/links.py)
    add("parse", "wgnapid", {"type": "parse"})
    # what the identity proof costs per sysfs access (cited by docs/DESIGN.md)
    add("identity", "wgnapid", {"type": "identity", "n": 200}, 1 if q else 3)
    # the stall watch's cost per window, 1,000 WireGuard peers (bench/stallcost.py)
    add("stallcost", "wgnapid", {"type": "stallcost", "peers": 1000})

    # 4. idle
    add("idle", "wgnapid", {"type": "idle", "window_s": 10 if q else 60})
    for alt, window in (("hook", 10), ("udev", 10), ("timer1", 10 if q else 20), ("timer10", 30)):
        if q and alt == "timer10":
            continue
        add("idle", alt, {"type": "idle", "window_s": window})
    return items
