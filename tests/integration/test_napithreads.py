"""NAPI threads per link, their placement (rules' cpus/sched) and the metrics file,
against the host kernel (issue 15).

Thread names carry no namespace (KERNEL-FACTS.md, "NAPI kernel threads"):
every link here has a name with a random token, so the threads looked at are
only those of links this test made, whatever runs beside it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading

import pytest

from wgnapid.placement import parse_cpu_list
from wgtest import WGNAPID, assert_clean_log, napi_threads, run_cli, wait_until

prometheus_parser = pytest.importorskip(
    "prometheus_client.parser", reason="prometheus-client is in both tests/requirements-*.txt")

CPUS = sorted(os.sched_getaffinity(0))
LAST_CPU = CPUS[-1]


def _names():
    tok = secrets.token_hex(3)
    return f"q{tok}v", f"q{tok}p", f"q{tok}t"  # veth, its peer, tun (+ "0")


def _policy(path, veth, tun, *, resync=3600, cpus_v=None, sched_v=None, cpus_t=None, sched_t=None,
            metrics=None):
    lines = ["[daemon]", f"resync_interval = {resync}", "pending_max_delay = 1"]
    if metrics:
        lines.append(f'metrics_file = "{metrics}"')
    for name, kind, dev, cpus, sched in (("veths", "veth", veth, cpus_v, sched_v),
                                          ("tuns", "tun", tun, cpus_t, sched_t)):
        lines += ["", "[[rules]]", f'name = "{name}"', f'kinds = ["{kind}"]', f'interfaces = ["{dev}"]',
                  'threaded = "on"']
        if cpus is not None:
            lines.append(f'cpus = "{cpus}"')
        if sched is not None:
            lines.append(f'sched = "{sched}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def _links(netns, veth, peer, tunp):
    netns.veth(veth, peer)
    netns.make_settable(veth)
    tun = netns.agent.call("tun_create", prefix=tunp, count=1)["names"][0]
    return tun


def _proc_stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rfind(")") + 2:].split()


def test_status_lists_each_links_threads_as_proc_shows_them(netns, tmp_path):
    veth, peer, tunp = _names()
    tun = _links(netns, veth, peer, tunp)
    policy = _policy(tmp_path / "p.toml", veth, tun)
    res = run_cli(netns, policy, "--log-target", "stderr", "apply")
    assert res.returncode == 0, res.stderr
    res = run_cli(netns, policy, "status", "--json", env={"RUNTIME_DIRECTORY": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)["links"]}
    for dev in (veth, tun):
        row = rows[dev]
        want = sorted(napi_threads(dev))
        assert want, f"no napi/{dev}- thread"
        assert sorted((t["pid"], t["name"]) for t in row["threads"]) == want
        assert row["napi_threads"] == len(want) and row["threads_ambiguous"] == ""
        for t in row["threads"]:
            f = _proc_stat(t["pid"])
            assert t["cpu"] == int(f[36])  # field 39: last CPU
            assert t["cpu_seconds"] == pytest.approx((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"),
                                                     abs=0.02)
            assert (t["policy"], t["priority"], t["nice"]) == ("other", 0, 0)
            assert parse_cpu_list(t["cpus"]) == os.sched_getaffinity(t["pid"])
            assert t["cpu"] in CPUS
    res = run_cli(netns, policy, "status", env={"RUNTIME_DIRECTORY": str(tmp_path)})
    for pid, name in napi_threads(veth):
        assert f"pid {pid:>7}" in res.stdout and name in res.stdout, res.stdout

    # --watch: bounded, one JSON document per refresh with per-thread CPU use.
    res = run_cli(netns, policy, "status", "--watch", "--json", "--count", "2", "--interval", "0.2",
                  env={"RUNTIME_DIRECTORY": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    docs = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(docs) == 2
    threads = [t for r in docs[1]["links"] if r["name"] == veth for t in r["threads"]]
    assert threads and all(t["cpu_percent"] >= 0 for t in threads)


def test_status_watch_ends_cleanly_on_ctrl_c(netns, tmp_path):
    veth, peer, tunp = _names()
    tun = _links(netns, veth, peer, tunp)
    policy = _policy(tmp_path / "p.toml", veth, tun)
    import subprocess

    p = subprocess.Popen(netns.exec_argv(WGNAPID, "--config", policy, "status", "--watch"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    assert "Ctrl-C ends" in first
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and "Traceback" not in err, err


def _placed(pid, cpus, policy, prio, nice=0):
    try:
        return (os.sched_getaffinity(pid) == set(cpus) and os.sched_getscheduler(pid) == policy
                and os.sched_getparam(pid).sched_priority == prio
                and os.getpriority(os.PRIO_PROCESS, pid) == nice)
    except ProcessLookupError:
        return False


def test_placement_applies_at_once_and_again_to_recreated_threads(netns, daemon_factory, tmp_path):
    veth, peer, tunp = _names()
    tun = _links(netns, veth, peer, tunp)
    netns.set_threaded(veth, 1)  # threads that exist before the daemon starts
    old = {pid for pid, _ in napi_threads(veth)}
    assert old
    # resync once an hour: only the process-events connector can place new threads in time.
    policy = _policy(tmp_path / "p.toml", veth, tun, cpus_v=str(LAST_CPU), sched_v="fifo:10",
                     cpus_t=str(CPUS[0]), sched_t="other:nice=-5")
    d = daemon_factory(policy).start()
    for pid in old:
        assert _placed(pid, [LAST_CPU], os.SCHED_FIFO, 10), pid
    tun_threads = wait_until(lambda: napi_threads(tun), 10, "tun threads")
    for pid, _ in tun_threads:
        wait_until(lambda: _placed(pid, [CPUS[0]], os.SCHED_OTHER, 0, -5), 10, f"tun thread {pid} placed")

    for round_ in range(2):  # threaded toggled: new threads, defaults again
        netns.set_threaded(veth, 0)
        wait_until(lambda: not ({p for p, _ in napi_threads(veth)} & old), 10, "the old threads to stop")
        netns.set_threaded(veth, 1)
        new = wait_until(lambda: {p for p, _ in napi_threads(veth)} - old, 10, "new threads")
        for pid in new:
            wait_until(lambda: _placed(pid, [LAST_CPU], os.SCHED_FIFO, 10), 10, f"new thread {pid} placed")
            # One line for the new thread set, once it settled (0.5 s after its last fork).
            wait_until(lambda: any(f"{veth}: NAPI threads placed" in l and f"(pid {pid})" in l
                                   for l in d.log_lines()), 10, f"the placement of {pid} logged")
        old = new

    st = wait_until(lambda: next((l for l in (d.status_file() or {}).get("links", [])
                                  if l["name"] == veth and l.get("placement", {}).get("state") == "placed"), None),
                    10, "placement in the status file")
    assert st["placement"] == {"cpus": str(LAST_CPU), "sched": "fifo:10", "state": "placed", "reason": ""}
    # Logged once per thread set: the first set, then one per toggle.
    placed = [l for l in d.log_lines() if f"{veth}: NAPI threads placed" in l]
    assert len(placed) == 3, placed
    d.reload()  # a resync finding everything placed says nothing more
    assert len([l for l in d.log_lines() if f"{veth}: NAPI threads placed" in l]) == 3, placed
    assert_clean_log(d)


def test_links_made_and_removed_while_running_are_placed_and_forgotten(netns, daemon_factory, tmp_path):
    # Placement follows each changed link (wgnapid.placement.Steering.update),
    # not a rebuild of every target: links made after the start are placed,
    # a removed one leaves the status file, the others stay placed.
    veth, peer, tunp = _names()
    policy = _policy(tmp_path / "p.toml", f"{veth}*", f"{tunp}*", cpus_v=str(LAST_CPU), cpus_t=str(CPUS[0]))
    d = daemon_factory(policy).start()
    veths = [f"{veth}{i}" for i in range(3)]
    for i, v in enumerate(veths):
        netns.veth(v, f"{peer}{i}")
        netns.make_settable(v)
    tuns = netns.agent.call("tun_create", prefix=tunp, count=2)["names"]
    for dev, cpu in [(v, LAST_CPU) for v in veths] + [(t, CPUS[0]) for t in tuns]:
        threads = wait_until(lambda: napi_threads(dev), 10, f"{dev}'s threads")
        for pid, _ in threads:
            wait_until(lambda: os.sched_getaffinity(pid) == {cpu}, 10, f"{dev}'s thread {pid} placed")

    def placement(dev):
        rows = (d.status_file() or {}).get("links", [])
        return next((r.get("placement") or {} for r in rows if r["name"] == dev), None)

    for dev in veths + tuns:
        wait_until(lambda: (placement(dev) or {}).get("state") == "placed", 10, f"{dev} placed in status")
    netns.ip("link", "del", veths[0])
    wait_until(lambda: placement(veths[0]) is None, 10, f"{veths[0]} gone from the status file")
    assert [placement(v)["state"] for v in veths[1:] + tuns] == ["placed"] * 4
    assert d.alive()
    assert_clean_log(d)


class _NoSysNice:
    """The namespace, but the daemon runs without CAP_SYS_NICE (still root)."""

    def __init__(self, ns):
        self.ns = ns

    def exec_argv(self, *argv):
        return self.ns.exec_argv("setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice", *argv)

    def __getattr__(self, name):
        return getattr(self.ns, name)


def test_a_placement_the_kernel_refuses_is_a_per_link_failure(netns, daemon_factory, tmp_path):
    # Without CAP_SYS_NICE the kernel refuses any change to a kthread (it holds
    # capabilities the daemon lacks: cap_safe_nice). Each link says so once;
    # threading goes on.
    veth, peer, tunp = _names()
    tun = _links(netns, veth, peer, tunp)
    policy = _policy(tmp_path / "p.toml", veth, tun, sched_v="fifo:10", cpus_t=str(LAST_CPU))
    d = daemon_factory(policy)
    d.ns = _NoSysNice(netns)
    d.start()
    wait_until(lambda: d.link_state(veth) == "threaded" and d.link_state(tun) == "threaded", 10, "threaded")
    for dev in (veth, tun):
        st = wait_until(lambda: next((l for l in (d.status_file() or {}).get("links", [])
                                      if l["name"] == dev and l.get("placement", {}).get("state") == "failed"),
                                     None), 10, f"a failed placement of {dev} in the status file")
        assert "CAP_SYS_NICE" in st["placement"]["reason"], st
        for pid, _ in napi_threads(dev):
            assert os.sched_getscheduler(pid) == os.SCHED_OTHER and len(os.sched_getaffinity(pid)) == len(CPUS)
    d.reload()  # the resync tries again and says nothing new
    lines = [l for l in d.log_lines() if "not placed" in l]
    assert len(lines) == 2 and all("Operation not permitted" in l for l in lines), lines
    assert {l.split(": ")[2] for l in lines} == {veth, tun}
    assert d.alive()


def test_cpus_that_do_not_exist_are_a_config_error(netns, tmp_path):
    veth, peer, tunp = _names()
    possible = open("/sys/devices/system/cpu/possible").read().strip()
    beyond = int(possible.split("-")[-1].split(",")[-1]) + 1
    policy = _policy(tmp_path / "p.toml", veth, f"{tunp}0", cpus_v=f"0,{beyond}")
    res = run_cli(netns, policy, "check-config")
    assert res.returncode == 78  # EX_CONFIG, as for every broken policy
    assert res.stderr.strip() == (f'{policy}: rules[0].cpus (rule "veths"): CPU {beyond} '
                                  f"does not exist here (CPUs: {possible})"), res.stderr
    res = run_cli(netns, policy, "run")
    assert res.returncode == 78 and "rules[0].cpus" in res.stderr and "Traceback" not in res.stderr


def _metrics(path):
    return {f.name: f for f in prometheus_parser.text_string_to_metric_families(path.read_text())}


def test_metrics_file_equals_status_json(netns, daemon_factory, tmp_path):
    veth, peer, tunp = _names()
    tun = _links(netns, veth, peer, tunp)
    netns.veth(veth + "o", peer + "o")  # wanted off (the rule below)
    mfile = tmp_path / "wgnapid.prom"
    policy = _policy(tmp_path / "p.toml", veth, tun, metrics=mfile, cpus_v=str(LAST_CPU))
    policy.write_text(policy.read_text() + f'\n[[rules]]\nname = "offs"\ninterfaces = ["{veth}o"]\nthreaded = "off"\n')
    d = daemon_factory(policy).start()
    wait_until(lambda: mfile.exists(), 15, "the metrics file")
    status = json.loads(d.cli("status", "--json").stdout)
    wait_until(lambda: _metrics(mfile)["wgnapid_threaded_writes"].samples[0].value
               == status["daemon"]["stats"]["writes"], 15, "metrics and status to agree")
    fams = _metrics(mfile)
    status = json.loads(d.cli("status", "--json").stdout)
    ns = str((d.status_file() or {})["netns"])
    for name in ("threaded_writes", "link_failures", "event_overflows", "resyncs", "evaluations"):
        fam = fams[f"wgnapid_{name}"]
        assert fam.type == "counter" and fam.samples[0].name == f"wgnapid_{name}_total"
        assert fam.samples[0].labels == {"namespace": ns}
        assert fam.samples[0].value == status["daemon"]["stats"][name.split("_")[-1] if name != "threaded_writes"
                                                                 else "writes"]
    rows = {r["name"]: r for r in status["links"] if r["rule"]}
    assert set(rows) == {veth, veth + "o", tun}
    states = {s.labels["interface"]: s for s in fams["wgnapid_link_state"].samples}
    assert fams["wgnapid_link_state"].type == "gauge"
    for dev, row in rows.items():
        labels = {"namespace": ns, "interface": dev, "kind": row["kind"], "rule": row["rule"]}
        assert states[dev].labels == dict(labels, state=row["state"]) and states[dev].value == 1
        by = lambda fam: {s.labels["interface"]: s for s in fams[fam].samples}  # noqa: E731
        assert by("wgnapid_link_threaded_wanted")[dev].value == (1 if row["wanted"] == "on" else 0)
        if row["current"] is not None:
            assert by("wgnapid_link_threaded")[dev].value == row["current"]
        assert by("wgnapid_link_napi_threads")[dev].value == row["napi_threads"]
        cpu = by("wgnapid_link_napi_thread_cpu_seconds")[dev]
        assert cpu.name == "wgnapid_link_napi_thread_cpu_seconds_total" and cpu.labels == labels
        assert cpu.value == pytest.approx(sum(t["cpu_seconds"] for t in row["threads"]), abs=0.1)
    assert rows[veth + "o"]["state"] == "off"
    counts = {s.labels["state"]: s.value for s in fams["wgnapid_links"].samples}
    assert counts == {k: float(v) for k, v in status["summary"].items()}
    v = fams["wgnapid_kernel_guard_verdict"].samples[0]
    assert v.labels == {"guard": status["kernel"]["guard"], "verdict": status["kernel"]["verdict"]}
    assert fams["wgnapid_kernel_native"].samples[0].value == (1 if status["kernel"]["native"] else 0)
    assert oct(mfile.stat().st_mode & 0o777) == "0o644"  # node_exporter runs as another user
    assert_clean_log(d)


def test_metrics_file_is_never_seen_half_written(tmp_path):
    """A reader loop while the file is rewritten many times: every read parses
    whole (the last family is there), never a truncated file."""
    from wgnapid.metrics import MetricsFile

    class Log:
        def warning(self, *a, **k):
            raise AssertionError(a)
        error = warning

    path = tmp_path / "m.prom"
    mf = MetricsFile(str(path), Log())
    links = [{"name": f"wg{i}", "ifindex": 100 + i, "kind": "wireguard", "rule": "r", "wanted": "on",
              "current": 1, "state": "threaded"} for i in range(300)]
    doc = {"netns": 1, "links": links, "summary": {"threaded": 300}, "stats": {}, "kernel": {}}
    mf.write(doc, {})
    done, reads, bad = threading.Event(), [0], []

    def reader():
        while not done.is_set():
            text = path.read_text()
            reads[0] += 1
            if not text.rstrip().endswith("wgnapid_kernel_native 0.0"):
                bad.append(text[-200:])

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            doc["stats"] = {"writes": i}
            assert mf.write(doc, {(1, 100 + j): (1, i / 10) for j in range(300)})
    finally:
        done.set()
        t.join()
    assert not bad and reads[0] > 0
    print(f"{reads[0]} reads during 300 rewrites, none partial")
    assert [p.name for p in tmp_path.iterdir()] == ["m.prom"]  # no temporary file left
