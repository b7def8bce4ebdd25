"""wgnapid: threaded NAPI for WireGuard links on kernels that do not do it themselves."""

__version__ = "0.1.0"
