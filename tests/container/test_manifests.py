"""deploy/kubernetes: the manifests validate offline against the Kubernetes
schemas (kubernetes-validate, strict: no unknown field) for every supported
release, and say what the README says they do.

Run alone with `./dev test-container` (with the image test).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from wgnapid import config

try:
    import kubernetes_validate as kv
    import yaml
except ImportError:  # collected but deselected in the other tiers: no error there
    kv = yaml = None

pytestmark = [pytest.mark.container,
              pytest.mark.skipif(kv is None, reason="kubernetes-validate is missing (`./dev test-container` installs it)")]

TOP = Path(__file__).resolve().parents[2]
DEPLOY = TOP / "deploy" / "kubernetes"
BASE = DEPLOY / "wgnapid.yaml"
ALL = DEPLOY / "wgnapid-namespaces-all.yaml"
# The releases the manifests are for (README, "Kubernetes"): appArmorProfile-free,
# every field used exists since 1.25; checked on every release from 1.30 on
# that kubernetes-validate carries schemas for.
OLDEST = (1, 30)


def _versions() -> list[str]:
    found = sorted({tuple(map(int, v.split(".")[:2])) for v in kv.utils.all_versions()})
    return [f"{a}.{b}" for a, b in found if (a, b) >= OLDEST]


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(path: Path) -> dict[str, dict]:
    return {d["kind"]: d for d in docs(path)}


@pytest.mark.parametrize("path", [BASE, ALL], ids=lambda p: p.name)
def test_manifests_validate_strictly_for_every_supported_release(path):
    versions = _versions()
    assert versions and versions[0] == "1.30", versions
    print(f"{path.name}: Kubernetes {', '.join(versions)}")
    for doc in docs(path):
        for v in versions:
            kv.validate(doc, v, strict=True)  # raises ValidationError


def test_validation_is_not_a_formality():
    bad = copy.deepcopy(by_kind(BASE)["DaemonSet"])
    bad["spec"]["template"]["spec"]["hostNetwerk"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, _versions()[-1], strict=True)


def _pod(path: Path) -> dict:
    return by_kind(path)["DaemonSet"]["spec"]["template"]["spec"]


def test_the_daemonset_is_what_the_readme_says():
    pod = _pod(BASE)
    (c,) = pod["containers"]
    assert pod["hostNetwork"] is True
    assert pod["hostPID"] is True  # the thread view (napi/<dev>-N kthreads)
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["readinessProbe"]["exec"]["command"] == ["wgnapid", "status", "--ready"]
    assert "--watch-policy" in c["args"] and c["args"][-2:] == ["run", "--watch-policy"]
    # /sys from the host: only the virtual links' directory, and it is the only hostPath.
    volumes = {v["name"]: v for v in pod["volumes"]}
    host = {name: v["hostPath"]["path"] for name, v in volumes.items() if "hostPath" in v}
    assert host == {"sys-virtual-net": "/sys/devices/virtual/net"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["sys-virtual-net"]["mountPath"] == "/sys/devices/virtual/net"
    assert mounts["policy"]["mountPath"] == "/etc/wgnapid" and mounts["policy"]["readOnly"] is True
    assert volumes["policy"]["configMap"]["name"] == by_kind(BASE)["ConfigMap"]["metadata"]["name"]
    assert mounts["run"]["mountPath"] == "/run/wgnapid" and "emptyDir" in volumes["run"]


def test_the_image_runs_what_the_daemonset_runs():
    """The Containerfile's CMD is the DaemonSet's args: `podman run IMAGE` and the pod agree."""
    text = (TOP / "deploy" / "container" / "Containerfile").read_text()
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    entry = yaml.safe_load(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    (c,) = _pod(BASE)["containers"]
    assert cmd == c["args"] and entry == ["/usr/bin/wgnapid"]


def test_configmap_policy_is_valid_and_is_the_shipped_default():
    text = by_kind(BASE)["ConfigMap"]["data"]["wgnapid.toml"]
    policy = config.parse_file("ConfigMap wgnapid/wgnapid.toml", text)
    assert policy == config.read_file(str(TOP / "config" / "wgnapid.toml"))


def test_the_namespaces_all_variant_differs_only_where_it_must():
    base, variant = by_kind(BASE), by_kind(ALL)
    c = variant["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    assert c["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]
    text = variant["ConfigMap"]["data"]["wgnapid.toml"]
    assert re.search(r'^namespaces = "all"$', text, re.M)
    # Undo the intended differences: what is left must be identical.
    undone = copy.deepcopy(variant)
    undone["ConfigMap"]["data"]["wgnapid.toml"] = "\n".join(
        l for l in text.splitlines(keepends=False)
        if not l.startswith("namespaces =") and not l.startswith("# all:")
        and not l.startswith("# the container runtime puts pods")) + "\n"
    pod = undone["DaemonSet"]["spec"]["template"]["spec"]
    uc = pod["containers"][0]
    uc["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]
    uc["volumeMounts"] = [m for m in uc["volumeMounts"] if m["name"] != "netns"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "netns"]
    assert undone == base
    mount = {m["name"]: m for m in c["volumeMounts"]}["netns"]
    assert mount == {"name": "netns", "mountPath": "/run/netns", "readOnly": True,
                     "mountPropagation": "HostToContainer"}
    if "namespaces" not in config.DaemonConfig.model_fields:
        pytest.skip('daemon.namespaces (issue 10) is not in this tree: the variant\'s policy is not checked')
    config.parse_file("ConfigMap wgnapid/wgnapid.toml (namespaces all)", text)


def test_the_readme_deploys_what_is_tested():
    """The README's deploy steps name the files and the build the tests use."""
    readme = (TOP / "README.md").read_text()
    for path in (BASE, ALL):
        assert f"deploy/kubernetes/{path.name}" in readme
    assert "kubectl apply -f deploy/kubernetes/wgnapid.yaml" in readme
    assert "./dev image" in readme
    dev = (TOP / "dev").read_text()
    assert re.search(r"^\s+image\)\n[^\n]*\n[^\n]*deploy/container/build_image\.py", dev, re.M), "`./dev image` runs build_image.py"
    assert "kubectl -n kube-system exec ds/wgnapid -- wgnapid status" in readme
    ns = by_kind(BASE)["DaemonSet"]["metadata"]["namespace"]
    assert ns == "kube-system" and by_kind(BASE)["ConfigMap"]["metadata"]["namespace"] == ns
