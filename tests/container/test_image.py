"""The container image, built as `./dev image` builds it and run as the DaemonSet runs it.

The podman command line is made from deploy/kubernetes/wgnapid.yaml itself
(`podman_argv`): its capabilities, read-only root, no-new-privileges,
default seccomp, host PID, args and volumes. "Host network" is the node's
network namespace; here the node is a network namespace this test made, so
that nothing the container does can reach this machine's own links:
`--network ns:/run/netns/<test namespace>`, and the hostPath
/sys/devices/virtual/net is taken from a sysfs instance mounted from inside
that namespace (what the node's /sys is to the node). The ConfigMap is a
directory laid out the way the kubelet lays one out (`..data` symlink).

Run alone with `./dev test-container`. The images and containers made here
carry a random name and are removed at the end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TOP = HERE.parents[1]
sys.path.insert(0, str(TOP / "tests" / "integration"))

from wgtest import NS_PREFIX, Netns, wait_until, write_policy  # noqa: E402

try:
    import yaml
except ImportError:  # collected but deselected in the other tiers: no error there
    yaml = None

pytestmark = pytest.mark.container

PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
MANIFEST = TOP / "deploy" / "kubernetes" / "wgnapid.yaml"


def _ulimits() -> list[str]:
    """Explicit limits, as a node's container runtime sets them. podman's own
    defaults (nofile 1048576) exceed this machine's hard limits, and a
    container without CAP_SYS_RESOURCE cannot set a limit above the one it
    inherits (runc fails with EPERM; seen here for nofile above 20000 and
    nproc above 32768). So: this process's hard nofile (at most 1048576), and
    nproc up to kernel.pid_max (no more tasks can exist anyway). nproc counts
    every task of uid 0 on the host."""
    import resource

    def hard(res: int, most: int) -> int:
        h = resource.getrlimit(res)[1]
        return most if h == resource.RLIM_INFINITY else min(most, h)

    nofile = hard(resource.RLIMIT_NOFILE, 1048576)
    nproc = hard(resource.RLIMIT_NPROC, int(Path("/proc/sys/kernel/pid_max").read_text()))
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


ULIMITS = _ulimits()
READY_TIMEOUT = 120.0  # python start-up and the first reconcile, on 2 loaded CPUs


def _problem() -> str | None:
    if yaml is None:
        return "PyYAML is missing (`./dev test-container` installs kubernetes-validate, which brings it)"
    if os.geteuid() != 0:
        return "the container tier needs root (podman with runc, network namespaces, mounts)"
    for tool in ("podman", "runc", "debootstrap", "nsenter"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (`./dev test-container` installs it)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    return None


if _problem():
    pytestmark = [pytestmark, pytest.mark.skip(reason=_problem())]


def podman(*args, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(PODMAN + list(map(str, args)), capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(map(str, args[:3]))}: rc {r.returncode}\n{r.stderr[-3000:]}")
    return r


def podman_argv(pod: dict, *, name: str, image: str, netns: str, sysfs: Path, configmap: Path) -> list[str]:
    """`podman run` for the DaemonSet's pod spec, on a node whose host network
    namespace is ``netns`` and whose /sys is ``sysfs``."""
    (c,) = pod["containers"]
    sc = c["securityContext"]
    argv = ["run", "--detach", "--name", name, "--pull=never", *ULIMITS]
    assert pod["hostNetwork"] is True
    argv += ["--network", f"ns:/run/netns/{netns}"]
    if pod.get("hostPID"):
        argv += ["--pid", "host"]
    assert sc["privileged"] is False
    argv += ["--user", str(sc["runAsUser"])]
    argv += [f"--cap-drop={cap}" for cap in sc["capabilities"]["drop"]]
    argv += [f"--cap-add={cap}" for cap in sc["capabilities"]["add"]]
    if sc["allowPrivilegeEscalation"] is False:
        argv += ["--security-opt", "no-new-privileges"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}  # podman's default profile
    if sc["readOnlyRootFilesystem"]:
        argv += ["--read-only", "--read-only-tmpfs=false"]  # no extra tmpfs: Kubernetes adds none
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in c["volumeMounts"]:
        v = volumes[m["name"]]
        ro = ",ro" if m.get("readOnly") else ""
        if "configMap" in v:
            argv += ["--mount", f"type=bind,src={configmap},dst={m['mountPath']}{ro}"]
        elif "emptyDir" in v:
            argv += ["--mount", f"type=tmpfs,dst={m['mountPath']},tmpfs-size={_bytes(v['emptyDir']['sizeLimit'])}"]
        elif "hostPath" in v:
            path = v["hostPath"]["path"]
            assert path.startswith("/sys/"), f"no host stand-in for hostPath {path}"
            argv += ["--mount", f"type=bind,src={sysfs / path[len('/sys/'):]},dst={m['mountPath']}{ro}"]
        else:
            raise AssertionError(f"volume {v} has no stand-in here")
    return argv + [image, *c["args"]]


def _bytes(quantity: str) -> int:
    """A Kubernetes binary quantity ("16Mi") in bytes."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", quantity)
    assert m, f"unexpected quantity {quantity}"
    return int(m.group(1)) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[m.group(2)]


class ConfigMapDir:
    """A directory as the kubelet lays out a ConfigMap volume: wgnapid.toml ->
    ..data/wgnapid.toml, ..data -> a timestamped directory, swapped by rename."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir()
        self.n = 0

    def update(self, text: str) -> None:
        self.n += 1
        version = self.root / f"..2026_11_29_12_00_{self.n:02d}.{secrets.token_hex(3)}"
        version.mkdir()
        (version / "wgnapid.toml").write_text(text)
        os.symlink(version.name, self.root / "..data_tmp")
        os.rename(self.root / "..data_tmp", self.root / "..data")
        if not (self.root / "wgnapid.toml").is_symlink():
            os.symlink("..data/wgnapid.toml", self.root / "wgnapid.toml")


@pytest.fixture(scope="module")
def image():
    tag = f"localhost/wgnapid-ci-i18-{secrets.token_hex(4)}:test"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(TOP / "deploy" / "container" / "build_image.py"), "--tag", tag],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=3600)
    try:
        assert r.returncode == 0, f"build_image.py failed ({r.returncode}):\n{r.stderr[-6000:]}"
        assert r.stdout.strip().splitlines()[-1] == tag
        size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
        print(f"\nimage {tag}: built in {time.monotonic() - t0:.0f} s, {size / 1e6:.1f} MB")
        yield tag
    finally:
        podman("rmi", "--force", tag, check=False)


@pytest.fixture
def node(tmp_path):
    """The node: a network namespace (its "host network"), a sysfs instance
    mounted from inside it (its /sys), and the ConfigMap directory."""
    name = f"{NS_PREFIX}i18-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name)
    sysfs = tmp_path / "node-sys"
    sysfs.mkdir()
    mounted = False
    try:
        ns.ip("link", "set", "lo", "up")
        subprocess.run(["nsenter", f"--net=/run/netns/{name}", "mount", "-t", "sysfs", "-o", "nosuid,nodev,noexec",
                        "sysfs", str(sysfs)], check=True)
        mounted = True
        yield ns, sysfs, ConfigMapDir(tmp_path / "configmap")
    finally:
        ns.close()
        if mounted:
            subprocess.run(["umount", "--lazy", str(sysfs)], check=False)
        subprocess.run(["ip", "netns", "del", name], check=False)


def _policy_text(tmp_path: Path, rules) -> str:
    return write_policy(tmp_path / "p.toml", resync_interval=1, pending_max_delay=1, rules=rules).read_text()


ON = (("tuns", ["tun"], ["tt*"], "on"), ("veths", ["veth"], ["va*"], "on"))
OFF_VETH = (("tuns", ["tun"], ["tt*"], "on"), ("veths", ["veth"], ["va*"], "off"))


def test_image_holds_only_debian_packages(image):
    r = podman("run", "--rm", *ULIMITS, "--network", "none", "--entrypoint", "/bin/sh", image, "-c",
               "dpkg-query -W -f '${Package} ${Version}\\n' wgnapid python3-pydantic python3-pyroute2 "
               "python3-pyudev libsystemd0; "
               "ls /usr/local/lib/python3*/dist-packages 2>/dev/null | wc -l; "
               "dpkg -S /usr/bin/wgnapid; "
               "dpkg-query -W -f '${Package}\\n' | grep -cx 'systemd\\|man-db' || true; "
               "ls /var/lib/apt/lists | wc -l")
    lines = r.stdout.splitlines()
    print("\n" + r.stdout)
    pkgs = dict(l.split(" ", 1) for l in lines[:5])
    assert set(pkgs) == {"wgnapid", "python3-pydantic", "python3-pyroute2", "python3-pyudev", "libsystemd0"}
    assert all(pkgs.values()), pkgs
    assert lines[5] == "0", "something was installed outside dpkg (pip?)"
    assert lines[6].startswith("wgnapid: /usr/bin/wgnapid")
    assert lines[7] == "0", "systemd or man-db is still in the image"
    assert lines[8] == "0", "apt lists were left in the image"


def test_runs_as_the_daemonset_threads_reloads_and_stops(image, node, tmp_path):
    ns, sysfs, cm = node
    pod = next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d["kind"] == "DaemonSet")
    pod = pod["spec"]["template"]["spec"]
    cm.update(_policy_text(tmp_path, ON))
    name = f"wgnapid-ci-i18-{secrets.token_hex(4)}"
    argv = podman_argv(pod, name=name, image=image, netns=ns.name, sysfs=sysfs, configmap=cm.root)
    print("\npodman " + " ".join(argv))
    probe = pod["containers"][0]["readinessProbe"]["exec"]["command"]
    t0 = time.monotonic()
    podman(*argv)
    try:
        def logs() -> str:
            r = podman("logs", name, check=False)
            return r.stdout + r.stderr

        def ready() -> bool:
            return podman("exec", name, *probe, check=False).returncode == 0

        # Ready (the probe's own command) once the first reconcile is done.
        wait_until(ready, READY_TIMEOUT, "the readiness probe to pass")
        print(f"ready {time.monotonic() - t0:.1f} s after `podman run`")
        assert re.search(r"^wgnapid: info: wgnapid \S+ started: source netlink.*, "
                         r"hot path compiled \(wgnapid\._hotpath\)$", logs(), re.M), logs()
        assert re.search(r"^wgnapid: notice: nothing to do after start-up: the one link here \(lo\)", logs(), re.M), logs()

        # Stand-ins created on the node after start: a tun link with NAPI and a
        # veth made settable; both threaded.
        ns.agent.call("tun_create", prefix="tt", count=1)
        ns.veth("va0", "pa0")
        ns.make_settable("va0")
        wait_until(lambda: ns.values("tt0", "va0") == {"tt0": 1, "va0": 1}, 30, "tt0 and va0 threaded")
        assert ns.values("pa0") == {"pa0": 0}, "a link no rule matches was written"
        text = logs()
        for dev in ("tt0", "va0"):
            assert re.search(rf"^wgnapid: info: {dev}: threaded NAPI on \[rule \w+\]$", text, re.M), text

        # `kubectl exec ... wgnapid status`: the daemon's view and the thread view (host PID).
        status = json.loads(podman("exec", name, "wgnapid", "status", "--json").stdout)
        rows = {r["name"]: r for r in status["links"]}
        assert status["daemon"] and status["daemon"]["policy_files"] == ["/etc/wgnapid/wgnapid.toml"]
        assert rows["va0"]["state"] == "threaded" and rows["tt0"]["state"] == "threaded", rows
        assert rows["va0"]["napi_threads"] >= 1, rows["va0"]
        print(podman("exec", name, "wgnapid", "status").stdout)

        # The ConfigMap changes: reloaded at the next resync.
        cm.update(_policy_text(tmp_path, OFF_VETH))
        wait_until(lambda: ns.values("va0") == {"va0": 0}, 30, "va0 turned off by the new policy")
        assert ns.values("tt0") == {"tt0": 1}
        text = logs()
        assert "the policy files changed; reloading" in text and "policy reloaded from /etc/wgnapid/wgnapid.toml" in text
        assert ready()

        # SIGTERM (what the kubelet sends) ends it cleanly.
        t_term, wall_term = time.monotonic(), time.time()
        podman("kill", "--signal", "TERM", name)
        rc = podman("wait", name, timeout=60).stdout.strip()
        took = time.monotonic() - t_term
        finished = podman("inspect", "--format", "{{.State.FinishedAt.Unix}}.{{.State.FinishedAt.Nanosecond}}",
                          name, check=False).stdout.strip()
        own = ""
        if re.fullmatch(r"\d+\.\d+", finished):
            sec, ns_ = finished.split(".")
            own = f"; the container ended {int(sec) + int(ns_) / 1e9 - wall_term:.2f} s after `podman kill` began"
        print(f"exited {rc} {took:.2f} s after SIGTERM (podman kill + podman wait){own}")
        assert rc == "0", logs()
        text = logs()
        assert re.search(r"^wgnapid: info: wgnapid stopping \(SIGTERM\)$", text, re.M), text
        assert "Traceback" not in text and not re.search(r"^wgnapid: error:", text, re.M), text
        print("--- podman logs (kubectl logs):\n" + text)
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
