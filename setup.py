"""The one part of the build pyproject.toml cannot declare stably yet (setuptools
calls its ext-modules table experimental): wgnapid's per-link loops in C.

Optional: where it cannot be compiled (no C compiler or Python headers) the
install still succeeds and wgnapid runs the same loops in Python, with more
CPU per link (wgnapid/accel.py says which is in use; `wgnapid doctor` too).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("wgnapid._hotpath", ["wgnapid/_hotpath.c"], optional=True)])
