"""A network namespace as wgnapid sees it: its rtnetlink sockets, its sysfs view
and the proof that a sysfs directory belongs to the link being acted on.

A link is (network namespace, ifindex). Names are only how sysfs is reached:
a name can pass to another link at any moment (rename, delete and create), and
/sys can show another namespace than the process's own (KERNEL-FACTS.md,
"Network namespaces"). So every access goes through ``open_threaded``, which
opens the link's directory under the namespace's class/net directory fd,
compares the directory's ``ifindex`` attribute with the ifindex acted on, and
opens ``threaded`` relative to that directory (openat). An fd opened that way
stays bound to that device even if it is renamed and another link takes the
name (kernfs files belong to the device's kobject, not to a path), so a write
in flight still reaches the proven link.

Agreed interface (/work/wt/NETNS-DESIGN.md), with these refinements:
- ``open_threaded`` returns ``(Opened | Result, Link | None)``: the second item
  is the link as rtnetlink reported it when the stored name had to be corrected
  (a rename, or a name passed to another link), None when the name given was
  proven as it is. Callers take its name *and* kind and decide again.
- ``check_view`` compares every link of a consistent dump (ifindex, and the
  hardware address where there is one) and the set of names with what the
  sysfs view shows; ``problem_line`` builds the one-line message.
- Issue 10 adds ``enter_many()`` (several namespaces entered from one
  short-lived setns thread; ``enter()`` for one) and keeps the entered
  namespace's fd (``nsfd``), so that event sources reopened after an overflow
  and WireGuard peer queries are made inside it too. Discovery is in
  wgnapid.discovery, the covered set in wgnapid.spaces.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from wgnapid import ifname
from wgnapid.links import Link, NetlinkSource, Rtnl, UdevSource, WireGuardGenl
from wgnapid.sysfs import DEFAULT_ROOT, Opened, Outcome, Result, ThreadedAttr

# How many times a name is corrected through rtnetlink before giving up on one
# access: a link renamed again between the lookup and the open is the only way
# to need a second round; a third is a link being renamed in a loop.
PROOF_ATTEMPTS = 3
VIEW_ATTEMPTS = 3  # check_view: links may change between the dump and the sysfs reads


class VanishedError(OSError):
    """The namespace file now names another namespace (e.g. its PID was reused)."""

    vanished = True


@dataclass(frozen=True, slots=True)
class NsId:
    """Identity of a network namespace: its nsfs file (st_dev, st_ino).

    ``ino`` is what `ip netns identify`, `lsns` and /proc/PID/ns/net show
    ("net:[4026531840]"), and the ``netns`` field in JSON and the journal."""

    dev: int
    ino: int

    @classmethod
    def of(cls, path: str | int = "/proc/self/ns/net") -> "NsId":
        """The namespace of an nsfs path or fd. Raises OSError."""
        st = os.stat(path)
        return cls(st.st_dev, st.st_ino)


# Errors of a WireGuard request that say nothing against its socket (no such
# link, not WireGuard, no wireguard module, the peer list kept changing).
KEEP_WIREGUARD_ON = (errno.ENODEV, errno.EOPNOTSUPP, errno.ENOENT, errno.EINTR)


class NetNamespace:
    """A network namespace as wgnapid sees it.

    ``id``: NsId; ``name``: display name ("self" for the process's own);
    ``rtnl``: request socket created inside this namespace; ``root``: the sysfs
    class/net directory shown in messages; ``dirfd``: that directory, open.
    """

    def __init__(self, nsid: NsId, name: str, rtnl: Rtnl, dirfd: int, root: str = DEFAULT_ROOT,
                 attr: ThreadedAttr | None = None, nsfd: int | None = None):
        self.id = nsid
        self.name = name
        self.rtnl = rtnl
        self.dirfd = dirfd
        self.root = root
        self.attr = attr or ThreadedAttr()
        # An entered namespace (enter_many): its nsfs fd, to make sockets inside
        # it later. None for the process's own.
        self.nsfd = nsfd
        self._wireguard = None  # WireGuardGenl made inside this namespace, on first use
        self._entered = nsfd is not None  # stays True after close(): see in_namespace

    @classmethod
    def current(cls, sysfs_root: str = DEFAULT_ROOT, rtnl: Rtnl | None = None) -> "NetNamespace":
        """The process's own namespace, with ``sysfs_root`` as its sysfs view
        (unproven: see check_view). Raises OSError when the directory cannot be
        opened."""
        dirfd = os.open(sysfs_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return cls(NsId.of(), "self", rtnl or Rtnl(), dirfd, sysfs_root)
        except BaseException:
            os.close(dirfd)
            raise

    def close(self) -> None:
        self.drop_wireguard()
        if self.dirfd >= 0:
            os.close(self.dirfd)
            self.dirfd = -1
        if self.nsfd is not None:
            os.close(self.nsfd)
            self.nsfd = None
        self.rtnl.close()

    # -- other namespaces (issue 10) --------------------------------------------

    @classmethod
    def enter(cls, path: str, name: str) -> "NetNamespace":
        """One namespace by its nsfs file; see enter_many. Raises OSError
        (EnterError for setns/fsmount failures)."""
        (got,) = cls.enter_many([(path, None, name)], source=None)
        if isinstance(got, BaseException):
            raise got
        return got[0]

    @classmethod
    def enter_many(cls, targets: list[tuple[str, "NsId | None", str]], source: str | None
                   ) -> list["tuple[NetNamespace, object] | BaseException"]:
        """Enter namespaces given as (nsfs path, expected NsId or None, name):
        for each, the rtnetlink sockets (and the event source ``source``,
        "netlink" or "udev", unless None) are created inside it, and its sysfs
        view is a detached sysfs mount made inside it (wgnapid.nsenter), all
        from one short-lived setns thread. Returns per target (NetNamespace,
        source) or the exception: FileNotFoundError when the file went away,
        ``VanishedError`` when it is now another namespace (a PID reused),
        nsenter.EnterError (EPERM without CAP_SYS_ADMIN, ENOSYS before 5.2).

        The mount is that namespace's by construction (sysfs takes the
        mounting thread's namespace, KERNEL-FACTS.md), so check_view is not
        needed for it; every access is still proven by ifindex."""
        from wgnapid import nsenter

        opened: list = []
        for path, expected, _name in targets:
            try:
                fd = nsenter.open_ns(path)
            except OSError as exc:
                opened.append(exc)
                continue
            nsid = NsId.of(fd)
            if expected is not None and nsid != expected:
                os.close(fd)
                opened.append(VanishedError(f"{path} is now another namespace"))
                continue
            opened.append((fd, nsid))

        def make(fd, nsid, name):
            def inside():
                rtnl = Rtnl()
                dirfd = -1
                try:
                    dirfd = nsenter.class_net_fd()
                    ns = cls(nsid, name, rtnl, dirfd, root=f"sysfs of netns {name}", nsfd=fd)
                    src = ns._make_source(source) if source else None
                    return ns, src
                except BaseException:
                    rtnl.close()
                    if dirfd >= 0:
                        os.close(dirfd)
                    raise
            return inside

        work = [(o[0], make(o[0], o[1], t[2])) for o, t in zip(opened, targets) if isinstance(o, tuple)]
        done = iter(nsenter.run_in(work))
        out: list = []
        for o in opened:
            if not isinstance(o, tuple):
                out.append(o)
                continue
            got = next(done)
            if isinstance(got, BaseException):
                os.close(o[0])
            out.append(got)
        return out

    def _make_source(self, kind: str):
        return (UdevSource if kind == "udev" else NetlinkSource)(self.rtnl)

    def in_namespace(self, fn):
        """fn() run inside this namespace (a setns thread for an entered one).
        Raises OSError (EBADF) once an entered namespace is closed: never runs
        fn in the daemon's own namespace in its place."""
        if self.nsfd is None:
            if self.released:
                raise OSError(errno.EBADF, f"netns {self.name} {self.id.ino} was released")
            return fn()
        from wgnapid import nsenter

        (got,) = nsenter.run_in([(self.nsfd, fn)])
        if isinstance(got, BaseException):
            raise got
        return got

    def wireguard(self):
        """This namespace's WireGuard requester (wgnapid.links.WireGuardGenl),
        made inside it on first use (a setns thread for an entered namespace)
        and kept until close() or drop_wireguard(). Raises OSError (EnterError
        when the namespace cannot be entered)."""
        if self._wireguard is None:
            self._wireguard = self.in_namespace(WireGuardGenl)
        return self._wireguard

    @property
    def released(self) -> bool:
        """An entered namespace that was closed (its fds are gone)."""
        return self._entered and self.nsfd is None

    def drop_wireguard(self) -> None:
        """Close the WireGuard requester (after an error; the next use makes a new one)."""
        if self._wireguard is not None:
            self._wireguard.close()
            self._wireguard = None

    def peer_count(self, ifindex: int) -> int | None:
        """WireGuard peers of link ``ifindex`` in this namespace (WG_CMD_GET_DEVICE
        through wireguard()), None when they cannot be asked."""
        try:
            return self.wireguard().peer_count(ifindex)
        except OSError as exc:
            if exc.errno not in KEEP_WIREGUARD_ON:
                self.drop_wireguard()  # the socket itself may be at fault: a new one next time
            return None
        except Exception:  # noqa: BLE001 - pyroute2 missing, a reply it cannot decode
            return None

    def __repr__(self) -> str:
        return f"<NetNamespace {self.name} netns {self.id.ino}>"

    # -- rtnetlink -------------------------------------------------------------

    def dump(self) -> tuple[list[Link], bool]:
        """All links, repeated while the kernel says the dump raced changes:
        (links, consistent). See Rtnl.dump_consistent."""
        return self.rtnl.dump_consistent()

    def get(self, ifindex: int) -> Link | None:
        """The link with this ifindex now, or None when there is none."""
        return self.rtnl.get(ifindex)

    def open_source(self, kind: str):
        """The event source ("netlink" or "udev") of this namespace. Both
        rtnetlink and kernel uevents reach only listeners in the device's own
        namespace (KERNEL-FACTS.md, "Events"), so for an entered namespace the
        socket is made inside it."""
        return self.in_namespace(lambda: self._make_source(kind))

    # -- sysfs -------------------------------------------------------------------

    def supported(self) -> bool:
        """Whether this kernel has the `threaded` attribute (5.12+): look at lo."""
        try:
            os.stat("lo/threaded", dir_fd=self.dirfd)
        except OSError:
            return False
        return True

    def _link_dir(self, name: str) -> int:
        """openat(class/net, name, O_DIRECTORY). Raises OSError, ValueError (a
        name the kernel would refuse never becomes a path)."""
        why = ifname.problem(name)
        if why:
            raise ValueError(why)
        return os.open(ifname.encode(name), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                       dir_fd=self.dirfd)

    @staticmethod
    def _read_attr(dirfd: int, attr: str) -> bytes:
        fd = os.open(attr, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            return os.pread(fd, 64, 0).strip()
        finally:
            os.close(fd)

    def _proven_dir(self, ifindex: int, name: str) -> int | None:
        """The directory of ``name`` if its `ifindex` attribute is ``ifindex``, else None
        (no such directory, another link's, or going away). Raises ValueError
        for a name the kernel would refuse."""
        try:
            dfd = self._link_dir(name)
        except OSError:
            return None
        try:
            if self._read_attr(dfd, "ifindex") == b"%d" % ifindex:
                return dfd
        except OSError:
            pass
        os.close(dfd)
        return None

    def writable(self, ifindex: int, name: str) -> str | None:
        """None when this process may write the `threaded` attribute of the link
        (``ifindex``, last known as ``name``), else why not, in one line. Changes
        nothing (ThreadedAttr.writable); only a proven directory is looked at."""
        try:
            dfd = self._proven_dir(ifindex, name)
        except ValueError as exc:
            return str(exc)
        if dfd is None:
            return f"cannot prove which sysfs directory is ifindex {ifindex}"
        try:
            return self.attr.writable(dfd)
        finally:
            os.close(dfd)

    def open_threaded(self, ifindex: int, name: str, *, write: bool = True
                      ) -> tuple[Opened | Result, Link | None]:
        """Open the `threaded` attribute of the link (this namespace, ``ifindex``),
        proving whose it is. ``name``: the name last known for it.

        The link's directory is opened under class/net by name, its `ifindex`
        attribute compared, and `threaded` opened relative to that directory.
        On a mismatch (renamed; the name now another link's; or not there)
        rtnetlink is asked for the link by ifindex and its current name tried,
        up to PROOF_ATTEMPTS times. Returns (Opened, link): ``link`` is rtnetlink's
        Link when the name was corrected, else None; callers follow its name and
        kind. An unproven link is never opened: Result(GONE) when rtnetlink says
        the ifindex no longer exists, Result(ERROR) with the reason otherwise
        (invalid name, a sysfs view that does not show it, renamed in a loop).
        The returned Opened's fd is the caller's to close (ThreadedAttr.close).
        """
        looked_up: Link | None = None
        for _ in range(PROOF_ATTEMPTS):
            try:
                dfd = self._proven_dir(ifindex, name)
            except ValueError as exc:
                return Result(Outcome.ERROR, detail=str(exc)), looked_up
            if dfd is not None:
                try:
                    return self.attr.open(dfd, name, write=write), looked_up
                finally:
                    os.close(dfd)
            try:
                link = self.rtnl.get(ifindex)
            except OSError as exc:
                return Result(Outcome.ERROR, detail=f"rtnetlink lookup of ifindex {ifindex}: "
                                                    f"{exc.strerror or exc}"), looked_up
            if link is None:
                return Result(Outcome.GONE, detail=f"ifindex {ifindex} no longer exists"), looked_up
            if link.name == name and looked_up is not None:
                # rtnetlink confirms the name, yet the directory of that name is
                # not this ifindex: the sysfs view is not this namespace's.
                return (Result(Outcome.ERROR, detail=(
                    f"{self.root}/{ifname.printable(name)} is missing or not ifindex {ifindex}, although "
                    f"rtnetlink names it so: this sysfs view is not network namespace {self.id.ino}'s")),
                    looked_up)
            looked_up = link
            name = link.name
        return Result(Outcome.ERROR, detail=(
            f"could not prove which sysfs directory is ifindex {ifindex} "
            f"(renamed {PROOF_ATTEMPTS} times while looking)")), looked_up

    # -- the view ----------------------------------------------------------------

    def _contradictions(self, links: list[Link]) -> list[tuple[Link | str, str]]:
        """What the sysfs view says against rtnetlink's ``links``: (the link, or
        the name sysfs shows that rtnetlink did not list, and the line)."""
        found: list[tuple[Link | str, str]] = []
        for link in links:
            shown = ifname.printable(link.name)
            try:
                dfd = self._link_dir(link.name)
            except ValueError as exc:
                found.append((link, f"rtnetlink lists ifindex {link.ifindex} with a name the kernel "
                                    f"refuses ({exc})"))
                continue
            except OSError:
                found.append((link, f"{self.root} has no {shown}, which rtnetlink lists as ifindex "
                                    f"{link.ifindex}"))
                continue
            try:
                index = self._read_attr(dfd, "ifindex")
                if index != b"%d" % link.ifindex:
                    found.append((link, f"{self.root}/{shown} is ifindex {index.decode(errors='replace')}, "
                                        f"rtnetlink's {shown} is ifindex {link.ifindex}"))
                elif link.address:
                    address = self._read_attr(dfd, "address")
                    if address != link.address.hex(":").encode():
                        found.append((link, f"{self.root}/{shown} has address "
                                            f"{address.decode(errors='replace')}, rtnetlink's {shown} "
                                            f"has {link.address.hex(':')}"))
            except OSError as exc:
                found.append((link, f"{self.root}/{shown}: {exc.strerror}"))
            finally:
                os.close(dfd)
        listed = {link.name for link in links}
        try:
            entries = os.listdir(self.dirfd)
        except OSError as exc:
            return found + [("", f"cannot list {self.root}: {exc.strerror}")]
        for entry in entries:
            # Devices are symlinks (or directories); files such as
            # bonding_masters are class attributes.
            try:
                mode = os.stat(entry, dir_fd=self.dirfd, follow_symlinks=False).st_mode
            except OSError:
                continue
            if not (stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):
                continue
            name = ifname.decode(os.fsencode(entry))
            if name not in listed:
                found.append((name, f"{self.root} shows {ifname.printable(name)}, which rtnetlink "
                                    "does not list"))
        return found

    def check_view(self) -> str | None:
        """None when the sysfs view shows this namespace's links, else one line
        saying what is wrong.

        /sys shows the namespace of whoever mounted it (KERNEL-FACTS.md): after a
        setns() without a remount (nsenter --net), rtnetlink answers for one
        namespace and sysfs for another, and names may coincide (every namespace
        has lo, ifindex 1). So names are not proof: every link must be there with
        the same ifindex and hardware address, and sysfs must show no link that
        rtnetlink does not list. Links that change while this looks (churn on a
        busy host) prove nothing either way: a contradiction counts only about a
        link that rtnetlink lists identically before and after the sysfs reads
        (or a name it lists at neither time), so churn cannot fail a correct
        view. VIEW_ATTEMPTS tries. (Two namespaces holding nothing but lo look
        alike; there is nothing to write then, and every later access is proven
        by ifindex.) A failed dump is a problem line too; raises nothing."""
        problem = None
        for _ in range(VIEW_ATTEMPTS):
            try:
                before, _ = self.dump()
                found = self._contradictions(before)
                if not found:
                    return None
                after, _ = self.dump()
            except OSError as exc:
                return f"rtnetlink link dump failed: {exc.strerror or exc}"
            unchanged = set(before) & set(after)
            names = {link.name for link in before} | {link.name for link in after}
            for what, line in found:
                if (what in unchanged) if isinstance(what, Link) else (what not in names):
                    problem = line
                    break
            else:
                continue  # only churn: look again
            return problem
        return problem

    def problem_line(self, problem: str) -> str:
        """The one line every command prints for a foreign sysfs view."""
        return (f"{self.root} does not show this network namespace's links (netns "
                f"{self.id.ino}): {problem}; mount sysfs in this namespace (as `ip netns exec` "
                "does) before running wgnapid")
