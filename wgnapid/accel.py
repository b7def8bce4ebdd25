"""Whether wgnapid's per-link loops run compiled (wgnapid/_hotpath.c).

``hotpath`` is the compiled module, or None when it was not built (a source
tree without a C compiler; setup.py marks it optional) or the environment sets
WGNAPID_PURE_PYTHON=1. Every user keeps a Python reference implementation
with the same answers (tests/unit/test_hotpath.py compares them), so None
only costs CPU: ~15-20 us instead of ~0.5 us per link message parsed, and
~1-2 us more per retry of a waiting link (bench/README.md, "The compiled hot
path").
"""

from __future__ import annotations

import os


def forced_off() -> bool:
    """True when WGNAPID_PURE_PYTHON (not empty, not 0) asks for the Python loops."""
    return os.environ.get("WGNAPID_PURE_PYTHON", "") not in ("", "0")


def _load():
    if forced_off():
        return None
    try:
        from wgnapid import _hotpath
    except ImportError:
        return None
    return _hotpath


hotpath = _load()


def describe() -> str:
    """One line for `wgnapid doctor` and the start-up log: which is in use."""
    if hotpath is not None:
        return "compiled (wgnapid._hotpath)"
    if forced_off():
        return "Python (WGNAPID_PURE_PYTHON is set)"
    return "Python (wgnapid._hotpath is not built: more CPU per link message and retry)"
