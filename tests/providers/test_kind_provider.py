"""The kind provider without Docker: its command lines, its tool lookup, and its whole lifecycle
run against stand-in `kind` and `kubectl` programs that record every call and keep a little state.

What this cannot show is kind itself creating a cluster (no Docker engine here): the README says so.
"""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from restoredrill.cluster import kind
from restoredrill.errors import CommandError, ConfigError, MissingToolError, RestoreDrillError
from tests.providers.fake_apiserver import FakeApiServer, running_fake_apiserver

# One program for both tools; it tells them apart by the name it was run as. State (clusters,
# StorageClasses) lives in $FAKE_STATE; each call is appended to $FAKE_CALLS as a JSON list.
FAKE_TOOL = r"""
import json, os, pathlib, sys
import yaml

tool = pathlib.Path(sys.argv[0]).name
args = sys.argv[1:]
state_path = pathlib.Path(os.environ["FAKE_STATE"])
state = json.loads(state_path.read_text())
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write(json.dumps([tool, *args]) + "\n")

def flag(name):
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))

def save():
    state_path.write_text(json.dumps(state))

if tool == "kind":
    if args[:2] == ["get", "clusters"]:
        print("\n".join(state["clusters"]) or "No kind clusters found.")
    elif args[:2] == ["create", "cluster"]:
        if state.get("fail_create"):
            sys.exit("ERROR: failed to create cluster: could not find a log line that matches")
        state["clusters"].append(flag("name"))
        pathlib.Path(flag("kubeconfig")).write_text("apiVersion: v1\nkind: Config\n")
        save()
    elif args[:2] == ["export", "kubeconfig"]:
        pathlib.Path(flag("kubeconfig")).write_text("apiVersion: v1\nkind: Config\n")
    elif args[:2] == ["load", "image-archive"]:
        assert pathlib.Path(args[2]).is_file()
    elif args[:2] == ["export", "logs"]:
        pathlib.Path(args[2], "kubelet.log").write_text("fake log\n")
    elif args[:2] == ["delete", "cluster"]:
        state["clusters"] = [c for c in state["clusters"] if c != flag("name")]
        save()
    else:
        sys.exit(f"fake kind: unexpected {args}")
    sys.exit(0)

args = [a for a in args if not a.startswith(("--kubeconfig=", "--context="))]
if args == ["get", "nodes", "-o", "json"]:
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady"}
    print(json.dumps({"items": [{"metadata": {"name": "n1"}, "status": {"conditions": [ready]}}]}))
elif args[:2] == ["apply", "-f"] and args[2] != "-":
    document = yaml.safe_load(pathlib.Path(args[2]).read_text())
    state["storageclasses"][document["metadata"]["name"]] = document
    save()
elif args == ["get", "storageclass", "-o", "json"]:
    print(json.dumps({"items": list(state["storageclasses"].values())}))
elif args[:5] == ["create", "configmap", "restoredrill-owner", "-n", "kube-system"]:
    data = dict(a.split("=", 1)[1].split("=", 1) for a in args[5:] if a.startswith("--from-literal="))
    if "--dry-run=client" in args:
        print(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "data": data}))
    else:
        state["owner"] = data
        save()
elif args[:3] == ["apply", "-f", "-"]:
    state["owner"] = json.loads(sys.stdin.read())["data"]
    save()
elif args[:5] == ["get", "configmap", "restoredrill-owner", "-n", "kube-system"]:
    if state.get("owner"):
        print(json.dumps({"data": state["owner"]}))
elif args[:3] == ["annotate", "--overwrite", "storageclass"]:
    key, value = args[4].split("=", 1)
    if not state.get("ignore_annotate"):
        state["storageclasses"][args[3]]["metadata"]["annotations"][key] = value
        save()
else:
    sys.exit(f"fake kubectl: unexpected {args}")
"""

KIND_STANDARD_CLASS = {
    "metadata": {"name": "standard", "annotations": {kind.DEFAULT_CLASS_ANNOTATION: "true"}},
    "provisioner": "rancher.io/local-path",
}


@dataclass
class FakeTools:
    bin_dir: Path
    state_path: Path
    calls_path: Path

    def set_state(self, **changes: Any) -> None:
        state = json.loads(self.state_path.read_text())
        state.update(changes)
        self.state_path.write_text(json.dumps(state))

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.state_path.read_text())
        return result

    def calls(self) -> list[list[str]]:
        if not self.calls_path.exists():
            return []
        return [json.loads(line) for line in self.calls_path.read_text().splitlines()]

    def call_heads(self) -> list[str]:
        """Each call as `tool verb [noun]`, without flags: the order of operations."""
        heads = []
        for call in self.calls():
            words = [w for w in call if not w.startswith("-")]
            heads.append(
                " ".join(words[:3])
                if words[1] in {"get", "export", "load", "create", "delete"}
                else " ".join(words[:2])
            )
        return heads


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTools]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kind", "kubectl"):
        program = bin_dir / name
        program.write_text(f"#!{sys.executable}\n{FAKE_TOOL}")
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
    tools = FakeTools(bin_dir, tmp_path / "state.json", tmp_path / "calls.jsonl")
    tools.state_path.write_text(json.dumps({"clusters": [], "storageclasses": {"standard": KIND_STANDARD_CLASS}}))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("RESTOREDRILL_KUBECTL", raising=False)
    # No toolchain-built kind or kubectl: the stand-ins on PATH are the ones found.
    monkeypatch.setenv("RESTOREDRILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_STATE", str(tools.state_path))
    monkeypatch.setenv("FAKE_CALLS", str(tools.calls_path))
    yield tools


def provider(tmp_path: Path, **overrides: Any) -> kind.KindCluster:
    settings: dict[str, Any] = {
        "work_dir": tmp_path / "work",
        "run_id": "run1",
        "worker_id": "gw1",
        # The probe needs a real API server; it is covered where a cluster exists.
        "verify_storage": False,
    }
    settings.update(overrides)
    return kind.KindCluster(**settings)


def test_kind_command_lines() -> None:
    commands = kind.KindCommands(kind="/usr/bin/kind", cluster_name="restoredrill-gw0", kubeconfig=Path("/w/kc"))

    assert commands.get_clusters() == ["/usr/bin/kind", "get", "clusters"]
    assert commands.create_cluster(config=Path("/c/default.yaml"), wait_seconds=180) == [
        "/usr/bin/kind",
        "create",
        "cluster",
        "--name=restoredrill-gw0",
        "--kubeconfig=/w/kc",
        "--config=/c/default.yaml",
        "--wait=180s",
        "--retain",
    ]
    assert commands.create_cluster(config=Path("/c.yaml"), wait_seconds=1.5, image="kindest/node:v1.34.0")[-2:] == [
        "--retain",
        "--image=kindest/node:v1.34.0",
    ]
    assert commands.export_kubeconfig() == [
        "/usr/bin/kind",
        "export",
        "kubeconfig",
        "--name=restoredrill-gw0",
        "--kubeconfig=/w/kc",
    ]
    assert commands.load_image_archive(Path("/img/velero.tar")) == [
        "/usr/bin/kind",
        "load",
        "image-archive",
        "/img/velero.tar",
        "--name=restoredrill-gw0",
    ]
    assert commands.export_logs(Path("/logs")) == [
        "/usr/bin/kind",
        "export",
        "logs",
        "/logs",
        "--name=restoredrill-gw0",
    ]
    assert commands.delete_cluster() == [
        "/usr/bin/kind",
        "delete",
        "cluster",
        "--name=restoredrill-gw0",
        "--kubeconfig=/w/kc",
    ]


def test_missing_kind_is_an_error_with_a_remedy_not_a_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    # Not on PATH and not built by `restoredrill toolchain --only kind` either.
    monkeypatch.setenv("RESTOREDRILL_CACHE", str(tmp_path / "cache"))

    with pytest.raises(MissingToolError) as error:
        provider(tmp_path).up()

    assert error.value.tool == "kind"
    assert "never downloads" in str(error.value)
    assert f"go install sigs.k8s.io/kind@{kind.KIND_VERSION}" in str(error.value)


def test_missing_kubectl_names_restoredrill_toolchain(fake_tools: FakeTools, tmp_path: Path) -> None:
    (fake_tools.bin_dir / "kubectl").unlink()

    with pytest.raises(MissingToolError) as error:
        provider(tmp_path).up()

    assert error.value.tool == "kubectl"
    assert "restoredrill toolchain" in str(error.value)


def test_pytest_kind_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("pytest-kind tried to download a binary")

    monkeypatch.setattr("pytest_kind.cluster.requests.get", no_network)
    cluster = kind.PathToolsKindCluster(
        name="x", kubeconfig=tmp_path / "kc", kind_path=tmp_path / "kind", kubectl_path=tmp_path / "kubectl"
    )

    with pytest.raises(MissingToolError, match="'kind'"):
        cluster.ensure_kind()
    with pytest.raises(MissingToolError, match="'kubectl'"):
        cluster.ensure_kubectl()
    assert not (Path.cwd() / ".pytest-kind" / "x").exists()


def test_up_creates_the_cluster_and_makes_local_volumes_the_only_default(fake_tools: FakeTools, tmp_path: Path) -> None:
    drill_cluster = provider(tmp_path)

    handle = drill_cluster.up()

    assert handle.name == "restoredrill-gw1"
    assert handle.context == "kind-restoredrill-gw1"
    assert handle.created_by_us
    assert handle.kubeconfig.is_file()
    create = next(call for call in fake_tools.calls() if call[1:3] == ["create", "cluster"])
    assert f"--config={kind.DEFAULT_CONFIG}" in create
    assert f"--kubeconfig={handle.kubeconfig}" in create
    classes = fake_tools.state()["storageclasses"]
    assert classes["standard"]["metadata"]["annotations"][kind.DEFAULT_CLASS_ANNOTATION] == "false"
    assert classes[kind.LOCAL_STORAGE_CLASS]["metadata"]["annotations"][kind.VOLUME_TYPE_ANNOTATION] == "local"
    assert fake_tools.call_heads() == [
        "kind get clusters",
        "kind get clusters",
        "kind create cluster",
        "kubectl create configmap",
        "kubectl apply",
        "kubectl get nodes",
        "kubectl apply",
        "kubectl get storageclass",
        "kubectl annotate",
        "kubectl get storageclass",
    ]
    kubectl_calls = [call for call in fake_tools.calls() if call[0] == "kubectl"]
    assert all(call[1] == f"--kubeconfig={handle.kubeconfig}" for call in kubectl_calls)


def test_images_are_loaded_as_archives(fake_tools: FakeTools, tmp_path: Path) -> None:
    archive = tmp_path / "velero.tar"
    archive.write_bytes(b"oci")
    drill_cluster = provider(tmp_path)
    drill_cluster.up()

    drill_cluster.load_images({"restoredrill/velero:v1.16.2": archive})

    assert fake_tools.calls()[-1] == [
        "kind",
        "load",
        "image-archive",
        str(archive),
        "--name=restoredrill-gw1",
    ]


def test_down_exports_logs_then_deletes_the_cluster_it_created(fake_tools: FakeTools, tmp_path: Path) -> None:
    drill_cluster = provider(tmp_path)
    handle = drill_cluster.up()

    drill_cluster.down()

    assert fake_tools.call_heads()[-2:] == ["kind export logs", "kind delete cluster"]
    assert fake_tools.state()["clusters"] == []
    assert handle.log_dir is not None and (handle.log_dir / "kubelet.log").is_file()


def test_keep_cluster_keeps_it(fake_tools: FakeTools, tmp_path: Path) -> None:
    drill_cluster = provider(tmp_path, keep=True)
    drill_cluster.up()

    drill_cluster.down()

    assert fake_tools.state()["clusters"] == ["restoredrill-gw1"]


def test_a_kept_cluster_of_ours_is_reused_and_deleted_unless_kept_again(fake_tools: FakeTools, tmp_path: Path) -> None:
    first = provider(tmp_path, keep=True)
    first.up()
    first.down()
    assert fake_tools.state()["clusters"] == ["restoredrill-gw1"]

    second = provider(tmp_path)
    handle = second.up()

    # Ours (the owner ConfigMap says so): the platform goes on it, as on a new one.
    assert handle.created_by_us
    assert any("reused kind cluster restoredrill-gw1" in note for note in handle.notes)
    heads = fake_tools.call_heads()
    assert heads.count("kind create cluster") == 1
    assert "kind export kubeconfig" in heads
    # The StorageClass is still made right on a reused cluster.
    storage_applies = [call for call in fake_tools.calls() if "apply" in call and "-" not in call]
    assert len(storage_applies) == 2
    # Kept by the first run's `down`, claimed again (not kept) by the second.
    assert fake_tools.state()["owner"]["kept"] == "false"
    second.down()
    assert fake_tools.state()["clusters"] == []


def test_a_cluster_of_ours_that_was_not_kept_is_refused_and_left_alone(fake_tools: FakeTools, tmp_path: Path) -> None:
    # Another session's cluster (or one whose session crashed): made by restoredrill, not kept.
    provider(tmp_path).up()
    before = fake_tools.call_heads().count("kind delete cluster")

    with pytest.raises(ConfigError, match="not kept: that session still uses it"):
        provider(tmp_path).up()

    assert fake_tools.call_heads().count("kind delete cluster") == before
    assert fake_tools.state()["clusters"] == ["restoredrill-gw1"]


def test_a_cluster_of_that_name_we_did_not_create_is_refused_and_left_alone(fake_tools: FakeTools,
                                                                           tmp_path: Path) -> None:
    fake_tools.set_state(clusters=["restoredrill-gw1"])
    drill_cluster = provider(tmp_path)

    with pytest.raises(ConfigError, match="restoredrill did not create it") as error:
        drill_cluster.up()
    drill_cluster.down()

    assert "kind delete cluster --name restoredrill-gw1" in str(error.value)
    heads = fake_tools.call_heads()
    assert "kind create cluster" not in heads and "kind delete cluster" not in heads
    assert fake_tools.state()["clusters"] == ["restoredrill-gw1"]


def test_a_failed_create_is_cleaned_up_and_explained(fake_tools: FakeTools, tmp_path: Path) -> None:
    fake_tools.set_state(fail_create=True)

    with pytest.raises(CommandError) as error:
        provider(tmp_path).up()

    assert "could not find a log line" in str(error.value)
    assert "docker info" in str(error.value)
    assert fake_tools.call_heads()[-2:] == ["kind export logs", "kind delete cluster"]


def test_a_storage_class_left_default_fails_up_and_removes_the_cluster(fake_tools: FakeTools, tmp_path: Path) -> None:
    fake_tools.set_state(ignore_annotate=True)

    with pytest.raises(RestoreDrillError, match=r"default StorageClasses are \['local-path', 'standard'\]"):
        provider(tmp_path).up()

    assert fake_tools.state()["clusters"] == []


def test_status_reports_the_cluster(fake_tools: FakeTools, tmp_path: Path) -> None:
    drill_cluster = provider(tmp_path)
    assert drill_cluster.status() == "kind cluster restoredrill-gw1 does not exist."

    drill_cluster.up()

    assert "exists, created by this run" in drill_cluster.status()
    assert "n1 Ready=True" in drill_cluster.status()


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    with running_fake_apiserver() as server:
        yield server


def test_storage_probe_accepts_a_local_pv_and_removes_its_namespace(
    apiserver: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drill_cluster = provider(tmp_path)
    monkeypatch.setattr(drill_cluster, "kubeconfig", apiserver.kubeconfig(tmp_path))

    drill_cluster.verify_local_volumes()

    probe_namespaces = [name for (name, resource) in apiserver.objects if resource == "pods"]
    assert len(probe_namespaces) == 1 and probe_namespaces[0].startswith("restoredrill-storage-probe-")
    claim = apiserver.objects[(probe_namespaces[0], "persistentvolumeclaims")]["probe"]
    # No storageClassName: the probe checks what the cluster's *default* class provisions.
    assert "storageClassName" not in claim["spec"]
    assert apiserver.deletes() == probe_namespaces
    assert apiserver.namespaces == {}


def test_storage_probe_refuses_a_hostpath_pv(
    apiserver: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apiserver.pv_source = {"hostPath": {"path": "/var/local-path-provisioner/x", "type": "DirectoryOrCreate"}}
    drill_cluster = provider(tmp_path)
    monkeypatch.setattr(drill_cluster, "kubeconfig", apiserver.kubeconfig(tmp_path))

    with pytest.raises(RestoreDrillError, match="as hostPath, not local: Velero's fs-backup skips hostPath"):
        drill_cluster.verify_local_volumes()

    assert apiserver.namespaces == {}, "the probe namespace is removed even when the check fails"
