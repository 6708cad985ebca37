"""What the cluster provider must give every suite, proven on a real cluster.

Node Ready; a PVC's data surviving its pod being deleted and rescheduled (on a `local` PV, which is
what Velero's fs-backup needs); Service DNS from a pod; kubectl exec and logs; testinfra's kubectl
backend; and, last, that `down` leaves nothing behind and a second cluster comes up after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from fixtures.cluster import user_alive
from restoredrill.cluster import ClusterHandle, ClusterProvider
from restoredrill.errors import CommandError, MissingToolError
from restoredrill.kube import find_kubectl, run_kubectl
from restoredrill.timeouts import timeout as named_timeout
from restoredrill.waits import wait_until

pytestmark = pytest.mark.cluster

BUSYBOX = "docker.io/library/busybox:1.35"
Kubectl = Callable[..., str]


def _kubectl_binary() -> str:
    try:
        from restoredrill.toolchain.gobuild import GoToolchain

        return str(GoToolchain().binary("kubectl"))
    except MissingToolError:
        return find_kubectl()


@pytest.fixture(scope="module")
def kubectl(cluster: ClusterHandle) -> Kubectl:
    binary = _kubectl_binary()

    def run(*args: str, input: str | None = None, timeout: float = named_timeout("command")) -> str:
        return run_kubectl(list(args), kubeconfig=cluster.kubeconfig, context=cluster.context, timeout=timeout,
                           input=input, kubectl=binary)

    return run


@pytest.fixture
def namespace(kubectl: Kubectl, worker_id: str) -> Iterator[str]:
    """A fresh namespace per test (name carries the xdist worker), deleted afterwards."""
    name = f"rd-cluster-{worker_id}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def apply(kubectl: Kubectl, namespace: str, *documents: Mapping[str, object]) -> None:
    kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(documents))


def wait_pod_running(kubectl: Kubectl, namespace: str, selector: str, *, not_named: str | None = None) -> str:
    """Name of a Ready pod matching `selector` (and not called `not_named`)."""

    def probe() -> tuple[str | None, str]:
        pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json"))["items"]
        seen = []
        for pod in pods:
            name = pod["metadata"]["name"]
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in pod.get("status", {}).get("conditions", []))
            seen.append(f"{name}:{pod['status'].get('phase')}{'/ready' if ready else ''}")
            if ready and name != not_named and not pod["metadata"].get("deletionTimestamp"):
                return name, ", ".join(seen)
        return None, ", ".join(seen) or "no pods"

    return wait_until(f"a Ready pod {selector} in {namespace}", probe, timeout=named_timeout("pod_ready"),
                      remedy=f"kubectl -n {namespace} describe pods -l {selector}")


def busybox_deployment(name: str, command: str, *, volumes: list[dict[str, object]] | None = None,
                       mounts: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                                    "command": ["sh", "-c", command], "volumeMounts": mounts or []}],
                    "volumes": volumes or [],
                },
            },
        },
    }


def test_node_is_ready(kube_api: client.ApiClient) -> None:
    nodes = client.CoreV1Api(kube_api).list_node().items
    assert nodes, "the cluster has no node"
    for node in nodes:
        conditions = (node.status.conditions if node.status else None) or []
        ready = {c.type: c.status for c in conditions}.get("Ready")
        assert ready == "True", f"node {node.metadata and node.metadata.name} is not Ready: {conditions}"
    version = client.VersionApi(kube_api).get_code()
    assert version.git_version.startswith("v1."), version


def test_pvc_data_survives_pod_rescheduling_on_a_local_pv(kubectl: Kubectl, namespace: str,
                                                           kube_api: client.ApiClient) -> None:
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}
    token = uuid.uuid4().hex
    writer = busybox_deployment(
        "writer",
        f"[ -f /data/token ] || echo {token} > /data/token; sleep 3600",
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        mounts=[{"name": "data", "mountPath": "/data"}],
    )
    apply(kubectl, namespace, pvc, writer)
    first = wait_pod_running(kubectl, namespace, "app=writer")
    assert kubectl("-n", namespace, "exec", first, "--", "cat", "/data/token").strip() == token

    kubectl("-n", namespace, "delete", "pod", first, "--wait=true", timeout=named_timeout("pod_ready"))
    second = wait_pod_running(kubectl, namespace, "app=writer", not_named=first)
    assert second != first
    assert kubectl("-n", namespace, "exec", second, "--", "cat", "/data/token").strip() == token

    claim = client.CoreV1Api(kube_api).read_namespaced_persistent_volume_claim("data", namespace)
    assert claim.spec is not None and claim.spec.volume_name, f"PVC data is not bound: {claim.status}"
    volume = client.CoreV1Api(kube_api).read_persistent_volume(claim.spec.volume_name)
    spec = volume.spec
    assert spec is not None
    assert spec.local is not None and spec.host_path is None, (
        f"PV {claim.spec.volume_name} is not a `local` PV (Velero's fs-backup would skip it): {spec}")
    assert spec.node_affinity is not None and spec.node_affinity.required is not None


def test_pod_resolves_and_reaches_a_service_by_dns_name(kubectl: Kubectl, namespace: str) -> None:
    body = uuid.uuid4().hex
    web = busybox_deployment("web", f"mkdir -p /www && echo {body} > /www/index.html && httpd -f -p 8080 -h /www")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    client_deployment = busybox_deployment("client", "sleep 3600")
    apply(kubectl, namespace, web, service, client_deployment)
    wait_pod_running(kubectl, namespace, "app=web")
    pod = wait_pod_running(kubectl, namespace, "app=client")
    fqdn = f"web.{namespace}.svc.cluster.local"
    cluster_ip = kubectl("-n", namespace, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}").strip()

    lookup = kubectl("-n", namespace, "exec", pod, "--", "nslookup", fqdn)
    assert cluster_ip in lookup, f"{fqdn} did not resolve to {cluster_ip}:\n{lookup}"

    def fetch() -> tuple[str | None, str]:
        try:
            # The short name exercises the pod's search path as well.
            # No `-T`: Debian's busybox-static 1.35 wget segfaults with it; kubectl's timeout bounds it.
            out = kubectl("-n", namespace, "exec", pod, "--", "wget", "-q", "-O", "-", "http://web/", timeout=20)
        except CommandError as error:
            return None, error.output.strip()[-200:]
        return (out if body in out else None), out[:200]

    wait_until("the client pod to fetch http://web/ through the Service", fetch, timeout=60, interval=2)


def test_kubectl_exec_and_logs(kubectl: Kubectl, namespace: str) -> None:
    marker = uuid.uuid4().hex
    apply(kubectl, namespace, busybox_deployment("talker", f"echo {marker}; sleep 3600"))
    pod = wait_pod_running(kubectl, namespace, "app=talker")

    def logged() -> tuple[str | None, str]:
        logs = kubectl("-n", namespace, "logs", pod)
        return (logs if marker in logs else None), logs[-200:]

    wait_until(f"{marker} in the logs of {pod}", logged, timeout=60, interval=1)
    assert kubectl("-n", namespace, "exec", pod, "--", "sh", "-c", "echo $((6 * 7))").strip() == "42"
    with pytest.raises(CommandError):
        kubectl("-n", namespace, "exec", pod, "--", "sh", "-c", "exit 3")


def test_testinfra_kubectl_backend_reads_a_checksum_in_a_pod(kubectl: Kubectl, namespace: str,
                                                             cluster: ClusterHandle,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    import testinfra

    content = f"restoredrill {uuid.uuid4().hex}\n"
    apply(kubectl, namespace, busybox_deployment("files", f"printf '{content}' > /tmp/payload; sleep 3600"))
    pod = wait_pod_running(kubectl, namespace, "app=files")
    # testinfra runs `kubectl` from PATH: make it ours.
    monkeypatch.setenv("PATH", f"{Path(_kubectl_binary()).parent}{os.pathsep}{os.environ['PATH']}")
    host = testinfra.get_host(f"kubectl://{pod}?container=main&namespace={namespace}",
                              kubeconfig=str(cluster.kubeconfig), context=cluster.context)

    def checksum() -> tuple[str | None, str]:
        payload = host.file("/tmp/payload")
        return (payload.sha256sum if payload.exists else None), "payload not written yet"

    assert wait_until("/tmp/payload in the pod", checksum, timeout=30) == hashlib.sha256(content.encode()).hexdigest()


# ---- teardown: must be the last test; it takes the cluster down and brings a new one up --------

def independent_leftovers(cluster_dir: Path, bridge: str) -> list[str]:
    """What is left of a cluster, checked with plain host commands (not the provider's own code)."""
    found = []
    processes = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, timeout=30).stdout
    found += [line for line in processes.splitlines() if str(cluster_dir) in line and "pytest" not in line]
    mounts = Path("/proc/self/mounts").read_text()
    found += [line for line in mounts.splitlines()
              if str(cluster_dir) in line or "/var/lib/kubelet" in line or "/run/netns/cni-" in line]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30).stdout
    found += [line for line in links.splitlines() if bridge in line or " veth" in line]
    for save in ("iptables-save", "ip6tables-save"):
        rules = subprocess.run([save], capture_output=True, text=True, timeout=30).stdout
        found += [f"{save}: {line}" for line in rules.splitlines() if "KUBE-" in line or "CNI-" in line]
    for logs in (Path("/var/log/containers"), Path("/var/log/pods")):
        if logs.is_dir():
            found += [f"pod log {p}" for p in logs.iterdir() if p.is_symlink() or p.is_dir()]
    cni_cache = Path("/var/lib/cni/results")
    if cni_cache.is_dir():
        found += [f"cni cache {p}" for p in cni_cache.iterdir()]
    shims = Path("/run/containerd/s")
    if shims.is_dir():
        found += [f"shim socket {p}" for p in shims.iterdir()]
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / "restoredrill").exists():
            found.append(f"cgroup {hierarchy / 'restoredrill'}")
    return found


def test_zz_down_leaves_nothing_and_a_second_cluster_comes_up(cluster_provider: ClusterProvider,
                                                               cluster: ClusterHandle, worker_id: str) -> None:
    if cluster_provider.name != "local":
        pytest.skip("only the local provider creates host state to check")
    if worker_id != "master":
        pytest.skip("takes the shared cluster down: run without xdist (-n)")
    from restoredrill.cluster.local import LocalCluster

    assert isinstance(cluster_provider, LocalCluster)
    root = cluster_provider.layout.root
    users = root.parent / f".{root.name}-lock" / "users"
    others = [p.name for p in users.iterdir() if not p.name.endswith(f"-{os.getpid()}") and user_alive(p)]
    if others:
        pytest.skip(f"another pytest session uses this cluster too ({others}); it must not lose it")
    kept = root / "kept-data"
    kept.mkdir(exist_ok=True)
    (kept / "object-store.bin").write_bytes(b"survives the cluster")
    assert independent_leftovers(root, cluster_provider.config.bridge), "the check sees nothing while up"

    cluster_provider.down(keep=[kept])
    try:
        assert cluster_provider.leftovers() == []
        assert not cluster_provider.layout.ledger.exists(), "every recorded host resource was removed"
        assert independent_leftovers(root, cluster_provider.config.bridge) == []
        assert (kept / "object-store.bin").read_bytes() == b"survives the cluster"
        assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["kept-data"]
    finally:
        # The session's other tests use this cluster: it comes back up even when a check above fails.
        handle = cluster_provider.up()  # the second cluster on the same host, next to the kept data
    assert handle.kubeconfig.exists()
    nodes = json.loads(run_kubectl(["get", "nodes", "-o", "json"], kubeconfig=handle.kubeconfig,
                                   context=handle.context, timeout=60, kubectl=_kubectl_binary()))["items"]
    assert [c["status"] for n in nodes for c in n["status"]["conditions"] if c["type"] == "Ready"] == ["True"]
    assert (kept / "object-store.bin").exists()
