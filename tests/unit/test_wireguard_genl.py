"""links.WireGuardGenl's netlink exchange, against a fake socket: which replies
belong to the request, errors, interrupted dumps and a reloaded module. The
real exchange is the guest tier's (w02, w03) and, for the namespace its
socket is in, tests/integration/test_namespaces.py."""

from __future__ import annotations

import errno
import struct

import pytest

from wgnapid.links import NLM_F_DUMP_INTR, NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR, WireGuardGenl

HDR = struct.Struct("=IHHII")
FAMILY = 0x1D


def message(mtype: int, seq: int, flags: int = 0, payload: bytes = b"\0" * 4) -> bytes:
    body = payload + b"\0" * (-len(payload) % 4)
    return HDR.pack(HDR.size + len(body), mtype, flags, seq, 0) + body


def error(seq: int, err: int, mtype: int = NLMSG_ERROR) -> bytes:
    return message(mtype, seq, 0, struct.pack("=i", -err) + b"\0" * 16)


def device_reply(seq: int, flags: int = NLM_F_MULTI) -> bytes:
    from pyroute2.netlink.generic.wireguard import wgmsg

    msg = wgmsg()
    msg["cmd"] = 0
    msg["version"] = 1
    msg["attrs"] = [["WGDEVICE_A_IFINDEX", 7], ["WGDEVICE_A_IFNAME", "wg0"]]
    msg["header"]["type"] = FAMILY
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


class FakeSock:
    """Answers each request with what ``script(seq, n)`` returns: a list of
    datagrams (n counts requests from 0)."""

    def __init__(self, script):
        self.script, self.sent, self.queue = script, [], []

    def send(self, data):
        seq = HDR.unpack_from(data)[3]
        self.queue += self.script(seq, len(self.sent))
        self.sent.append(bytes(data))
        return len(data)

    def recv(self, size):
        return self.queue.pop(0)

    def close(self):
        pass


def genl(script) -> WireGuardGenl:
    g = WireGuardGenl()
    g.sock.close()
    g.sock = FakeSock(script)
    g._family = FAMILY
    return g


def test_replies_of_an_earlier_request_are_skipped():
    g = genl(lambda seq, n: [device_reply(seq - 1) + error(seq - 1, 0, NLMSG_DONE),
                             device_reply(seq) + message(NLMSG_DONE, seq)])
    (reply,) = g.device(7)
    assert reply.get_attr("WGDEVICE_A_IFNAME") == "wg0"


@pytest.mark.parametrize("mtype", [NLMSG_ERROR, NLMSG_DONE])
def test_an_error_ends_the_request(mtype):
    g = genl(lambda seq, n: [error(seq, errno.ENODEV, mtype)])
    with pytest.raises(OSError) as exc:
        g.device(7)
    assert exc.value.errno == errno.ENODEV


def test_an_interrupted_dump_is_asked_again_and_then_given_up():
    g = genl(lambda seq, n: [device_reply(seq, NLM_F_MULTI | (NLM_F_DUMP_INTR if n < 2 else 0)),
                             message(NLMSG_DONE, seq, NLM_F_MULTI | (NLM_F_DUMP_INTR if n < 2 else 0))])
    assert len(g.device(7)) == 1 and len(g.sock.sent) == 3
    g = genl(lambda seq, n: [device_reply(seq, NLM_F_MULTI | NLM_F_DUMP_INTR),
                             message(NLMSG_DONE, seq, NLM_F_MULTI)])
    with pytest.raises(OSError) as exc:
        g.device(7)
    assert exc.value.errno == errno.EINTR and len(g.sock.sent) == WireGuardGenl.DUMP_ATTEMPTS


def test_a_reloaded_module_is_found_under_its_new_id():
    """ENOENT for the cached family id: the id is asked again, and the request
    goes out once more to the new one (the kernel allocates ids cyclically)."""
    from pyroute2.netlink import ctrlmsg

    def family_reply(seq):
        msg = ctrlmsg()
        msg["cmd"] = 1
        msg["version"] = 1
        msg["attrs"] = [["CTRL_ATTR_FAMILY_ID", FAMILY + 1], ["CTRL_ATTR_FAMILY_NAME", "wireguard"]]
        msg["header"]["type"] = 0x10
        msg["header"]["sequence_number"] = seq
        msg.encode()
        return bytes(msg.data)

    def script(seq, n):
        return [[error(seq, errno.ENOENT)], [family_reply(seq)],
                [device_reply(seq) + message(NLMSG_DONE, seq)]][n]

    g = genl(script)
    g.device(7)
    assert g._family == FAMILY + 1
    assert [HDR.unpack_from(d)[1] for d in g.sock.sent] == [FAMILY, 0x10, FAMILY + 1]


def test_peers_are_counted_for_the_ifindex_never_a_name():
    """The request names the link by ifindex only: WireGuard looks a name up
    when the request arrives, and by then it may be another link's."""
    from pyroute2.netlink.generic.wireguard import wgmsg

    g = genl(lambda seq, n: [device_reply(seq) + message(NLMSG_DONE, seq)])
    assert g.peer_count(7) == 0
    (sent,) = g.sock.sent
    request = wgmsg(sent)
    request.decode()
    assert request.get_attr("WGDEVICE_A_IFINDEX") == 7
    assert request.get_attr("WGDEVICE_A_IFNAME") is None
