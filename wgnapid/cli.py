"""The command line: run, apply, status, check-config, doctor."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from wgnapid import __version__, config, kernel
from wgnapid.log import JOURNAL_SOCKET, LEVELS, Log, journal_available

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
CAP_NET_ADMIN = 12


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wgnapid",
        description="Give WireGuard links threaded NAPI and keep it that way.",
    )
    p.add_argument("--version", action="version", version=f"wgnapid {__version__}")
    p.add_argument("--config", metavar="FILE",
                   help=f"policy file instead of {config.DEFAULT_PATH} (conf.d is then not read)")
    p.add_argument("--log-target", choices=["auto", "journal", "stderr"], default="auto")
    p.add_argument("--log-level", choices=list(LEVELS), help="overrides daemon.log_level")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("run", help="run the daemon in the foreground")
    a = sub.add_parser("apply", help="reconcile the links that exist now, once, then exit")
    a.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    s = sub.add_parser("status", help="each link, what is wanted and what it has")
    s.add_argument("--json", action="store_true")
    c = sub.add_parser("check-config", help="validate a policy file (exit 0 when valid)")
    c.add_argument("file", nargs="?", help="the file to check (default: the policy in use)")
    d = sub.add_parser("doctor", help="can wgnapid do its job here?")
    d.add_argument("--json", action="store_true")
    return p


def _fail(message: str) -> int:
    print(f"wgnapid: {message}", file=sys.stderr)
    return EXIT_FAIL


def has_cap_net_admin() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return False


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


def cmd_check_config(args) -> int:
    try:
        if args.file:
            config.read_file(args.file)
            files = [args.file]
        else:
            files = list(config.load(args.config).files)
    except config.ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_FAIL
    print(f"policy OK: {', '.join(files)}")
    return EXIT_OK


def cmd_run(args, policy: config.Policy) -> int:
    from wgnapid.daemon import Daemon

    log = Log(args.log_target, args.log_level or policy.daemon.log_level)
    return Daemon(policy, args.config, log).run()


def _one_pass(policy: config.Policy, log: Log, dry_run: bool):
    from wgnapid.reconciler import Reconciler

    rec = Reconciler(policy, log, dry_run=dry_run, one_shot=True)
    states = [rec.observe(link) for link in _list_links()]
    return rec, states


def _list_links():
    from wgnapid.links import Rtnl

    rtnl = Rtnl()
    try:
        return rtnl.dump_consistent()[0]
    finally:
        rtnl.close()


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
            "name": st.name, "ifindex": st.ifindex, "kind": st.kind, "rule": st.rule,
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
            line = f"{row['name']:<16} {row['state']:<9} {verb}"
            if row["reason"]:
                line += f" ({row['reason']})"
            print(line)
        print(", ".join(f"{n} {s}" for s, n in sorted(summary.items())) or "no matched links")
    return EXIT_OK if ok else EXIT_FAIL


def _daemon_status() -> dict | None:
    from wgnapid.daemon import status_path

    try:
        with open(status_path()) as f:
            doc = json.load(f)
        os.kill(int(doc["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return doc


def status_document(policy: config.Policy) -> dict:
    """What the kernel says now, with the running daemon's view of each link."""
    from wgnapid.sysfs import NapiThreads

    verdict = kernel.running_verdict()
    rec, states = _one_pass(policy, Log("stderr", "error"), dry_run=True)
    daemon = _daemon_status()
    known = {(l["ifindex"], l["name"]): l for l in daemon["links"]} if daemon else {}
    threads = NapiThreads()
    links, summary = [], {}
    for st in states:
        row = st.as_dict()
        seen = known.get((st.ifindex, st.name))
        if seen and row["state"] == "pending":
            # The daemon knows why it differs (waiting for a peer, failed).
            row["state"], row["reason"] = seen["state"], seen["reason"]
        if daemon and daemon.get("kernel_native") and st.kind == "wireguard" and st.wanted == "on":
            row["state"] = "native"
        row["napi_threads"] = threads.count(st.name)
        links.append(row)
        summary[row["state"]] = summary.get(row["state"], 0) + 1
    return {
        "version": __version__,
        "kernel": _kernel_doc(policy.daemon.kernel_guard, verdict,
                              daemon.get("kernel_native") if daemon else None),
        "daemon": None if daemon is None else {
            k: daemon.get(k) for k in ("pid", "since", "source", "policy_files", "stats")
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
    return (f"{p.get('interface')} (ifindex {p.get('ifindex')}) peer {p.get('public_key')}: "
            f"receive side stalled (CVE-2026-52945): {p.get('tx_bytes')} bytes sent, "
            f"{p.get('rx_bytes')} bytes of handshakes received in {p.get('seconds')} s")


def _kernel_doc(guard: str | None, verdict: kernel.Verdict, native: bool | None) -> dict:
    return {
        "release": verdict.release,
        "version": verdict.version_text,
        "guard": guard,
        "verdict": verdict.verdict,
        "reason": verdict.reason,
        "native": native,
    }


def cmd_status(args, policy: config.Policy) -> int:
    doc = status_document(policy)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
        return EXIT_OK
    k = doc["kernel"]
    print(f"kernel {k['release']}: {k['verdict']} (guard {k['guard']}){', native' if k['native'] else ''}")
    d = doc["daemon"]
    print(f"daemon: pid {d['pid']}, source {d['source']}" if d else "daemon: not running")
    print(f"{'LINK':<16} {'IFINDEX':>7} {'KIND':<10} {'RULE':<12} {'WANT':<6} {'NOW':<3} {'NAPI':>4}  STATE")
    for row in doc["links"]:
        if row["rule"] is None:
            continue
        now = "-" if row["current"] is None else str(row["current"])
        line = (f"{row['name']:<16} {row['ifindex']:>7} {row['kind'] or '-':<10} {row['rule']:<12} "
                f"{row['wanted']:<6} {now:<3} {row['napi_threads']:>4}  {row['state']}")
        if row["reason"]:
            line += f" ({row['reason']})"
        print(line)
    print(", ".join(f"{n} {s}" for s, n in sorted(doc["summary"].items())))
    for p in doc["stalled_peers"]:
        print(f"STALLED: {_stalled_line(p)}")
    return EXIT_OK


def _journald_reachable() -> bool:
    if not journal_available():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(JOURNAL_SOCKET)
        return True
    except OSError:
        return False


def cmd_doctor(args) -> int:
    from wgnapid.sysfs import ThreadedAttr

    problems: list[str] = []
    try:
        policy = config.load(args.config)
        files = list(policy.files)
    except config.ConfigError as exc:
        problems.extend(exc.lines)
        policy, files = None, []
    verdict = kernel.running_verdict()
    sysfs = ThreadedAttr()
    attr = sysfs.supported()
    if not attr:
        problems.append("this kernel has no /sys/class/net/*/threaded attribute (needs 5.12+)")
    view_ok = attr and sysfs.shows([link.name for link in _list_links()])
    if attr and not view_ok:
        problems.append(f"{sysfs.root} shows another network namespace's links (remount sysfs here)")
    privilege_problem = _need_privileges()
    if privilege_problem:
        problems.append(privilege_problem)
    doc_links: dict[str, int] = {}
    native = None
    if policy is not None and not privilege_problem and view_ok:
        status = status_document(policy)
        doc_links = status["summary"]
        native = status["kernel"]["native"]
        if doc_links.get("failed"):
            problems.append(f"{doc_links['failed']} link(s) failed; see `wgnapid status`")
    stalled = stalled_peers(_daemon_status())
    for p in stalled:
        problems.append(f"{_stalled_line(p)}; see README, 'A stalled peer'")
    guard = policy.daemon.kernel_guard if policy else None
    doc = {
        "version": __version__,
        "kernel": _kernel_doc(guard, verdict, native),
        "threaded_attribute": attr,
        "journald": _journald_reachable(),
        "policy_files": files,
        "privileges": {"root": os.geteuid() == 0, "cap_net_admin": has_cap_net_admin()},
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
        print(f"native:     {'yes' if native else 'no' if native is False else 'unknown (no daemon running)'}")
        print(f"threaded:   {'attribute present' if attr else 'attribute MISSING'}")
        print(f"journald:   {'reachable' if doc['journald'] else 'not reachable (logging goes to stderr)'}")
        print(f"policy:     {', '.join(files) or 'INVALID'}")
        print(f"privileges: root={doc['privileges']['root']} cap_net_admin={doc['privileges']['cap_net_admin']}")
        print(f"links:      {', '.join(f'{n} {s}' for s, n in sorted(doc_links.items())) or 'none'}")
        for p in problems:
            print(f"PROBLEM:    {p}")
        print("ok" if doc["ok"] else "not ok")
    return EXIT_OK if doc["ok"] else EXIT_FAIL


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `wgnapid status | head`: the reader left; no traceback, and none at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return cmd_check_config(args)
    if args.command == "doctor":
        return cmd_doctor(args)
    problem = _need_privileges()
    if problem:
        return _fail(problem)
    try:
        policy = config.load(args.config)
    except config.ConfigError as exc:
        for line in exc.lines:
            print(f"wgnapid: {line}", file=sys.stderr)
        return EXIT_FAIL
    try:
        if args.command == "run":
            return cmd_run(args, policy)
        if args.command == "apply":
            return cmd_apply(args, policy)
        return cmd_status(args, policy)
    except RuntimeError as exc:  # e.g. --log-target journal without journald
        return _fail(str(exc))
    except KeyboardInterrupt:
        return EXIT_FAIL
