"""What parsing one RTM_NEWLINK event costs: pyroute2's message class (every
attribute decoded) against wgnapid's own reader (three fields), in Python and
compiled (wgnapid/_hotpath.c).

    python -m bench.parsecost CAPTURE.bin

CAPTURE.bin holds real RTM_NEWLINK messages (netlink header included) as the
daemon receives them, captured by the worker when it creates a tun link. Run
under each virtualenv, so both pyroute2 versions the project supports are
measured. Prints one JSON line.
"""

from __future__ import annotations

import json
import statistics
import struct
import sys
import time

_NLMSGHDR = struct.Struct("=IHHII")


def messages(buf: bytes) -> list[bytes]:
    out, off = [], 0
    while off + _NLMSGHDR.size <= len(buf):
        length, mtype = _NLMSGHDR.unpack_from(buf, off)[:2]
        if length < _NLMSGHDR.size:
            break
        if mtype == 16:
            out.append(buf[off : off + length])
        off += (length + 3) & ~3
    return out


def per_message_us(fn, msgs: list[bytes], rounds: int = 7, target_s: float = 0.2) -> float:
    """Median over rounds of the mean time per message."""
    n = 1
    while True:  # calibrate
        t = time.perf_counter()
        for _ in range(n):
            for m in msgs:
                fn(m)
        if time.perf_counter() - t > target_s / 4 or n > 1 << 16:
            break
        n *= 2
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            for m in msgs:
                fn(m)
        times.append((time.perf_counter() - t) / (n * len(msgs)) * 1e6)
    return statistics.median(times)


def main(argv: list[str]) -> int:
    with open(argv[0], "rb") as f:
        msgs = messages(f.read())
    out: dict = {"messages": len(msgs), "bytes": sum(len(m) for m in msgs) // max(1, len(msgs))}
    try:
        import pyroute2
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        def pyroute2_full(m: bytes):
            msg = ifinfmsg(m)
            msg.decode()
            return msg.get_attr("IFLA_IFNAME"), msg.get(("linkinfo", "kind"))

        out["pyroute2"] = pyroute2.__version__
        out["pyroute2_us"] = per_message_us(pyroute2_full, msgs)
        got = pyroute2_full(msgs[0])
        out["pyroute2_sees"] = [got[0], got[1]]
    except ImportError as exc:
        out["pyroute2_error"] = str(exc)
    try:
        import wgnapid.links
        from wgnapid.accel import hotpath

        out["wgnapid_from"] = wgnapid.links.__file__
        # The Python reference (a datagram's messages, each link's three fields),
        # and the compiled loop the daemon runs when it is built (wgnapid/_hotpath.c).
        out["wgnapid_us"] = per_message_us(wgnapid.links._link_messages_py, msgs)
        body = wgnapid.links._link_messages_py(msgs[0])[0][3]
        out["wgnapid_sees"] = [body[1], body[2]]
        if hotpath is not None:
            out["wgnapid_c_us"] = per_message_us(hotpath.link_messages, msgs)
            body = hotpath.link_messages(msgs[0])[0][3]
            out["wgnapid_c_sees"] = [body[1], body[2]]
    except ImportError as exc:
        out["wgnapid_error"] = str(exc)
    out["python"] = sys.version.split()[0]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
