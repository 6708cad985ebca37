"""kind-config/: the cluster config kind will accept, and a StorageClass that gives Velero-backable PVs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from restoredrill.cluster import kind
from restoredrill.errors import ConfigError, RestoreDrillError

# The fields of kind's v1alpha4 config types (sigs.k8s.io/kind v0.30.0,
# pkg/apis/config/v1alpha4/types.go). kind decodes its config strictly, so any other key fails
# `kind create cluster`; checking against this list catches that without Docker.
CLUSTER_FIELDS = {
    "kind",
    "apiVersion",
    "name",
    "nodes",
    "networking",
    "featureGates",
    "runtimeConfig",
    "kubeadmConfigPatches",
    "kubeadmConfigPatchesJSON6902",
    "containerdConfigPatches",
    "containerdConfigPatchesJSON6902",
}
NODE_FIELDS = {
    "role",
    "image",
    "labels",
    "extraMounts",
    "extraPortMappings",
    "kubeadmConfigPatches",
    "kubeadmConfigPatchesJSON6902",
}
NETWORKING_FIELDS = {
    "ipFamily",
    "apiServerPort",
    "apiServerAddress",
    "podSubnet",
    "serviceSubnet",
    "disableDefaultCNI",
    "kubeProxyMode",
    "dnsSearch",
}


def load(path: Path) -> dict[str, Any]:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert len(documents) == 1, f"{path} should hold exactly one document"
    document = documents[0]
    assert isinstance(document, dict)
    return document


def kind_config_problems(config: dict[str, Any]) -> list[str]:
    """What kind v0.30 would reject in a cluster config (the subset of its validation we rely on)."""
    problems = []
    if config.get("kind") != "Cluster":
        problems.append(f"kind is {config.get('kind')!r}, not 'Cluster'")
    if config.get("apiVersion") != "kind.x-k8s.io/v1alpha4":
        problems.append(f"apiVersion is {config.get('apiVersion')!r}, not 'kind.x-k8s.io/v1alpha4'")
    problems += [f"unknown field {key!r}" for key in sorted(set(config) - CLUSTER_FIELDS)]
    problems += [
        f"unknown networking field {key!r}" for key in sorted(set(config.get("networking", {})) - NETWORKING_FIELDS)
    ]
    nodes = config.get("nodes") or [{"role": "control-plane"}]
    for index, node in enumerate(nodes):
        problems += [f"node {index}: unknown field {key!r}" for key in sorted(set(node) - NODE_FIELDS)]
        if node.get("role", "control-plane") not in {"control-plane", "worker"}:
            problems.append(f"node {index}: role {node.get('role')!r}")
    if not any(node.get("role", "control-plane") == "control-plane" for node in nodes):
        problems.append("no control-plane node")
    return problems


def test_default_config_is_a_single_node_kind_v1alpha4_cluster() -> None:
    config = load(kind.DEFAULT_CONFIG)

    assert kind_config_problems(config) == []
    assert [node["role"] for node in config["nodes"]] == ["control-plane"]
    # The name comes from --name (it carries the xdist worker id); a name here would be ignored.
    assert "name" not in config


def test_config_check_catches_what_kind_would_reject() -> None:
    config = load(kind.DEFAULT_CONFIG)
    broken = copy.deepcopy(config)
    broken["apiVersion"] = "kind.sigs.k8s.io/v1alpha3"
    broken["node"] = broken.pop("nodes")
    broken["networking"] = {"podCIDR": "10.0.0.0/16"}

    assert kind_config_problems(broken) == [
        "apiVersion is 'kind.sigs.k8s.io/v1alpha3', not 'kind.x-k8s.io/v1alpha4'",
        "unknown field 'node'",
        "unknown networking field 'podCIDR'",
    ]


def test_node_image_is_kubernetes_1_34_pinned_by_digest() -> None:
    image = load(kind.DEFAULT_CONFIG)["nodes"][0]["image"]

    repository, _, digest = image.partition("@sha256:")
    assert repository.startswith("kindest/node:v1.34."), image
    assert len(digest) == 64 and all(c in "0123456789abcdef" for c in digest), image


def test_local_storage_class_makes_local_pvs_and_is_the_default() -> None:
    storage_class = load(kind.LOCAL_STORAGE_CLASS_MANIFEST)

    assert storage_class["apiVersion"] == "storage.k8s.io/v1"
    assert storage_class["kind"] == "StorageClass"
    assert storage_class["metadata"]["name"] == kind.LOCAL_STORAGE_CLASS
    assert storage_class["provisioner"] == "rancher.io/local-path"
    annotations = storage_class["metadata"]["annotations"]
    # local-path-provisioner reads the type from this annotation, not from `parameters`.
    assert annotations[kind.VOLUME_TYPE_ANNOTATION] == "local"
    assert "parameters" not in storage_class
    assert annotations[kind.DEFAULT_CLASS_ANNOTATION] == "true"
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    kind.check_local_storage_class(storage_class)


def test_storage_class_check_refuses_kinds_hostpath_standard_class() -> None:
    # kind v0.30's own default class, as its node image installs it.
    standard = {
        "metadata": {"name": "standard", "annotations": {kind.DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer",
    }

    with pytest.raises(RestoreDrillError, match="'standard' would not give Velero-backable volumes") as error:
        kind.check_local_storage_class(standard)
    assert "hostPath" in str(error.value)


def test_storage_class_check_refuses_volume_type_given_as_a_parameter() -> None:
    storage_class = load(kind.LOCAL_STORAGE_CLASS_MANIFEST)
    del storage_class["metadata"]["annotations"][kind.VOLUME_TYPE_ANNOTATION]
    storage_class["parameters"] = {"volumeType": "local"}

    with pytest.raises(RestoreDrillError, match="defaultVolumeType is None, not 'local'"):
        kind.check_local_storage_class(storage_class)


def test_default_storage_classes_reads_the_annotation() -> None:
    listing = {
        "items": [
            {"metadata": {"name": "standard", "annotations": {kind.DEFAULT_CLASS_ANNOTATION: "true"}}},
            {
                "metadata": {
                    "name": "local-path",
                    "annotations": {kind.DEFAULT_CLASS_ANNOTATION: "true"},
                }
            },
            {"metadata": {"name": "off", "annotations": {kind.DEFAULT_CLASS_ANNOTATION: "false"}}},
            {"metadata": {"name": "plain"}},
        ]
    }

    assert kind.default_storage_classes(listing) == ["local-path", "standard"]


def test_nodes_ready_needs_every_node_ready() -> None:
    def node(name: str, status: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": status, "reason": "KubeletReady"}]},
        }

    assert kind.nodes_ready({"items": [node("a", "True")]}) == (True, "a Ready=True KubeletReady")
    ready, seen = kind.nodes_ready({"items": [node("a", "True"), node("b", "False")]})
    assert not ready and "b Ready=False" in seen
    assert kind.nodes_ready({"items": []}) == (False, "no nodes registered yet")


def test_pv_volume_type_tells_local_from_hostpath() -> None:
    local = client.V1PersistentVolume(spec=client.V1PersistentVolumeSpec(local=client.V1LocalVolumeSource(path="/x")))
    host_path = client.V1PersistentVolume(
        spec=client.V1PersistentVolumeSpec(host_path=client.V1HostPathVolumeSource(path="/x"))
    )

    assert kind.pv_volume_type(local) == "local"
    assert kind.pv_volume_type(host_path) == "hostPath"


@pytest.mark.parametrize(
    ("worker_id", "expected"),
    [("master", "restoredrill"), ("gw0", "restoredrill-gw0"), ("gw12", "restoredrill-gw12")],
)
def test_cluster_name_carries_the_worker_id(worker_id: str, expected: str) -> None:
    assert kind.kind_cluster_name("restoredrill", worker_id) == expected


def test_cluster_name_leaves_room_for_the_node_hostname() -> None:
    longest = "a" * (kind.MAX_CLUSTER_NAME_LENGTH - len("-gw0"))
    assert len(kind.kind_cluster_name(longest, "gw0") + "-control-plane") == 63

    with pytest.raises(ConfigError, match="at most 49 characters"):
        kind.kind_cluster_name(longest + "a", "gw0")


def test_offline_config_puts_every_node_on_the_local_image_and_stays_valid() -> None:
    shipped = load(kind.DEFAULT_CONFIG)

    derived = kind.offline_config(shipped, "restoredrill.local/kind-node:v1.34.4-abc")

    assert kind_config_problems(derived) == []
    assert [node["image"] for node in derived["nodes"]] == ["restoredrill.local/kind-node:v1.34.4-abc"]
    # The image brings its own single-node bridge network (no kindnetd image can be had offline).
    assert derived["networking"]["disableDefaultCNI"] is True
    # kubeadm is told the etcd and CoreDNS tags built here, and nothing else.
    patches = [yaml.safe_load(patch) for patch in derived["kubeadmConfigPatches"]]
    assert patches == [{"kind": "ClusterConfiguration", "etcd": {"local": {"imageTag": "3.6.6-0"}},
                        "dns": {"imageTag": "v1.12.4"}}]
    # The shipped document is not changed.
    assert shipped["nodes"][0]["image"].startswith("kindest/node:")


def test_offline_images_are_named_as_kubeadm_looks_for_them() -> None:
    from restoredrill.cluster import kindnode

    references = kindnode.control_plane_references()

    assert references["kube-apiserver"] == "registry.k8s.io/kube-apiserver:v1.34.4"
    assert references["kube-proxy"] == "registry.k8s.io/kube-proxy:v1.34.4"
    assert references["etcd"] == "registry.k8s.io/etcd:3.6.6-0"
    # The probe pod runs the sandbox image kind's containerd config names (kind v0.30.0
    # images/base/files/etc/containerd/config.toml), the one pause image kind node images hold.
    assert kind.PROBE_IMAGE == "registry.k8s.io/pause:3.10"


def test_oom_score_clamp_only_where_cap_sys_resource_is_missing(tmp_path: Path) -> None:
    import subprocess

    from restoredrill.cluster import kindnode

    for bounding, expected in (("000001fffeffffff", "true"), ("0000003fffffffff", "false")):
        status = tmp_path / "status"
        status.write_text(f"Name:\tsh\nCapBnd:\t{bounding}\n")
        config = tmp_path / "config.toml"
        config.write_text("  restrict_oom_score_adj = false\n")
        script = kindnode.OOM_SCORE_SCRIPT.replace("/proc/self/status", str(status)).replace(
            "/etc/containerd/config.toml", str(config))
        subprocess.run(["sh", "-c", script], check=True)
        assert config.read_text().strip() == f"restrict_oom_score_adj = {expected}", bounding


def test_kind_config_ships_inside_the_package() -> None:
    import tomllib

    package = Path(kind.__file__).resolve().parents[1]
    assert package / "kind-config" == kind.KIND_CONFIG_DIR
    assert kind.DEFAULT_CONFIG.is_file() and kind.LOCAL_STORAGE_CLASS_MANIFEST.is_file()
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["restoredrill"]
    assert "**/*.yaml" in patterns


def test_offline_config_refuses_more_than_one_node() -> None:
    two = {**load(kind.DEFAULT_CONFIG), "nodes": [{"role": "control-plane"}, {"role": "worker"}]}

    with pytest.raises(ConfigError, match="2 nodes; the locally assembled node image brings a single-node"):
        kind.offline_config(two, "restoredrill.local/kind-node:x")
