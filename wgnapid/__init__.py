"""wgnapid: threaded NAPI for WireGuard links on kernels that do not do it themselves."""

__version__ = "0.1.0"

# Where the unit's optional drop-ins are (namespaces-all, placement, realtime,
# metrics), for messages that name one.
DROP_INS = "systemd/drop-ins/ in the source, /usr/share/doc/wgnapid/examples/ in the Debian package"
