"""NapiThreads.of() through its index gives what trying thread_matches() on
every thread name gives (the definition), for names made to collide."""

from __future__ import annotations

import random

import pytest

from wgnapid.napithreads import COMM_LEN, NapiThread, NapiThreads, thread_matches


def thread(pid: int, name: str, cut: bool) -> NapiThread:
    return NapiThread(pid=pid, name=name, cpu=0, cpu_seconds=0.0, policy="other", priority=0,
                      nice=0, cpus=frozenset({0}), cut=cut)


def by_definition(threads: list[NapiThread], ifname: str, known) -> tuple[list[int], set[str]]:
    found, shared = [], set()
    for t in threads:
        if thread_matches(t.name, t.cut, ifname):
            found.append(t.pid)
            if t.cut:
                shared.update(o for o in known if o != ifname and thread_matches(t.name, True, o))
    return sorted(found), shared


# Link names built to collide: prefixes of each other, "-" and digits inside,
# long enough to be cut, non-UTF-8 bytes (surrogateescape).
PARTS = ["wg", "-", "0", "1", "-1", "a", "tunnel", "\udcff", "x9", "-", "long-name"]


def names(rng: random.Random, n: int) -> list[str]:
    out = set()
    while len(out) < n:
        out.add("".join(rng.choice(PARTS) for _ in range(rng.randint(1, 6)))[:15])
    return sorted(out)


@pytest.mark.parametrize("seed", range(40))
def test_the_index_answers_as_the_definition(seed):
    rng = random.Random(seed)
    links = names(rng, 30)
    threads, pid = [], 100
    for link in links + names(rng, 5):  # some threads of links nobody knows
        for napi_id in rng.sample([0, 1, 12, 8193, 123456], rng.randint(0, 3)):
            whole = f"napi/{link}-{napi_id}"
            cut = rng.random() < 0.5
            threads.append(thread(pid, whole[:COMM_LEN] if cut else whole, cut and len(whole) >= COMM_LEN))
            pid += 1
    threads.append(thread(pid, "napi/-0", False))  # no name before the id
    snapshot = NapiThreads(threads)
    known = snapshot.known(links)
    for link in links:
        want_pids, want_shared = by_definition(threads, link, links)
        for k in (known, links):
            got = snapshot.of(link, k)
            assert [t.pid for t in got.threads] == want_pids, link
            if want_shared:
                assert got.ambiguous == ("thread names cut to 15 characters also fit "
                                         + ", ".join(sorted(want_shared))), link
            else:
                assert got.ambiguous == "", link


def test_a_cut_name_that_is_also_a_whole_name_of_a_short_link_is_ambiguous():
    # "napi/wg-1234567" is wg-12345678xyz's thread cut to 15 characters, and
    # could as well be wg's thread number 1234567.
    links = ["wg", "wg-12345678xyz", "other"]
    threads = [thread(7, "napi/wg-1234567", True), thread(8, "napi/wg-0", False)]
    snapshot = NapiThreads(threads)
    for known in (snapshot.known(links), links):
        long = snapshot.of("wg-12345678xyz", known)
        assert [t.pid for t in long.threads] == [7]
        assert long.ambiguous == "thread names cut to 15 characters also fit wg"
        short = snapshot.of("wg", known)
        assert [t.pid for t in short.threads] == [7, 8]
        assert short.ambiguous == "thread names cut to 15 characters also fit wg-12345678xyz"
    assert by_definition(threads, "wg", links) == ([7, 8], {"wg-12345678xyz"})


@pytest.mark.parametrize("seed", range(20))
def test_a_snapshot_built_on_a_previous_one_answers_as_a_fresh_one(seed):
    """The index carried over from a previous snapshot and changed by the
    threads that came and went gives the answers of an index built anew."""
    rng = random.Random(seed)
    links = names(rng, 20)
    # Whether a name was cut is the kernel's and the name's: one flag per name.
    cut: dict[str, bool] = {}
    pool = []
    for i in range(60):
        name = f"napi/{rng.choice(links)}-{rng.choice([0, 1, 77])}"[:COMM_LEN]
        flag = cut.setdefault(name, len(name) == COMM_LEN and rng.random() < 0.5)
        pool.append(thread(100 + i, name, flag))
    current = rng.sample(pool, 30)
    snapshot = NapiThreads(list(current))
    for _ in range(6):
        current = [t for t in current if rng.random() < 0.7] + rng.sample(pool, 10)
        current = list({t.pid: t for t in current}.values())
        before = snapshot
        snapshot = NapiThreads(list(current), previous=before)
        fresh = NapiThreads(list(current))
        moved = {t.pid for t in snapshot.moved_since(before)}
        assert moved == {t.pid for t in before.threads} ^ {t.pid for t in current}
        for link in links:
            assert snapshot.of(link, links) == fresh.of(link, links), link


@pytest.mark.parametrize("seed", range(10))
def test_known_names_kept_up_to_date_answer_as_built_anew(seed):
    from wgnapid.napithreads import KnownNames

    rng = random.Random(seed)
    pool = names(rng, 40)
    kept = KnownNames(rng.sample(pool, 10))
    kept.fitting("napi/x")  # the index exists from here on: add/discard must keep it
    for _ in range(100):
        name = rng.choice(pool)
        (kept.add if rng.random() < 0.5 else kept.discard)(name)
        fresh = KnownNames(kept.names)
        for other in pool:
            thread_name = f"napi/{other}-{rng.choice([0, 12])}"[:COMM_LEN]
            assert kept.fitting(thread_name) == fresh.fitting(thread_name), thread_name


def test_a_snapshot_does_not_keep_the_ones_before_it_alive():
    import gc
    import weakref

    first = NapiThreads([thread(1, "napi/wg0-0", False)])
    second = NapiThreads([thread(2, "napi/wg0-0", False)], previous=first)
    third = NapiThreads([thread(3, "napi/wg0-0", False)], previous=second)
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is None, "a chain of snapshots is kept"
    assert [t.pid for t in third.of("wg0").threads] == [3]
