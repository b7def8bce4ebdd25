"""The status document's link rows (wgnapid.status.LinkRows): kept as text,
encoded again exactly when what a row shows changed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from wgnapid.reconciler import LinkState
from wgnapid.status import LinkRows


def state(i: int, **kw) -> LinkState:
    return LinkState(**{"netns": 4026531840, "ifindex": i, "name": f"wg{i}", "kind": "wireguard",
                        "rule": "wg", "wanted": "on", "state": "threaded", "current": 1, **kw})


# A value different from state(1)'s for every field of LinkState.
OTHER = {"netns": 7, "ifindex": 99, "name": "wg\udcff", "kind": "veth", "rule": None, "wanted": "off",
         "state": "waiting", "reason": "no NAPI instance yet", "before": 0, "current": 0,
         "written": True, "changed": True, "writing": True, "again": True, "retry_delay": 0.5,
         "retry_at": 3.0, "netns_name": "tenant-a", "kept": object()}


def test_every_field_of_link_state_has_a_value_in_the_table():
    assert {f.name for f in dataclasses.fields(LinkState)} == set(OTHER)


@pytest.mark.parametrize("field", sorted(OTHER))
def test_shown_changes_whenever_the_row_would(field):
    """A field the row shows that shown() left out would leave a stale row."""
    st = state(1)
    row, shown = st.as_dict(), st.shown()
    setattr(st, field, OTHER[field])
    if st.as_dict() != row:
        assert st.shown() != shown, f"{field} is in the row but not in shown()"


def rows(text: str) -> list[dict]:
    return json.loads(text)


def test_rows_are_the_link_rows_with_placement():
    states = [state(1), state(2, name="wg\udcfe", state="waiting", current=0), state(3, rule=None)]
    place = {"wg1": {"cpus": [0], "state": "placed"}}
    assert rows(LinkRows().encode(states, place.get)) == [
        {**states[0].as_dict(), "placement": place["wg1"]}, states[1].as_dict(), states[2].as_dict()]
    assert rows(LinkRows().encode([])) == []


def test_a_changed_link_is_shown_as_it_is_now_and_a_gone_one_not_at_all(monkeypatch):
    table = LinkRows()
    states = [state(i) for i in range(5)]
    place = {}
    table.encode(states, place.get)
    states[1].state, states[1].current, states[1].reason = "failed", 0, "EIO"
    states[2].name = "renamed"
    states[3].netns_name = "tenant-b"
    place["wg4"] = {"cpus": [1]}
    del states[0]
    assert rows(table.encode(states, place.get)) == [
        *(st.as_dict() for st in states[:3]), {**states[3].as_dict(), "placement": {"cpus": [1]}}]
    # Gone from the table too: the same ifindex coming back is a new row.
    states.insert(0, state(0, state="off", current=0, wanted="off"))
    assert rows(table.encode(states, place.get))[0] == states[0].as_dict()


def test_only_changed_rows_are_encoded_again(monkeypatch):
    table = LinkRows()
    states = [state(i) for i in range(100)]
    first = table.encode(states)
    encoded = []
    real = LinkState.as_dict
    monkeypatch.setattr(LinkState, "as_dict", lambda self: encoded.append(self.ifindex) or real(self))
    assert table.encode(states) == first
    assert encoded == []
    states[42].current = 0
    table.encode(states)
    assert encoded == [42]
