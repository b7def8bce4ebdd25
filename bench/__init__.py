"""wgnapid benchmarks: `python -m bench` (as root; see bench/README.md)."""
