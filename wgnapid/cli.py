"""The command line: run, apply, status, check-config, doctor, reload."""

from __future__ import annotations

import argparse
import json
import os
import sys

from wgnapid import DROP_INS, __version__, accel, config, ifname, kernel
from wgnapid.log import JOURNAL_SOCKET, LEVELS, Log, journald_reachable

# EX_CONFIG (sysexits.h): the unit's RestartPreventExitStatus=78 stops systemd
# from restarting a daemon whose policy is broken.
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 78
CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_ADMIN = 12, 19, 21


def _global_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every command takes, before or after the command name
    (`wgnapid --config F run` and `wgnapid run --config F`). On the
    sub-parsers they default to SUPPRESS, so they override only when given."""
    d = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    p.add_argument("--config", metavar="FILE", default=d(None),
                   help=f"policy file instead of {config.DEFAULT_PATH} (conf.d is then not read)")
    p.add_argument("--log-target", choices=["auto", "journal", "stderr"], default=d("auto"),
                   help="auto: journald when it accepts a connection, else stderr")
    p.add_argument("--log-level", choices=list(LEVELS), default=d(None), help="overrides daemon.log_level")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wgnapid",
        description="Give WireGuard links threaded NAPI and keep it that way.",
    )
    p.add_argument("--version", action="version", version=f"wgnapid {__version__}")
    _global_options(p, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    r = add("run", help="run the daemon in the foreground")
    r.add_argument("--watch-policy", action="store_true",
                   help="reload when the policy files change, checked at every resync (so within "
                        "resync_interval seconds): for a policy mounted from a Kubernetes ConfigMap")
    r = add("reload", help="validate the policy, have the running daemon reload it, wait for its answer")
    r.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for the daemon's answer (default 60)")
    a = add("apply", help="reconcile the links that exist now, once, then exit")
    a.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    s = add("status", help="each link, what is wanted and what it has")
    s.add_argument("--json", action="store_true")
    s.add_argument("--watch", action="store_true",
                   help="refresh every --interval seconds with each NAPI thread's CPU use (Ctrl-C ends)")
    s.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="with --watch: seconds between refreshes (default 1)")
    s.add_argument("--count", type=int, metavar="N", help="with --watch: stop after N refreshes")
    s.add_argument("--ready", action="store_true",
                   help="only: has a daemon in this network namespace finished its first reconcile? "
                        "(exit 0 if so, 1 if not; a readiness probe)")
    c = add("check-config", help="validate a policy file (exit 0 when valid)")
    c.add_argument("file", nargs="?", help="the file to check (default: the policy in use)")
    d = add("doctor", help="can wgnapid do its job here?")
    d.add_argument("--json", action="store_true")
    return p


def _fail(message: str) -> int:
    print(f"wgnapid: {message}", file=sys.stderr)
    return EXIT_FAIL


def has_cap(cap: int) -> bool:
    """Whether capability number ``cap`` is in the effective set (/proc/self/status CapEff)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except OSError:
        pass
    return False


def has_cap_net_admin() -> bool:
    return has_cap(CAP_NET_ADMIN)


def _need_namespace_privileges(policy: config.Policy | None) -> str | None:
    """namespaces = "all" needs CAP_SYS_ADMIN (setns into each namespace, and a
    sysfs instance of each: fsopen/fsmount) and CAP_SYS_PTRACE (reading
    /proc/PID/ns/net of processes holding capabilities we lack is a ptrace-read
    check); one line naming what is missing, or None."""
    if policy is None or policy.daemon.namespaces != "all":
        return None
    missing = [name for cap, name in ((CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"))
               if not has_cap(cap)]
    if not missing:
        return None
    return (f'daemon.namespaces = "all" needs CAP_SYS_ADMIN (to enter each network namespace and '
            f"mount its sysfs) and CAP_SYS_PTRACE (to see every process's namespace); missing: "
            f"{', '.join(missing)} (the unit needs the drop-in namespaces-all.conf: {DROP_INS})")


def _need_privileges() -> str | None:
    if os.geteuid() != 0:
        return (
            "must run as root: writing /sys/class/net/*/threaded needs CAP_NET_ADMIN "
            "and write access to root-owned sysfs files"
        )
    if not has_cap_net_admin():
        return "CAP_NET_ADMIN is missing from the effective capabilities"
    return None


# -- commands -------------------------------------------------------------------


def _print_warnings(policy: config.Policy) -> None:
    for line in policy.warnings:
        print(f"warning: {line}", file=sys.stderr)


def cmd_check_config(args) -> int:
    # The same load() as every other command: a file given here is checked
    # exactly as `wgnapid --config FILE run` would check it.
    try:
        policy = config.load(args.file or args.config)
    except config.ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    _print_warnings(policy)
    print(f"policy OK: {', '.join(policy.files)}")
    return EXIT_OK


def cmd_reload(args, policy: config.Policy) -> int:
    """ExecReload=: the policy was validated by the caller; now SIGHUP the daemon
    and wait until its status document shows that reload's result."""
    from wgnapid.reload import request_reload

    ok, message = request_reload(timeout=args.timeout)
    print(message, file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_FAIL


def cmd_run(args, policy: config.Policy, early: list[int]) -> int:
    from wgnapid.daemon import Daemon

    log = Log(args.log_target, args.log_level or policy.daemon.log_level)
    for line in policy.warnings:
        log.warning("config-warning", line)
    try:
        daemon = Daemon(policy, args.config, log, watch_policy=args.watch_policy)
    except OSError as exc:  # no sysfs, no netlink: one line
        return _fail(f"cannot watch this network namespace: {exc.filename or ''}"
                     f"{': ' if exc.filename else ''}{exc.strerror or exc}")
    return daemon.run(early=early)


def _one_pass(policy: config.Policy, log: Log, dry_run: bool):
    """One reconcile of this namespace's links, and with namespaces = "all" of
    every namespace a rule covers (wgnapid.spaces.enter_covered). Returns (the
    own namespace's Reconciler, every LinkState). Raises RuntimeError (one line)
    when the sysfs view is not this namespace's own: nothing is read or written then."""
    from wgnapid.netns import NetNamespace
    from wgnapid.reconciler import Reconciler
    from wgnapid.spaces import enter_covered

    try:
        ns = NetNamespace.current()
    except OSError as exc:
        raise RuntimeError(f"cannot watch this network namespace: {exc.filename or ''}"
                           f"{': ' if exc.filename else ''}{exc.strerror or exc}") from None
    spaces = [ns]
    try:
        problem = ns.check_view()
        if problem:
            raise RuntimeError(ns.problem_line(problem))
        if policy.daemon.namespaces == "all":
            spaces += enter_covered(policy)
        states, own = [], None
        for space in spaces:
            rec = Reconciler(policy, log, space, dry_run=dry_run, one_shot=True)
            own = own or rec
            try:
                states += [rec.observe(link) for link in space.dump()[0]]
            finally:
                rec.close()
    finally:
        for space in spaces:
            space.close()
    return own, states


def _shown(row: dict) -> str:
    """A JSON row's link name as text for the terminal (escaped, wgnapid.ifname)."""
    return ifname.printable(bytes.fromhex(row["name_hex"]))


def cmd_apply(args, policy: config.Policy) -> int:
    from wgnapid.reconciler import SATISFIED

    log = Log(args.log_target, args.log_level or policy.daemon.log_level)
    _rec, states = _one_pass(policy, log, args.dry_run)
    rows = []
    ok = True
    for st in states:
        if st.rule is None:
            continue  # unmatched links are not wgnapid's business
        if st.state not in SATISFIED and not (args.dry_run and st.state == "pending"):
            ok = False
        rows.append({
            **ifname.json_fields(st.name), "netns": st.netns, "netns_name": st.netns_name,
            "ifindex": st.ifindex,
            "kind": st.kind, "rule": st.rule,
            "wanted": st.wanted, "before": st.before, "after": st.current,
            "changed": st.changed, "state": st.state, "reason": st.reason,
        })
    summary: dict[str, int] = {}
    for row in rows:
        summary[row["state"]] = summary.get(row["state"], 0) + 1
    if args.json:
        json.dump({"dry_run": args.dry_run, "links": rows, "summary": summary}, sys.stdout, indent=2)
        print()
    else:
        for row in rows:
            verb = "would change" if row["state"] == "pending" else ("changed" if row["changed"] else "ok")
            line = f"{_shown(row):<16} {row['state']:<9} {verb}"
            if policy.daemon.namespaces == "all":
                line = f"{_netns_text(row):<28} {line}"
            if row["reason"]:
                line += f" ({row['reason']})"
            print(line)
        print(", ".join(f"{n} {s}" for s, n in sorted(summary.items())) or "no matched links")
    return EXIT_OK if ok else EXIT_FAIL


def _daemon_status(netns: int) -> dict | None:
    """The published view of a live daemon covering network namespace ``netns``
    (nsfs inode), or None. Daemons of other namespaces are never merged."""
    from wgnapid.status import status_documents

    for doc in status_documents():
        if netns in (doc.get("covers") or [doc.get("netns")]):
            return doc
    return None


def cmd_ready(args) -> int:
    """`status --ready`: the daemon publishes its status file after its first
    reconcile (just before READY=1), so a file whose daemon is alive means ready."""
    from wgnapid.netns import NsId

    daemon = _daemon_status(NsId.of().ino)
    if daemon is None:
        print("not ready: no wgnapid daemon has finished its first reconcile here", file=sys.stderr)
        return EXIT_FAIL
    summary = ", ".join(f"{n} {s}" for s, n in sorted((daemon.get("summary") or {}).items()))
    print(f"ready: daemon pid {daemon['pid']}, {summary or 'no matched links'}")
    return EXIT_OK


def status_document(policy: config.Policy) -> dict:
    """What the kernel says now, with the running daemon's view of each link."""
    from wgnapid.napithreads import NapiThreads

    verdict = kernel.running_verdict()
    rec, states = _one_pass(policy, Log("stderr", "error"), dry_run=True)
    daemon = _daemon_status(rec.netns)
    # A link is (netns, ifindex); the name must agree too, or the daemon's row is
    # of the link before a rename it has not seen yet.
    known = {(l.get("netns"), l["ifindex"], l.get("name_hex")): l
             for l in daemon["links"]} if daemon else {}
    threads = NapiThreads()
    names = threads.known(st.name for st in states)
    mitigating = kernel.native_handling(policy.daemon.kernel_guard, verdict) == kernel.MITIGATE
    links, summary = [], {}
    for st in states:
        row = st.as_dict()
        seen = known.get((st.netns, st.ifindex, row["name_hex"]))
        if seen and row["state"] == "pending":
            # The daemon knows why it differs (waiting for a peer, failed).
            row["state"], row["reason"] = seen["state"], seen["reason"]
        if (daemon and daemon.get("kernel_native") and st.kind == "wireguard"
                and st.wanted == "on" and not mitigating):
            # The daemon saw the kernel thread WireGuard itself; a link the guard
            # turns back off (kernel.MITIGATE) keeps its "held".
            row["state"] = "native"
        lt = threads.of(st.name, names)
        # None ("unknown") where kernel threads are invisible (own PID namespace).
        row["napi_threads"] = len(lt.threads) if threads.visible else None
        row["threads"] = lt.as_list()
        row["threads_ambiguous"] = lt.ambiguous
        if seen and "placement" in seen:
            row["placement"] = seen["placement"]
        links.append(row)
        summary[row["state"]] = summary.get(row["state"], 0) + 1
    return {
        "version": __version__,
        "kernel": _kernel_doc(policy.daemon.kernel_guard, verdict,
                              daemon.get("kernel_native") if daemon else None),
        "netns": rec.netns,
        "daemon": None if daemon is None else {
            k: daemon.get(k) for k in ("pid", "since", "source", "policy_files", "stats", "netns", "covers")
        },
        "links": links,
        "summary": summary,
        "stalled_peers": stalled_peers(daemon),
    }


def stalled_peers(daemon: dict | None) -> list[dict]:
    """The running daemon's stalled WireGuard peers (wgnapid.stallwatch), [] without one."""
    peers = (daemon or {}).get("stalled_peers") or []
    return [p for p in peers if isinstance(p, dict)]


def _stalled_line(p: dict) -> str:
    where = (f", netns {p.get('netns_name')} {p.get('netns')}"
             if p.get("netns_name") not in (None, "self") else "")
    return (f"{p.get('interface')} (ifindex {p.get('ifindex')}{where}) peer {p.get('public_key')}: "
            f"receive side stalled (CVE-2026-52945): {p.get('tx_bytes')} bytes sent, "
            f"{p.get('rx_bytes')} bytes of handshakes received in {p.get('seconds')} s")


def _kernel_doc(guard: str | None, verdict: kernel.Verdict, native: bool | None) -> dict:
    """The "kernel" object of status and doctor: the guard's verdict beside native.

    ``native``: the running daemon saw the kernel thread WireGuard itself (None:
    no daemon). ``creation_default``: the release says it does (kernel.py).
    ``native_handling``: what the guard does with such links ("verify",
    "mitigate": turned back off, "leave": left on although risky).
    """
    return {
        "release": verdict.release,
        "version": verdict.version_text,
        "sublevel_known": verdict.sublevel_known,
        "guard": guard,
        "verdict": verdict.verdict,
        "reason": verdict.reason,
        "native": native,
        "creation_default": verdict.creation_default,
        "native_handling": kernel.native_handling(guard, verdict) if guard else None,
    }


def kernel_native_text(k: dict) -> str:
    """One line on native threading with the guard's verdict beside it (status, doctor)."""
    by_release = k["creation_default"]
    if k["native"]:
        seen = "yes (seen: the kernel threads WireGuard links itself)"
    elif k["native"] is False:
        seen = "not seen"
    else:
        seen = "unknown (no daemon running)"
    if by_release and not k["native"]:
        seen += f"; by its release ({k['version']}) the kernel threads them itself"
    if not (k["native"] or by_release):
        return seen
    handling = k["native_handling"]
    if handling == kernel.MITIGATE:
        return (f"{seen} - guard verdict {k['verdict'].upper()} ({kernel.CVE}): "
                "kernel_guard strict turns it back off (WireGuard links held)")
    if handling == kernel.LEAVE:
        return (f"{seen} - guard verdict {k['verdict'].upper()} ({kernel.CVE}): "
                "left on by kernel_guard warn")
    return f"{seen} - guard verdict {k['verdict']}" + (
        f" ({kernel.CVE}, kernel_guard off)" if k["verdict"] != "safe" else "")


def _netns_text(row: dict) -> str:
    """A link's namespace for text output: its name and nsfs inode."""
    return f"{row['netns_name']} ({row['netns']})"


def cmd_status(args, policy: config.Policy) -> int:
    if args.watch:
        from wgnapid.watch import watch

        return watch(lambda: status_document(policy), args.interval, args.count, args.json)
    doc = status_document(policy)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
        return EXIT_OK
    k = doc["kernel"]
    print(f"kernel {k['release']}: {k['verdict']} (guard {k['guard']})")
    print(f"native: {kernel_native_text(k)}")
    d = doc["daemon"]
    print(f"daemon: pid {d['pid']}, source {d['source']}" if d else "daemon: not running")
    every = policy.daemon.namespaces == "all"
    print(("{:<28} ".format("NETNS") if every else "")
          + f"{'LINK':<16} {'IFINDEX':>7} {'KIND':<10} {'RULE':<12} {'WANT':<6} {'NOW':<3} {'NAPI':>4}  STATE")
    for row in doc["links"]:
        if row["rule"] is None:
            continue
        now = "-" if row["current"] is None else str(row["current"])
        line = (f"{_shown(row):<16} {row['ifindex']:>7} {row['kind'] or '-':<10} {row['rule']:<12} "
                f"{row['wanted']:<6} {now:<3} {_napi(row['napi_threads']):>4}  {row['state']}")
        if row["reason"]:
            line += f" ({row['reason']})"
        print(f"{_netns_text(row):<28} {line}" if every else line)
        print_threads(row)
    print(", ".join(f"{n} {s}" for s, n in sorted(doc["summary"].items())))
    for p in doc["stalled_peers"]:
        print(f"STALLED: {_stalled_line(p)}")
    if any(row["napi_threads"] is None for row in doc["links"]):
        print("NAPI ?: kernel threads are not visible here (a PID namespace of its own)")
    return EXIT_OK


def _napi(count: int | None) -> str:
    return "?" if count is None else str(count)


def print_threads(row: dict, usage: dict[int, float] | None = None) -> None:
    """A link's NAPI threads under its status line; ``usage``: {pid: CPU %} (--watch)."""
    p = row.get("placement")
    if p:
        want = ", ".join(x for x in (p["cpus"] and f"cpus {p['cpus']}", p["sched"] and f"sched {p['sched']}") if x)
        print(f"    placement: {want}: {p['state']}" + (f" ({p['reason']})" if p["reason"] else ""))
    if row.get("threads_ambiguous"):
        print(f"    AMBIGUOUS: {row['threads_ambiguous']}")
    for t in row.get("threads", []):
        sched = t["policy"] + (f":{t['priority']}" if t["policy"] in ("fifo", "rr") else f" nice {t['nice']}")
        use = f" {usage.get(t['pid'], 0.0):5.1f}%" if usage is not None else ""
        name = t["name"].encode(errors="surrogateescape").decode(errors="replace")  # printable
        print(f"    {name:<20} pid {t['pid']:>7}  cpu {t['cpu']:>3}  {t['cpu_seconds']:>9.2f} s{use}  "
              f"{sched:<14} cpus {t['cpus']}")


def cmd_doctor(args) -> int:
    from wgnapid.netns import NetNamespace

    problems: list[str] = []
    warnings: list[str] = []
    try:
        policy = config.load(args.config)
        files = list(policy.files)
        warnings = list(policy.warnings)
    except config.ConfigError as exc:
        problems.extend(exc.lines)
        policy, files = None, []
    verdict = kernel.running_verdict()
    netns = None
    try:
        ns = NetNamespace.current()
        netns = ns.id.ino
    except OSError as exc:
        ns, attr, view_ok = None, False, False
        problems.append(f"cannot open /sys/class/net: {exc.strerror}")
    if ns is not None:
        try:
            attr = ns.supported()
            if not attr:
                problems.append("this kernel has no /sys/class/net/*/threaded attribute (needs 5.12+)")
            view_problem = ns.check_view()
            view_ok = view_problem is None
            if view_problem:
                problems.append(ns.problem_line(view_problem))
        finally:
            ns.close()
    privilege_problem = _need_privileges() or _need_namespace_privileges(policy)
    if privilege_problem:
        problems.append(privilege_problem)
    doc_links: dict[str, int] = {}
    native = None
    writable: dict[str, str | None] = {}
    namespaces = None
    if policy is not None and not privilege_problem and view_ok and attr:
        try:
            status = status_document(policy)
        except RuntimeError as exc:  # a namespace that cannot be entered (namespaces = "all")
            problems.append(str(exc))
            status = None
        if status is not None:
            doc_links = status["summary"]
            native = status["kernel"]["native"]
            namespaces = len({row["netns"] for row in status["links"]})
            if doc_links.get("failed"):
                problems.append(f"{doc_links['failed']} link(s) failed; see `wgnapid status`")
            # What `run` will need: write access to the attribute of every link the
            # policy sets here (lo stands for every virtual link), tested without
            # writing; lo is ifindex 1 in every network namespace. (Other
            # namespaces get a sysfs instance of their own, writable by design.)
            targets = {1: "lo"} | {l["ifindex"]: ifname.decode(bytes.fromhex(l["name_hex"]))
                                   for l in status["links"]
                                   if l["wanted"] in ("on", "off") and l["netns"] == netns}
            wns = NetNamespace.current()
            try:
                for index, name in targets.items():
                    why = wns.writable(index, name)
                    writable[ifname.printable(name)] = why
                    if why:
                        problems.append(f"{ifname.printable(name)}: cannot write threaded: {why}")
            finally:
                wns.close()
    journald_problem = journald_reachable()
    if journald_problem and os.path.exists(JOURNAL_SOCKET):
        # A socket file nobody answers: journald crashed or was stopped (no
        # socket file at all is a host without journald, and not a fault).
        problems.append(f"journald is not reachable ({journald_problem}): logs go to stderr")
    stalled = stalled_peers(_daemon_status(netns) if netns is not None else None)
    for p in stalled:
        problems.append(f"{_stalled_line(p)}; see README, 'A stalled peer'")
    guard = policy.daemon.kernel_guard if policy else None
    doc = {
        "version": __version__,
        "kernel": _kernel_doc(guard, verdict, native),
        "threaded_attribute": attr,
        "netns": netns,
        "sysfs_view": view_ok,  # /sys/class/net shows this network namespace's links
        "sysfs_writable": {name: why is None for name, why in writable.items()},
        "journald": journald_problem is None,
        "journald_problem": journald_problem,
        "hotpath": accel.hotpath is not None,  # the per-link loops compiled (wgnapid/accel.py)
        "warnings": warnings,
        "policy_files": files,
        "privileges": {"root": os.geteuid() == 0, "cap_net_admin": has_cap_net_admin(),
                       "cap_sys_admin": has_cap(CAP_SYS_ADMIN), "cap_sys_ptrace": has_cap(CAP_SYS_PTRACE)},
        "namespaces": policy.daemon.namespaces if policy else None,
        "namespaces_seen": namespaces,  # how many namespaces' links were read
        "links": doc_links,
        "stalled_peers": stalled,
        "problems": problems,
        "ok": not problems,
    }
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        k = doc["kernel"]
        held = kernel.guard_holds(guard, verdict, "wireguard")
        print(f"kernel:     {k['release']} ({k['version'] or 'unparsed'}): {k['verdict']} - {k['reason']}")
        if held:
            print(f"            guard strict: WireGuard links are held; opt in with {kernel.OPT_IN_LINE}")
        print(f"native:     {kernel_native_text(k)}")
        print(f"threaded:   {'attribute present' if attr else 'attribute MISSING'}")
        print(f"sysfs:      {'shows' if view_ok else 'does NOT show'} this network namespace's links"
              f" (netns {netns})")
        if writable:
            ro = [n for n, why in writable.items() if why]
            print(f"writable:   {'yes' if not ro else 'NO for ' + ', '.join(ro)}")
        print(f"journald:   {'reachable' if doc['journald'] else f'not reachable ({journald_problem}): logging goes to stderr'}")
        print(f"hot path:   {accel.describe()}")
        print(f"policy:     {', '.join(files) or 'INVALID'}")
        for w in warnings:
            print(f"WARNING:    {w}")
        priv = doc["privileges"]
        print(f"privileges: root={priv['root']} cap_net_admin={priv['cap_net_admin']}"
              + (f" cap_sys_admin={priv['cap_sys_admin']} cap_sys_ptrace={priv['cap_sys_ptrace']}"
                 if doc["namespaces"] == "all" else ""))
        print(f"namespaces: {doc['namespaces'] or '-'}"
              + (f" ({namespaces} with links read)" if namespaces is not None else ""))
        print(f"links:      {', '.join(f'{n} {s}' for s, n in sorted(doc_links.items())) or 'none'}")
        for p in problems:
            print(f"PROBLEM:    {p}")
        print("ok" if doc["ok"] else "not ok")
    return EXIT_OK if doc["ok"] else EXIT_FAIL


def main(argv: list[str] | None = None, early: list[int] | None = None) -> int:
    """The `wgnapid` command. ``early``: signals recorded by wgnapid.entry before
    this module was imported (the console script's path)."""
    try:
        return _main(argv, early if early is not None else [])
    except BrokenPipeError:
        # `wgnapid status | head`: the reader left; no traceback, and none at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL


def _config_error(args, exc: config.ConfigError) -> int:
    """A broken policy at start: each line at error priority with a MESSAGE_ID
    (journald when reachable, per --log-target), exit EX_CONFIG."""
    try:
        log = Log(args.log_target, "error")
    except RuntimeError:
        log = Log("stderr", "error")
    for line in exc.lines:
        log.error("config-invalid", line)
    if log.target == "journal" and not _stderr_is_journal():
        # A person who ran it by hand sees why too (under systemd, stderr is the
        # journal already: $JOURNAL_STREAM, systemd.exec(5)).
        for line in exc.lines:
            print(f"wgnapid: {line}", file=sys.stderr)
    return EXIT_CONFIG


def _stderr_is_journal() -> bool:
    """Whether stderr is journald's stream (systemd sets $JOURNAL_STREAM to its
    "device:inode" for a service's stdout/stderr)."""
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"


def _main(argv: list[str] | None, early: list[int]) -> int:
    args = _parser().parse_args(argv)
    if args.command != "run":
        from wgnapid.entry import restore_default_handlers

        stop = restore_default_handlers()
        if stop is not None:
            return 128 + stop
    if args.command == "check-config":
        return cmd_check_config(args)
    if args.command == "doctor":
        return cmd_doctor(args)
    if args.command == "status" and args.ready:
        return cmd_ready(args)
    if args.command == "reload":
        # Validate first, exactly as the daemon will: a broken policy is refused
        # here, so `systemctl reload` fails and the daemon is not even asked.
        try:
            policy = config.load(args.config)
        except config.ConfigError as exc:
            for line in exc.lines:
                print(f"wgnapid: {line}", file=sys.stderr)
            return EXIT_CONFIG
        _print_warnings(policy)
        return cmd_reload(args, policy)
    problem = _need_privileges()
    if problem:
        return _fail(problem)
    try:
        policy = config.load(args.config)
    except config.ConfigError as exc:
        if args.command == "run":
            return _config_error(args, exc)
        for line in exc.lines:
            print(f"wgnapid: {line}", file=sys.stderr)
        return EXIT_CONFIG
    problem = _need_namespace_privileges(policy)
    if problem:
        return _fail(problem)
    try:
        if args.command == "run":
            return cmd_run(args, policy, early)
        _print_warnings(policy)
        if args.command == "apply":
            return cmd_apply(args, policy)
        return cmd_status(args, policy)
    except RuntimeError as exc:  # e.g. --log-target journal without journald
        return _fail(str(exc))
    except KeyboardInterrupt:
        return EXIT_FAIL
