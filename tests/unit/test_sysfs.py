"""wgnapid.sysfs: reading/writing `threaded` under a link directory of a fake
root, errno -> outcome, and napi/<dev>-N kthread counting. (Which directory is
which link's, and names, are tested in test_netns.py and test_ifname.py.)"""

from __future__ import annotations

import errno
import os

import pytest

from wgnapid import sysfs
from wgnapid.sysfs import NapiThreads, Outcome, ThreadedAttr

from .helpers import tree


class FakeOS:
    """Stands in for the `os` module inside wgnapid.sysfs only: everything is the
    real os, except the functions a test overrides. Tracks open/close balance."""

    def __init__(self, **overrides):
        self._overrides = overrides
        self.opened: list[int] = []
        self.closed: list[int] = []

    def __getattr__(self, name):
        if name in self._overrides:
            return self._overrides[name]
        return getattr(os, name)

    def open(self, *a, **k):
        if "open" in self._overrides:
            fd = self._overrides["open"](*a, **k)
        else:
            fd = os.open(*a, **k)
        self.opened.append(fd)
        return fd

    def dup(self, fd):
        new = os.dup(fd)
        self.opened.append(new)
        return new

    def close(self, fd):
        self.closed.append(fd)
        os.close(fd)


def raising(err):
    def f(*a, **k):
        raise OSError(err, os.strerror(err))

    return f


class DirAttr:
    """ThreadedAttr driven by name for these tests: the link's directory under the
    fake root is opened here (with the real os), the rest is ThreadedAttr's."""

    def __init__(self, root):
        self.root = root
        self.real = ThreadedAttr()

    def _dir(self, name):
        try:
            return os.open(os.path.join(self.root, name), os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            return sysfs._classify(exc, "open")

    def open(self, name, write=True):
        d = self._dir(name)
        if isinstance(d, sysfs.Result):
            return d
        try:
            return self.real.open(d, name, write=write)
        finally:
            os.close(d)

    def read(self, name):
        d = self._dir(name)
        if isinstance(d, sysfs.Result):
            return d
        try:
            return self.real.read(d, name)
        finally:
            os.close(d)

    def write(self, name, value):
        if value not in (0, 1):
            raise ValueError(value)
        d = self._dir(name)
        if isinstance(d, sysfs.Result):
            return d
        try:
            return self.real.write(d, value, name)
        finally:
            os.close(d)

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture
def attr(fakesys):
    return DirAttr(str(fakesys.root))


def patch_os(monkeypatch, **overrides) -> FakeOS:
    fake = FakeOS(**overrides)
    monkeypatch.setattr(sysfs, "os", fake)
    return fake


# -- reads ---------------------------------------------------------------------


@pytest.mark.parametrize("content, value", [("0\n", 0), ("1\n", 1), ("1", 1), ("0", 0)])
def test_read_values(fakesys, attr, content, value):
    fakesys.add("wg0", content)
    r = attr.read("wg0")
    assert r.outcome is Outcome.OK and r.value == value


def test_read_missing_file_is_gone(fakesys, attr):
    (fakesys.root / "wg0").mkdir()
    assert attr.read("wg0").outcome is Outcome.GONE


def test_read_missing_device_is_gone(attr):
    r = attr.read("wg9")
    assert r.outcome is Outcome.GONE
    assert r.value is None


@pytest.mark.parametrize("content", ["", "\n", "on\n", "x", "-1\n", "1.0\n", "\xff"])
def test_read_garbage_is_error(fakesys, attr, content):
    fakesys.add("wg0", content)
    r = attr.read("wg0")
    assert r.outcome is Outcome.ERROR
    assert r.value is None
    assert "unexpected content" in r.detail


# -- writes --------------------------------------------------------------------


@pytest.mark.parametrize("before, value, after", [("0\n", 1, "1\n"), ("1\n", 0, "0\n"),
                                                  ("1\n", 1, "1\n"), ("0\n", 0, "0\n")])
def test_write_lands_as_digit_newline(fakesys, attr, before, value, after):
    fakesys.add("wg0", before)
    r = attr.write("wg0", value)
    assert r.outcome is Outcome.OK and r.value == value
    assert fakesys.get("wg0") == after


def test_write_is_one_write_of_the_whole_value(fakesys, attr, monkeypatch):
    calls = []

    def pwrite(fd, data, offset):
        calls.append((bytes(data), offset))
        return os.pwrite(fd, data, offset)

    fake = patch_os(monkeypatch, pwrite=pwrite)
    fakesys.add("wg0")
    assert attr.write("wg0", 1).outcome is Outcome.OK
    assert calls == [(b"1\n", 0)]
    assert fake.opened == fake.closed and len(fake.opened) == 1


@pytest.mark.parametrize("value", [2, -1, "1", "on", None, 1.5])
def test_write_rejects_values_other_than_0_and_1(fakesys, attr, value):
    f = fakesys.add("wg0", "0\n")
    with pytest.raises(ValueError):
        attr.write("wg0", value)
    assert f.read_text() == "0\n"


def test_write_to_missing_device_is_gone_and_creates_nothing(fakesys, attr):
    before = tree(fakesys.root)
    r = attr.write("wg9", 1)
    assert r.outcome is Outcome.GONE
    assert tree(fakesys.root) == before


def test_write_to_missing_file_does_not_create_it(fakesys, attr):
    (fakesys.root / "wg0").mkdir()
    assert attr.write("wg0", 1).outcome is Outcome.GONE
    assert not (fakesys.root / "wg0" / "threaded").exists()


def test_one_open_serves_the_read_the_write_and_the_read_back(fakesys, attr, monkeypatch):
    fake = patch_os(monkeypatch)
    fakesys.add("wg0", "0\n")
    op = attr.open("wg0")
    assert attr.read_opened(op).value == 0
    assert attr.write_opened(op, 1).outcome is Outcome.OK
    assert attr.read_opened(op).value == 1
    attr.close(op)
    assert len(fake.opened) == 1 and fake.opened == fake.closed


@pytest.mark.parametrize("err", [errno.EACCES, errno.EROFS])
def test_not_writable_still_reads_and_the_write_says_why(fakesys, attr, monkeypatch, err):
    # Not root, or a read-only /sys: reading must still work (status, "already as wanted").
    def open_(path, flags, *a, **k):
        if flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(err, os.strerror(err))
        return os.open(path, flags, *a, **k)

    fake = patch_os(monkeypatch, open=open_)
    fakesys.add("wg0", "1\n")
    op = attr.open("wg0")
    assert not op.writable
    assert attr.read_opened(op).value == 1
    r = attr.write_opened(op, 0)
    assert r.outcome is Outcome.PERMISSION and "open for write" in r.detail
    attr.close(op)
    assert fakesys.get("wg0") == "1\n"
    assert fake.opened == fake.closed


# -- errno -> outcome ------------------------------------------------------------------


@pytest.mark.parametrize("err", [errno.EACCES, errno.EPERM])
@pytest.mark.parametrize("where", ["open", "pwrite"])
def test_permission_errors_name_cap_net_admin(fakesys, attr, monkeypatch, err, where):
    fakesys.add("wg0")
    fake = patch_os(monkeypatch, **{where: raising(err)})
    r = attr.write("wg0", 1)
    assert r.outcome is Outcome.PERMISSION
    assert "CAP_NET_ADMIN" in r.detail
    assert os.strerror(err) in r.detail
    assert fake.opened == fake.closed


def test_read_only_sysfs_is_a_permission_problem(fakesys, attr, monkeypatch):
    # systemd's ProtectKernelTunables= mounts /sys read-only.
    fakesys.add("wg0")
    patch_os(monkeypatch, open=raising(errno.EROFS))
    assert attr.write("wg0", 1).outcome is Outcome.PERMISSION


@pytest.mark.parametrize("where", ["open", "pwrite"])
def test_eopnotsupp_is_not_settable(fakesys, attr, monkeypatch, where):
    fakesys.add("wg0")
    fake = patch_os(monkeypatch, **{where: raising(errno.EOPNOTSUPP)})
    r = attr.write("wg0", 1)
    assert r.outcome is Outcome.NOT_SETTABLE
    assert fakesys.get("wg0") == "0\n"
    assert fake.opened == fake.closed


@pytest.mark.parametrize("err", [errno.ENODEV, errno.EINVAL, errno.ENOENT, errno.ENXIO])
@pytest.mark.parametrize("where", ["open", "pwrite"])
def test_gone_errnos_on_write(fakesys, attr, monkeypatch, err, where):
    fakesys.add("wg0")
    fake = patch_os(monkeypatch, **{where: raising(err)})
    r = attr.write("wg0", 1)
    assert r.outcome is Outcome.GONE
    assert os.strerror(err) in r.detail
    assert fake.opened == fake.closed


@pytest.mark.parametrize("err", [errno.ENODEV, errno.EINVAL, errno.ENOENT, errno.ENXIO])
@pytest.mark.parametrize("where", ["open", "pread"])
def test_gone_errnos_on_read(fakesys, attr, monkeypatch, err, where):
    fakesys.add("wg0", "1\n")
    fake = patch_os(monkeypatch, **{where: raising(err)})
    r = attr.read("wg0")
    assert r.outcome is Outcome.GONE
    assert r.value is None
    assert fake.opened == fake.closed


@pytest.mark.parametrize("written", [0, 1])
def test_short_write_is_not_ok(fakesys, attr, monkeypatch, written):
    fakesys.add("wg0")
    fake = patch_os(monkeypatch, pwrite=lambda fd, data, offset: written)
    r = attr.write("wg0", 1)
    assert r.outcome is Outcome.GONE
    assert "short write" in r.detail
    assert fake.opened == fake.closed


@pytest.mark.parametrize("where", ["open", "pwrite"])
def test_other_errno_is_error(fakesys, attr, monkeypatch, where):
    fakesys.add("wg0")
    patch_os(monkeypatch, **{where: raising(errno.EIO)})
    r = attr.write("wg0", 1)
    assert r.outcome is Outcome.ERROR
    assert os.strerror(errno.EIO) in r.detail


def test_other_errno_on_read_is_error(fakesys, attr, monkeypatch):
    fakesys.add("wg0")
    patch_os(monkeypatch, pread=raising(errno.EIO))
    assert attr.read("wg0").outcome is Outcome.ERROR


def test_the_patch_stays_inside_the_module(fakesys, attr, monkeypatch):
    # Sanity for the approach above: only wgnapid.sysfs sees the fake.
    patch_os(monkeypatch, pwrite=raising(errno.EIO))
    assert os.pwrite is not sysfs.os.pwrite


# -- napi/<dev>-N kernel threads ----------------------------------------------------------


def fake_proc(tmp_path, monkeypatch, tasks):
    """tasks: [(pid, comm, ppid)]. Builds <tmp>/proc/<pid>/stat and points
    NapiThreads' scan of /proc at it."""
    proc = tmp_path / "proc"
    proc.mkdir()
    for pid, comm, ppid in tasks:
        (proc / str(pid)).mkdir()
        (proc / str(pid) / "stat").write_bytes(
            f"{pid} ({comm}) S {ppid} 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 20 0 1 0 52 0 0\n".encode()
        )
    (proc / "self").mkdir()  # non-numeric entries are skipped
    (proc / "77").mkdir()  # a task that exited: no stat file any more

    real_open = open

    def fake_open(path, *a, **k):
        if isinstance(path, str) and path.startswith("/proc/"):
            path = str(proc) + path[len("/proc"):]
        return real_open(path, *a, **k)

    def fake_scandir(path):
        assert path == "/proc"
        return os.scandir(proc)

    monkeypatch.setattr(sysfs, "open", fake_open, raising=False)
    patch_os(monkeypatch, scandir=fake_scandir)
    return NapiThreads()


def test_napi_threads_counts_kernel_threads_of_the_device(tmp_path, monkeypatch):
    n = fake_proc(tmp_path, monkeypatch, [
        # Debian 6.1: every WireGuard peer thread of wg0 is napi/wg0-0.
        (100, "napi/wg0-0", 2), (101, "napi/wg0-0", 2), (102, "napi/wg0-0", 2),
        (103, "napi/wg1-0", 2),
        (104, "napi/veth0-5", 2), (105, "napi/veth0-6", 2),
        (106, "napi/wg0-1-0", 2),  # a device named wg0-1
        (200, "napi/wg0-0", 1234),  # a user process calling itself that: not counted
        (201, "evil) S 2 (x", 1),  # a comm with parentheses cannot fake a kthread
        (202, "kworker/0:1", 2),
    ])
    assert n.count("wg0") == 3
    assert n.count("wg1") == 1
    assert n.count("veth0") == 2
    assert n.count("wg0-1") == 1
    assert n.count("wg2") == 0


def test_napi_threads_truncated_comms(tmp_path, monkeypatch):
    # The kernel cuts comm to 15 characters.
    n = fake_proc(tmp_path, monkeypatch, [
        (100, "napi/abcdefgh-1", 2),  # abcdefgh, id 10 or 11...: id cut
        (101, "napi/abcdefgh-0", 2),
        (102, "napi/abcdefghi-", 2),  # 9-char name: the whole id is cut
        (103, "napi/wg-long-tu", 2),  # wg-long-tunnel (14 chars): name cut
        (104, "napi/wg-long-tu", 2),
        (105, "napi/0123456789", 2),  # 10+ chars: "-" and id cut
    ])
    assert n.count("abcdefgh") == 2
    assert n.count("abcdefghi") == 1
    assert n.count("wg-long-tunnel") == 2
    assert n.count("0123456789") == 1
    assert n.count("0123456789abcde") == 1  # indistinguishable: same 15-char prefix
    assert n.count("abcdefg") == 0


def test_napi_threads_a_cut_name_is_not_counted_for_a_shorter_device(tmp_path, monkeypatch):
    # "napi/wg-long-tu" is wg-long-tunnel's thread: cut inside the *name*, so it
    # cannot be device "wg-long" with NAPI id "tu" (ids are numbers).
    n = fake_proc(tmp_path, monkeypatch, [(103, "napi/wg-long-tu", 2)])
    assert n.count("wg-long-tunnel") == 1
    assert n.count("wg-long") == 0


def test_napi_threads_synthetic_instance_count_logic():
    n = object.__new__(NapiThreads)
    n._comms = {"napi/wg0-0": 4, "napi/abcdefghij": 1}
    n._by_dev = {"wg0": 4}
    assert n.count("wg0") == 4
    assert n.count("abcdefghij") == 1
    assert n.count("abcdefghijk") == 1  # same comm prefix
    assert n.count("abcdefghi") == 0
