"""When waiting links are tried again, and which of their files stay open meanwhile.

A waiting link (the write fails with EOPNOTSUPP: no NAPI instance yet,
KERNEL-FACTS.md "Writing /sys/class/net/DEV/threaded") must be tried again at
most 0.9 x pending_max_delay apart, since adding a WireGuard peer emits no
event. Thousands of such links are normal on a concentrator, so two things
keep them cheap (docs/DESIGN.md, "Waiting links at scale"):

- ``RetrySchedule``: due times are rounded *down* to a grid of
  cap / SLOTS_PER_CAP seconds (cap = the longest interval allowed), so many
  links share one due time and one wake-up of the loop serves them all, and
  no interval ever grows beyond what was asked. A link retried on its slot
  keeps its phase (cap is a whole number of slots), so the loop wakes at most
  SLOTS_PER_CAP times per cap however many links wait.
- ``KeptFds``: the `threaded` file of a waiting link, opened under its proven
  directory (wgnapid.netns), stays open between retries, so a retry is one
  pwrite. Such an fd is bound to the device's kernfs node, not to a path: a
  rename keeps it, and once the device is unregistered every read or write
  fails with ENODEV (seen on 6.18; tests/integration/test_waiting.py), so it
  can never reach another link. The number kept is capped below the process's
  RLIMIT_NOFILE; beyond the cap a retry opens and proves the link again.
"""

from __future__ import annotations

import heapq
import math
import resource

# The loop wakes at most this many times per cap for retries (cap 1.8 s:
# slots of 0.2 s). More slots: links created at different moments spread over
# more wake-ups; fewer: the first retries of a new link (0.1, 0.2 s) are
# rounded more coarsely.
SLOTS_PER_CAP = 9
# File descriptors never used for kept files: the rest of the daemon (sockets,
# namespaces: about four per namespace, the status file, journald).
FD_RESERVE = 1024


class RetrySchedule:
    """Due times of waiting links, coalesced into slots.

    Entries are any objects with a ``retry_at`` attribute (float seconds, or
    None when no retry is scheduled): that attribute is the truth, entries in
    the slots are hints removed lazily (a link settled, removed or
    rescheduled just no longer matches its old slot). All times in seconds
    of the caller's clock (time.monotonic in the daemon)."""

    def __init__(self) -> None:
        self._slots: dict[float, list] = {}  # due -> entries (possibly stale)
        self._live: dict[float, int] = {}  # due -> entries whose retry_at is still that due
        self._heap: list[float] = []  # due times with a slot

    @staticmethod
    def slot(now: float, delay: float, cap: float) -> float:
        """The due time for a retry ``delay`` seconds after ``now``: the latest
        grid point (multiple of cap / SLOTS_PER_CAP) not after now + delay; a
        delay shorter than one slot goes to the next grid point after now
        (at most one slot, hence at most cap, away)."""
        width = cap / SLOTS_PER_CAP
        # (1e-9: a time on the grid, give or take rounding, stays on it, so a
        # link retried on its slot keeps its phase.)
        k = math.floor((now + delay) / width + 1e-9)
        if k * width <= now:
            k = math.floor(now / width) + 1
        return k * width

    def add(self, entry, due: float) -> None:
        """Schedule ``entry`` at ``due`` (a value from slot()); any earlier
        schedule of it must have been discard()ed."""
        entry.retry_at = due
        slot = self._slots.get(due)
        if slot is None:
            slot = self._slots[due] = []
            self._live[due] = 0
            heapq.heappush(self._heap, due)
        slot.append(entry)
        self._live[due] += 1

    def add_many(self, entries: list, due: float) -> None:
        """add() for many entries at one due time (a slot retried together)."""
        if not entries:
            return
        for entry in entries:
            entry.retry_at = due
        slot = self._slots.get(due)
        if slot is None:
            self._slots[due] = list(entries)
            self._live[due] = len(entries)
            heapq.heappush(self._heap, due)
        else:
            slot.extend(entries)
            self._live[due] += len(entries)

    def discard(self, entry) -> None:
        """Unschedule ``entry`` (no-op when it has no retry)."""
        due = entry.retry_at
        if due is None:
            return
        entry.retry_at = None
        left = self._live.get(due)
        if left is None:
            return
        if left <= 1:
            # Empty now: forget the slot (its heap entry is skipped later).
            del self._live[due]
            del self._slots[due]
        else:
            self._live[due] = left - 1

    def next_due(self) -> float | None:
        """The earliest due time with a live entry, or None."""
        heap = self._heap
        while heap and heap[0] not in self._live:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def take(self, now: float) -> list:
        """Every entry due at or before ``now``, unscheduled (retry_at None), in
        due order."""
        out = []
        while (due := self.next_due()) is not None and due <= now:
            heapq.heappop(self._heap)
            del self._live[due]
            for entry in self._slots.pop(due):
                if entry.retry_at == due:  # not rescheduled, settled or taken twice
                    entry.retry_at = None
                    out.append(entry)
        return out

    def clear(self) -> None:
        self._slots.clear()
        self._live.clear()
        self._heap.clear()

    def __len__(self) -> int:
        return sum(self._live.values())


def nofile_soft_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class KeptFds:
    """How many `threaded` files of waiting links may stay open at once; one
    budget for every reconciler of a daemon.

    ``limit``: fds; by default three quarters of what RLIMIT_NOFILE's soft
    limit leaves after FD_RESERVE, the last quarter staying for namespaces
    (about four fds each) and the rest (the daemon lifts the soft limit to
    the hard one first: the unit's LimitNOFILE=65536 gives 48,384; systemd's
    default 1024:524288 would give 392,448; a hard limit of 20,000 gives
    14,232). Each kept file costs the kernel an open file and a kernfs
    open-file record (well under 1 KiB)."""

    def __init__(self, limit: int | None = None):
        if limit is None:
            limit = max(0, (nofile_soft_limit() - FD_RESERVE) * 3 // 4)
        self.limit = limit
        self.count = 0

    def take(self) -> bool:
        """Reserve one; False when the cap is reached (open per retry then)."""
        if self.count >= self.limit:
            return False
        self.count += 1
        return True

    def give(self) -> None:
        self.count -= 1
