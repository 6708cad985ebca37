"""Unit tests of the platform's pure logic: manifests, conversions, matching. No cluster needed."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from restoredrill.errors import ConfigError, WaitTimeout
from restoredrill.platform.base import (
    ImageMissingError,
    PlatformError,
    check_pods_can_start,
    describe_pod,
    image_ref,
)
from restoredrill.platform.cnpg import backup_manifest, cluster_manifest, customize_operator
from restoredrill.platform.flux import (
    RECONCILE_ANNOTATION,
    bare_repository_tar,
    customize_controller,
    git_repository_url,
    kustomization_manifest,
    ready_condition,
)
from restoredrill.platform.images import platform_image_set, renumber_user, trim_rootfs
from restoredrill.platform.objectstore import (
    MinioObjectStore,
    ObjectStoreCredentials,
    S3Endpoint,
    SeaweedfsObjectStore,
    object_store_for,
)
from restoredrill.platform.s3 import S3Client, sign_request, signing_key
from restoredrill.platform.velero import (
    BackupStorageUnavailable,
    Velero,
    backup_from_schedule_template,
    backup_storage_location,
    bsl_state,
    credentials_secret,
    node_agent_daemonset,
    restore_failure,
    server_deployment,
    velero_label_value,
)
from restoredrill.podvolumes import PodVolumeRecord, compare_restored_bytes
from restoredrill.yamlio import dump

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_SCHEDULE = REPO / "examples/home-cluster/kubernetes/apps/velero/velero/app/schedules/pelican-schedule.yaml"
IMAGES = {name: f"example.test/{name}:tag" for name in platform_image_set("local")}
ENDPOINT = S3Endpoint(url="http://minio.minio.svc.cluster.local:9000", region="us-east-1", velero_bucket="velero",
                      cnpg_bucket="cnpg")
CREDS = ObjectStoreCredentials(access_key="rdACCESSKEYFORTEST", secret_key="SECRETVALUEthatmustnotleak0123456789")


class FakeContext:
    """Just enough of PlatformContext for manifest building and the waits (no cluster)."""

    def __init__(self, objects: dict[tuple[str, str], Any] | None = None,
                 lists: dict[str, list[dict[str, Any]]] | None = None, timeout: float = 0.3) -> None:
        self.images = IMAGES
        self.objects = objects or {}
        self.lists = lists or {}
        self._timeout = timeout
        self.created: list[dict[str, Any]] = []

    def timeout(self, name: str) -> float:
        return self._timeout

    def get_object(self, group: str, version: str, plural: str, namespace: str, name: str) -> Any:
        value = self.objects.get((plural, name))
        return value() if callable(value) else value

    def list_objects(self, group: str, version: str, plural: str, namespace: str, *,
                     label_selector: str | None = None) -> list[dict[str, Any]]:
        return self.lists.get(plural, [])

    def create_object(self, group: str, version: str, plural: str, namespace: str, body: Any) -> Any:
        self.created.append(body)
        return body


def velero_with(ctx: FakeContext) -> Velero:
    return Velero(ctx, endpoint=ENDPOINT, credentials=CREDS)  # type: ignore[arg-type]


def container(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    spec = manifest["spec"]["template"]["spec"]
    return next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name)


# ---- Velero ------------------------------------------------------------------------------------
def test_bsl_points_at_the_object_store_like_the_runbook() -> None:
    bsl = backup_storage_location(ENDPOINT)
    assert bsl["metadata"]["name"] == "default"
    assert bsl["spec"]["provider"] == "aws"
    assert bsl["spec"]["objectStorage"] == {"bucket": "velero"}
    assert bsl["spec"]["config"] == {"region": "us-east-1", "s3ForcePathStyle": "true",
                                     "s3Url": "http://minio.minio.svc.cluster.local:9000"}
    assert bsl["spec"]["default"] is True


def test_node_agent_mounts_kubelet_pods_at_host_pods() -> None:
    daemonset = node_agent_daemonset(IMAGES)
    agent = container(daemonset, "node-agent")
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    host_pods = mounts["/host_pods"]
    assert volumes[host_pods["name"]]["hostPath"]["path"] == "/var/lib/kubelet/pods"
    assert host_pods["mountPropagation"] == "HostToContainer"
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    # fs-backup is used only where a Running `role=node-agent` pod is on the node.
    assert labels["role"] == "node-agent" and labels["name"] == "node-agent"
    assert agent["args"][:2] == ["node-agent", "server"]
    assert agent["image"] == IMAGES["velero"]


def test_server_uses_kopia_fs_backup_and_the_aws_plugin() -> None:
    deployment = server_deployment(IMAGES)
    server = container(deployment, "velero")
    assert "--uploader-type=kopia" in server["args"]
    assert "--default-volumes-to-fs-backup" in server["args"]
    assert deployment["metadata"]["name"] == "velero"  # Velero finds its restore-helper image here
    plugin = container(deployment, "velero-plugin-for-aws")
    assert plugin["image"] == IMAGES["velero-plugin-for-aws"]
    assert plugin["volumeMounts"] == [{"name": "plugins", "mountPath": "/target"}]
    assert {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/credentials/cloud"} in server["env"]


def test_same_manifests_for_local_and_kind_apart_from_images() -> None:
    local, kind = platform_image_set("local"), platform_image_set("kind")
    assert set(local) == set(kind)

    def strip(manifest: dict[str, Any]) -> str:
        text = json.dumps(manifest, sort_keys=True)
        for ref in list(local.values()) + list(kind.values()):
            text = text.replace(ref, "IMAGE")
        return text

    assert strip(server_deployment(local)) == strip(server_deployment(kind))
    assert strip(node_agent_daemonset(local)) == strip(node_agent_daemonset(kind))


def test_missing_logical_image_is_named() -> None:
    with pytest.raises(ConfigError, match="'velero'"):
        image_ref({}, "velero")


def test_image_set_tags_follow_the_pins() -> None:
    images = platform_image_set("local")
    assert images["velero"] == "docker.io/velero/velero:v1.16.2"
    assert images["cnpg-operator"].endswith(":1.28.0")
    # CNPG reads the PostgreSQL major version from the tag.
    assert images["postgresql"].split(":")[1].startswith("15.")


# ---- credentials never printed -------------------------------------------------------------------
def all_manifests() -> list[dict[str, Any]]:
    ctx = FakeContext()
    minio = MinioObjectStore(ctx, data_dir=Path("/srv/rd"), credentials=CREDS)  # type: ignore[arg-type]
    seaweed = SeaweedfsObjectStore(ctx, data_dir=Path("/srv/rd"), credentials=CREDS)  # type: ignore[arg-type]
    return [*minio.manifests(), *seaweed.manifests(), credentials_secret(CREDS), backup_storage_location(ENDPOINT),
            server_deployment(IMAGES), node_agent_daemonset(IMAGES),
            cluster_manifest(name="db", namespace="ns", image="pg", endpoint=ENDPOINT)]


def test_credentials_never_appear_in_anything_printed() -> None:
    printed = [repr(CREDS), str(CREDS), f"{CREDS}", repr(S3Client(endpoint="http://x", access_key=CREDS.access_key,
                                                                    secret_key=CREDS.secret_key))]
    printed += [dump(manifest) for manifest in all_manifests()]
    for text in printed:
        assert CREDS.secret_key not in text
        assert CREDS.access_key not in text


def test_credentials_only_in_secrets() -> None:
    for manifest in all_manifests():
        text = json.dumps(manifest)
        if manifest["kind"] != "Secret":
            assert CREDS.secret_key not in text, manifest["kind"]
    assert CREDS.secret_key in credentials_secret(CREDS)["stringData"]["cloud"]


def test_generated_credentials_differ_per_run() -> None:
    one, two = ObjectStoreCredentials.generate(), ObjectStoreCredentials.generate()
    assert one.secret_key != two.secret_key and len(one.secret_key) >= 40


# ---- object store --------------------------------------------------------------------------------
def test_minio_keeps_its_data_in_the_callers_host_directory() -> None:
    store = MinioObjectStore(FakeContext(), data_dir=Path("/var/rd/minio"), credentials=CREDS)  # type: ignore[arg-type]
    deployment = next(m for m in store.manifests() if m["kind"] == "Deployment")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "hostPath": {"path": "/var/rd/minio", "type": "DirectoryOrCreate"}} in volumes
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert store.endpoint.url == "http://minio.minio.svc.cluster.local:9000"
    service = next(m for m in store.manifests() if m["kind"] == "Service")
    assert service["spec"]["ports"][0]["port"] == 9000


def test_object_store_rejects_relative_data_dir_and_unknown_kind() -> None:
    with pytest.raises(ConfigError):
        MinioObjectStore(FakeContext(), data_dir=Path("rel"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seaweedfs"):
        object_store_for("ceph")


def test_seaweedfs_identity_round_trips() -> None:
    store = SeaweedfsObjectStore(FakeContext(), data_dir=Path("/d"), credentials=CREDS)  # type: ignore[arg-type]
    again = store.credentials_from_secret({"s3.json": store.s3_identities()})
    assert again == CREDS
    assert store.endpoint.url.endswith(":8333")


def test_sigv4_signing_key_matches_aws_documented_example() -> None:
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", date="20120215", region="us-east-1",
                      service="iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_sign_request_headers() -> None:
    headers = sign_request(method="GET", url="http://127.0.0.1:9000/velero?list-type=2", access_key="AK",
                           secret_key="SK", region="us-east-1", now=0)
    assert headers["x-amz-date"] == "19700101T000000Z"
    assert headers["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AK/19700101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=")
    assert "SK" not in headers["Authorization"]


# ---- schedule template -> Backup -----------------------------------------------------------------
def test_backup_from_the_runbooks_schedule_template() -> None:
    schedule = yaml.safe_load(EXAMPLE_SCHEDULE.read_text())
    template = schedule["spec"]["template"]
    backup = backup_from_schedule_template(template, name="pelican-drill", schedule_name="pelican-daily")
    assert backup["kind"] == "Backup" and backup["metadata"]["namespace"] == "velero"
    assert backup["spec"] == template
    assert backup["metadata"]["labels"] == {**template["metadata"]["labels"],
                                            "velero.io/schedule-name": "pelican-daily"}
    backup["spec"]["includedNamespaces"].append("other")
    assert template["includedNamespaces"] == ["pelican"], "the template must not be modified"


def test_backup_falls_back_to_schedule_labels_without_template_labels() -> None:
    backup = backup_from_schedule_template({"includedNamespaces": ["a"]}, name="b", schedule_name="s",
                                           schedule_labels={"team": "x"})
    assert backup["metadata"]["labels"] == {"team": "x", "velero.io/schedule-name": "s"}


def test_a_drills_own_labels_join_the_schedules() -> None:
    backup = backup_from_schedule_template({"includedNamespaces": ["a"]}, name="b", schedule_name="s",
                                           schedule_labels={"team": "x"}, labels={"restoredrill.io/run-id": "r1"})
    assert backup["metadata"]["labels"] == {"team": "x", "velero.io/schedule-name": "s",
                                            "restoredrill.io/run-id": "r1"}


def test_the_schedules_annotations_are_the_backups_as_velero_copies_them() -> None:
    backup = backup_from_schedule_template({"includedNamespaces": ["a"]}, name="b", schedule_name="s",
                                           schedule_annotations={"example.com/owner": "team-a"})
    assert backup["metadata"]["annotations"] == {"example.com/owner": "team-a"}
    assert "annotations" not in backup_from_schedule_template({}, name="b", schedule_name="s")["metadata"]


def test_create_backup_refuses_when_bsl_unavailable() -> None:
    bsl = {"status": {"phase": "Unavailable", "message": "dial tcp: connection refused"}}
    ctx = FakeContext(objects={("backupstoragelocations", "default"): bsl})
    with pytest.raises(BackupStorageUnavailable, match="connection refused"):
        velero_with(ctx).create_backup_from_schedule_template({"includedNamespaces": ["a"]}, "b")
    assert ctx.created == []


def test_wait_for_backup_fails_fast_when_the_store_goes_down() -> None:
    ctx = FakeContext(objects={
        ("backups", "b"): {"status": {"phase": "InProgress"}},
        ("backupstoragelocations", "default"): {"status": {"phase": "Unavailable", "message": "bucket gone"}},
    }, timeout=30)
    with pytest.raises(BackupStorageUnavailable, match="bucket gone"):
        velero_with(ctx).wait_for_backup("b")


def test_wait_for_bsl_available_fails_fast_on_a_fresh_unavailable_only() -> None:
    fresh = {"status": {"phase": "Unavailable", "message": "no such bucket",
                        "lastValidationTime": "2999-01-01T00:00:00Z"}}
    with pytest.raises(BackupStorageUnavailable, match="no such bucket"):
        velero_with(FakeContext(objects={("backupstoragelocations", "default"): fresh}, timeout=30)
                    ).wait_for_bsl_available()
    # Left over from before the store came back: waited out (here: until the timeout).
    stale = {"status": {"phase": "Unavailable", "message": "old", "lastValidationTime": "2000-01-01T00:00:00Z"}}
    with pytest.raises(WaitTimeout):
        velero_with(FakeContext(objects={("backupstoragelocations", "default"): stale})).wait_for_bsl_available()


def test_bsl_state() -> None:
    assert bsl_state(None) == ("", "")
    assert bsl_state({"status": {"phase": "Available"}}) == ("Available", "")


# ---- PodVolume* evidence -------------------------------------------------------------------------
def pod_volume(ns: str, pod: str, volume: str, phase: str = "Completed") -> dict[str, Any]:
    return {"spec": {"pod": {"namespace": ns, "name": pod}, "volume": volume}, "status": {"phase": phase}}


def test_a_pod_volume_record_reads_what_velero_writes() -> None:
    item = {**pod_volume("app", "web-0", "data"), "metadata": {"name": "b-1"}}
    item["status"].update({"snapshotID": "8cda3a1c", "progress": {"totalBytes": 500, "bytesDone": 500},
                           "startTimestamp": "2026-12-01T23:40:10Z", "completionTimestamp": "2026-12-01T23:40:12Z"})
    record = PodVolumeRecord.of(item)
    assert (record.name, record.pod, record.pod_name, record.pod_namespace, record.volume) == \
        ("b-1", "app/web-0", "web-0", "app", "data")
    assert (record.phase, record.snapshot_id, record.total_bytes) == ("Completed", "8cda3a1c", 500)
    assert PodVolumeRecord.of({}).total_bytes is None


def test_a_volume_restored_empty_fails_and_a_small_difference_is_a_note() -> None:
    def record(name: str, namespace: str, size: int | None, phase: str = "Completed") -> PodVolumeRecord:
        return PodVolumeRecord(name, f"{namespace}/web-0", "data", phase, total_bytes=size)

    assert compare_restored_bytes(backups=[record("b", "app", 500)], restores=[record("r", "copy", 500)]) == ([], [])
    (problem,), notes = compare_restored_bytes(backups=[record("b", "app", 500)], restores=[record("r", "copy", 0)])
    assert problem == ("volume 'data' of pod app/web-0: restored 0 bytes of the 500 backed up (PodVolumeBackup b, "
                       "PodVolumeRestore r)") and notes == []
    # Kopia's upload estimate (a file that changed while it ran): reported, the snapshot check decides.
    problems, (note,) = compare_restored_bytes(backups=[record("b", "app", 528)], restores=[record("r", "app", 500)])
    assert problems == [] and "restored 500 bytes of the 528 backed up" in note and "estimate" in note
    # A failed or missing restore is compare_pod_volumes' finding, not a byte count.
    assert compare_restored_bytes(backups=[record("b", "app", 500)], restores=[record("r", "app", 0, "Failed")]) \
        == ([], [])


def test_velero_label_value_matches_velero_getvalidname() -> None:
    assert velero_label_value("short") == "short"
    long_name = "a" * 70
    value = velero_label_value(long_name)
    assert len(value) == 63 and value.startswith("a" * 57)
    import hashlib

    assert value.endswith(hashlib.sha256(long_name.encode()).hexdigest()[:6])


def test_pod_volume_restores_are_awaited_even_when_the_restore_says_completed() -> None:
    # velero issue 9365: Restore Completed while a PodVolumeRestore still runs.
    ctx = FakeContext(objects={("restores", "r"): {"status": {"phase": "Completed"}}},
                      lists={"podvolumerestores": [pod_volume("app", "web-0", "data", "InProgress")]})
    with pytest.raises(WaitTimeout, match="InProgress"):
        velero_with(ctx).wait_for_pod_volume_restores("r")
    ctx.lists["podvolumerestores"] = [pod_volume("app", "web-0", "data", "Completed")]
    assert len(velero_with(ctx).wait_for_pod_volume_restores("r", expected=1)) == 1


def test_pod_volume_restores_wait_for_the_expected_count() -> None:
    ctx = FakeContext(objects={("restores", "r"): {"status": {"phase": "Completed"}}}, lists={})
    with pytest.raises(WaitTimeout, match="none"):
        velero_with(ctx).wait_for_pod_volume_restores("r", expected=1)


# ---- fail-fast pod checks ------------------------------------------------------------------------
def pod_waiting(reason: str, *, image: str = "example.test/missing:1", restarts: int = 0,
                message: str = "not found") -> client.V1Pod:
    status = client.V1ContainerStatus(
        name="c", image=image, image_id="", ready=False, restart_count=restarts,
        state=client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason=reason, message=message)))
    return client.V1Pod(metadata=client.V1ObjectMeta(name="p", namespace="ns"),
                        status=client.V1PodStatus(phase="Pending", container_statuses=[status]))


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"])
def test_a_missing_image_is_named(reason: str) -> None:
    with pytest.raises(ImageMissingError, match=r"example\.test/missing:1") as raised:
        check_pods_can_start([pod_waiting(reason)])
    assert raised.value.image == "example.test/missing:1"


# What the kubelet reports (containerd's words, with the registry's), for a limit and for no image.
RATE_LIMITED = ('failed to pull and unpack image "docker.io/library/mariadb:11.4.5": failed to copy: httpReadSeeker: '
                'failed open: unexpected status code https://registry-1.docker.io/v2/library/mariadb/manifests/'
                'sha256:0f: 429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate '
                'limit.')
NO_SUCH_IMAGE = ('failed to pull and unpack image "ghcr.io/example/app:v9": failed to resolve reference '
                 '"ghcr.io/example/app:v9": ghcr.io/example/app:v9: not found')
NO_REGISTRY = ('failed to pull and unpack image "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z": failed to resolve '
               'reference: failed to do request: Head "https://quay.io/v2/minio/minio/manifests/x": dial tcp: lookup '
               'quay.io on 172.18.0.1:53: no such host')


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_a_rate_limited_pull_is_waited_for_and_its_message_kept(reason: str) -> None:
    pod = pod_waiting(reason, message=RATE_LIMITED)

    check_pods_can_start([pod])  # not final: the kubelet pulls again with back-off

    assert "429 Too Many Requests" in describe_pod(pod)


@pytest.mark.parametrize("message", [NO_SUCH_IMAGE, NO_REGISTRY])
def test_a_pull_that_cannot_succeed_is_final_with_the_registrys_words(message: str) -> None:
    with pytest.raises(ImageMissingError) as raised:
        check_pods_can_start([pod_waiting("ErrImagePull", message=message)])

    assert message[:120] in str(raised.value)


def test_crash_loop_fails_after_restarts_only() -> None:
    check_pods_can_start([pod_waiting("CrashLoopBackOff", restarts=1)])
    with pytest.raises(PlatformError, match="CrashLoopBackOff"):
        check_pods_can_start([pod_waiting("CrashLoopBackOff", restarts=3)])


# ---- CNPG ----------------------------------------------------------------------------------------
def test_cnpg_operator_gets_our_images() -> None:
    rendered = [{"kind": "Deployment", "metadata": {"name": "cnpg-controller-manager"},
                 "spec": {"template": {"spec": {"containers": [{
                     "name": "manager", "image": "controller:latest", "imagePullPolicy": "Always",
                     "env": [{"name": "OPERATOR_IMAGE_NAME", "value": "controller:latest"},
                             {"name": "OPERATOR_NAMESPACE", "value": "x"}]}]}}}},
                {"kind": "Namespace", "metadata": {"name": "cnpg-system"}}]
    out = customize_operator(rendered, IMAGES)
    manager = out[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in manager["env"]}
    assert manager["image"] == env["OPERATOR_IMAGE_NAME"] == IMAGES["cnpg-operator"]
    assert env["POSTGRES_IMAGE_NAME"] == IMAGES["postgresql"]
    assert env["OPERATOR_NAMESPACE"] == "x" and manager["imagePullPolicy"] == "IfNotPresent"


def test_cnpg_recovery_cluster_reads_the_origins_backups() -> None:
    origin = cluster_manifest(name="db", namespace="ns", image="pg:15", endpoint=ENDPOINT)
    assert origin["spec"]["bootstrap"] == {"initdb": {"database": "app", "owner": "app"}}
    assert origin["spec"]["backup"]["barmanObjectStore"]["destinationPath"] == "s3://cnpg/"
    assert origin["spec"]["backup"]["barmanObjectStore"]["serverName"] == "db"
    copy = cluster_manifest(name="db-restored", namespace="ns", image="pg:15", endpoint=ENDPOINT, recover_from="db")
    assert copy["spec"]["bootstrap"] == {"recovery": {"source": "db"}}
    external = copy["spec"]["externalClusters"][0]
    assert external["name"] == "db" and external["barmanObjectStore"]["serverName"] == "db"
    # Its own archive must not collide with the origin's.
    assert copy["spec"]["backup"]["barmanObjectStore"]["serverName"] == "db-restored"
    assert backup_manifest(name="b", namespace="ns", cluster="db")["spec"] == {
        "cluster": {"name": "db"}, "method": "barmanObjectStore"}


# ---- Flux ----------------------------------------------------------------------------------------
def test_flux_controllers_move_to_flux_system_with_our_images() -> None:
    rendered = [{"kind": "Deployment", "metadata": {"name": "source-controller", "namespace": "source-system"},
                 "spec": {"template": {"spec": {"containers": [{"name": "manager", "image": "fluxcd/x:v1"}]}}}}]
    out = customize_controller(rendered, controller="source-controller", images=IMAGES)
    assert out[0]["metadata"]["namespace"] == "flux-system"
    pod = out[0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == IMAGES["source-controller"]
    assert pod["serviceAccountName"] == "source-controller"


def test_flux_ready_condition_needs_the_current_generation() -> None:
    ready = {"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "conditions": [
        {"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "Applied"}]}}
    assert ready_condition(ready)[0]
    stale = {**ready, "metadata": {"generation": 3}}
    assert not ready_condition(stale)[0]
    assert ready_condition({}) == (False, "no Ready condition yet")


def test_kustomization_manifest() -> None:
    manifest = kustomization_manifest(name="app", path="./apps/demo", source="repo", target_namespace="demo")
    assert manifest["spec"]["sourceRef"] == {"kind": "GitRepository", "name": "repo"}
    assert manifest["spec"]["targetNamespace"] == "demo" and manifest["spec"]["prune"] is True
    assert git_repository_url("gitops") == "http://git-server.flux-system.svc.cluster.local/git/gitops.git"
    assert RECONCILE_ANNOTATION == "reconcile.fluxcd.io/requestedAt"


def test_bare_repository_tar_clones(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "apps").mkdir(parents=True)
    (tree / "apps" / "cm.yaml").write_text("kind: ConfigMap\n")
    data = bare_repository_tar(tree, repo="gitops")
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(fileobj=__import__("io").BytesIO(data)) as tar:
        assert all(member.uid == 0 for member in tar.getmembers())
        tar.extractall(served, filter="data")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(served / "gitops.git"), str(clone)], check=True, timeout=60)
    assert (clone / "apps" / "cm.yaml").read_text() == "kind: ConfigMap\n"


# ---- Debian root filesystems ---------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="changing file owners needs root")
def test_renumber_user_moves_ownership(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\npostgres:x:100:102::/var/lib/postgresql:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nssl-cert:x:101:postgres\npostgres:x:102:\n")
    data = tmp_path / "var/lib/postgresql"
    data.mkdir(parents=True)
    os.chown(data, 100, 102)
    renumber_user(tmp_path, user="postgres", uid=26, gid=26)
    assert "postgres:x:26:26:" in (tmp_path / "etc/passwd").read_text()
    assert "postgres:x:26:" in (tmp_path / "etc/group").read_text()
    assert (data.stat().st_uid, data.stat().st_gid) == (26, 26)


def test_trim_rootfs_removes_docs_and_caches(tmp_path: Path) -> None:
    (tmp_path / "usr/share/doc/pkg").mkdir(parents=True)
    (tmp_path / "usr/share/doc/pkg/README").write_text("x")
    (tmp_path / "usr/lib/postgresql/15/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/postgresql/15/lib/llvmjit.so").write_text("x")
    (tmp_path / "usr/lib/postgresql/15/lib/plpgsql.so").write_text("x")
    trim_rootfs(tmp_path, extra_globs=("usr/lib/postgresql/*/lib/llvmjit*",))
    assert list((tmp_path / "usr/share/doc").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "usr/lib/postgresql/15/lib").iterdir()) == ["plpgsql.so"]


# ---- generated custom resources are valid against the pinned CRDs -------------------------------
def pinned_schemas() -> Any:
    from restoredrill.errors import RestoreDrillError
    from restoredrill.schemas import cached_schemas

    try:
        return cached_schemas(fetch=False, progress=lambda line: None)
    except RestoreDrillError as error:
        pytest.skip(f"pinned CRD schemas not cached: {error.message}")


def generated_custom_resources() -> list[dict[str, Any]]:
    from restoredrill.platform.flux import git_repository_manifest
    from restoredrill.platform.velero import restore_manifest

    schedule = yaml.safe_load(EXAMPLE_SCHEDULE.read_text())
    return [
        backup_storage_location(ENDPOINT),
        backup_from_schedule_template(schedule["spec"]["template"], name="b", schedule_name="s"),
        restore_manifest(name="r", backup_name="b", included_namespaces=["pelican"]),
        cluster_manifest(name="db", namespace="ns", image="pg:15.18", endpoint=ENDPOINT),
        cluster_manifest(name="db2", namespace="ns", image="pg:15.18", endpoint=ENDPOINT, recover_from="db",
                         storage_class="local-path"),
        backup_manifest(name="b", namespace="ns", cluster="db"),
        git_repository_manifest(name="repo", url=git_repository_url("repo")),
        kustomization_manifest(name="app", path="./apps/demo", source="repo", target_namespace="demo"),
    ]


@pytest.mark.parametrize("index", range(8))
def test_generated_custom_resources_match_the_pinned_crds(index: int) -> None:
    from restoredrill.schemas import validate

    schemas = pinned_schemas()
    manifest = generated_custom_resources()[index]
    group, version = manifest["apiVersion"].split("/")
    schema = schemas.lookup(group, version, manifest["kind"])
    assert schema is not None, f"no pinned CRD for {manifest['apiVersion']} {manifest['kind']}"
    problems = validate(manifest, schema)
    assert problems == [], [str(problem) for problem in problems]


# ---- port-forward (with a stand-in kubectl) ------------------------------------------------------
class ForwardContext(FakeContext):
    def __init__(self, kubeconfig: Path) -> None:
        super().__init__(timeout=10)
        from restoredrill.cluster import ClusterHandle

        self.cluster = ClusterHandle(provider="local", name="t", kubeconfig=kubeconfig, context=None,
                                     created_by_us=True)


def fake_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    kubectl = tmp_path / "kubectl"
    kubectl.write_text("#!/bin/sh\n" + script)
    kubectl.chmod(0o755)
    monkeypatch.setenv("RESTOREDRILL_KUBECTL", str(kubectl))


def test_port_forward_yields_the_local_port_and_stops_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from restoredrill.platform.objectstore import port_forward

    fake_kubectl(tmp_path, monkeypatch, f'echo $$ > {tmp_path}/pid\n'
                 'echo "Forwarding from 127.0.0.1:40123 -> 9000"\nexec sleep 60\n')
    ctx = ForwardContext(tmp_path / "kubeconfig")
    with port_forward(ctx, namespace="minio", target="svc/minio", port=9000) as local:  # type: ignore[arg-type]
        assert local == 40123
    pid = int((tmp_path / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_port_forward_failure_is_a_platform_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from restoredrill.platform.objectstore import port_forward

    fake_kubectl(tmp_path, monkeypatch, 'echo "error: services \\"minio\\" not found" >&2\nexit 1\n')
    ctx = ForwardContext(tmp_path / "kubeconfig")
    with pytest.raises(PlatformError, match="not found"), \
            port_forward(ctx, namespace="minio", target="svc/minio", port=9000):  # type: ignore[arg-type]
        pass


def test_a_restore_that_cannot_read_the_backup_names_the_object() -> None:
    """Velero's failureReason when the backup's tarball is gone (restore_controller + the AWS plugin)."""
    restore = {"metadata": {"name": "pelican-r"}, "spec": {"backupName": "pelican-b"},
               "status": {"phase": "Failed", "failureReason": (
                   "error downloading backup: error getting object backups/pelican-b/pelican-b.tar.gz: operation "
                   "error S3: GetObject, https response error StatusCode: 404, api error NoSuchKey: The specified "
                   "key does not exist.")}}
    bsl = {"metadata": {"name": "default"}, "spec": {"objectStorage": {"bucket": "velero"}}}
    text = restore_failure(restore, bsl)
    assert text.startswith("Restore pelican-r ended Failed: error downloading backup")
    assert "The object s3://velero/backups/pelican-b/pelican-b.tar.gz of Backup pelican-b could not be read from " \
           "BackupStorageLocation default" in text
    other = restore_failure({"metadata": {"name": "r"}, "status": {"phase": "FailedValidation",
                                                                   "validationErrors": ["backup not found"]}}, None)
    assert other == "Restore r ended FailedValidation: backup not found"


# ---- Velero's discovery of CRDs made after its server started ------------------------------------
def test_velero_knows_a_crd_only_from_the_first_refresh_after_it_was_created() -> None:
    from datetime import UTC, datetime, timedelta

    from restoredrill.platform.velero import discovery_knows_at

    started = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert discovery_knows_at(started, []) == started
    assert discovery_knows_at(started, [started - timedelta(hours=1)]) == started, "older CRDs: known at start"
    # Created 40 s after the start (Flux installed after Velero): known after the 5-minute refresh.
    assert discovery_knows_at(started, [started + timedelta(seconds=40)]) == started + timedelta(seconds=315)
    # Created 7 minutes in: the refresh at 10 minutes; the newest CRD decides.
    assert discovery_knows_at(started, [started + timedelta(seconds=40), started + timedelta(minutes=7)]) == (
        started + timedelta(seconds=615))
    # Made just before the server started (Velero's own CRDs, applied with its Deployment): known.
    assert discovery_knows_at(started, [started - timedelta(seconds=5)]) == started
    # Made a second after it started: its first listing may have come before.
    assert discovery_knows_at(started, [started + timedelta(seconds=1)]) == started + timedelta(seconds=315)
