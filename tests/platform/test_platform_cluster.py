"""The platform on a real cluster: what the issue's "Proven in CI" list asks for.

Each test works in namespaces it creates (labelled as this run's, deleted only by it). The fault
tests stop the object store and put it back; they sit in their own xdist group so no other test
runs a backup meanwhile.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from restoredrill.cluster.namespaces import NamespaceFactory, delete_owned_namespace
from restoredrill.errors import WaitTimeout
from restoredrill.platform import BackupStorageUnavailable, CloudNativePG, Flux, ImageMissingError, ObjectStore, Velero
from restoredrill.platform.base import PlatformContext
from restoredrill.timeouts import timeout
from restoredrill.waits import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.platform]
# How long a suspended Kustomization is watched for (not) reverting drift: several of the
# controller's reconcile loops after an explicit reconcile request.
SUSPENDED_PROBE_SECONDS = 10.0

def unique(base: str) -> str:
    return f"{base}-{uuid.uuid4().hex[:6]}"


def pvc_and_writer(namespace: str, image: str) -> list[dict[str, Any]]:
    """One PVC and one pod that writes 1 MiB of random data to it once, then sleeps."""
    return [
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": namespace},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "writer", "namespace": namespace,
                                                         "labels": {"app": "writer"}},
         "spec": {"containers": [{
             "name": "writer", "image": image, "imagePullPolicy": "IfNotPresent",
             "command": ["sh", "-c", "[ -f /data/file ] || head -c 1048576 /dev/urandom > /data/file; "
                                     "exec sleep 100000"],
             "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
             "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
             "terminationGracePeriodSeconds": 1}},
    ]


def sha256_in_pod(ctx: PlatformContext, namespace: str, path: str) -> str:
    return ctx.kubectl(["-n", namespace, "exec", "writer", "--", "sha256sum", path]).split()[0]


# ---- Velero ------------------------------------------------------------------------------------
def test_bsl_is_available(velero: Velero) -> None:
    velero.check_bsl_available()


def test_fs_backup_and_restore_of_one_pvc(velero: Velero, platform_context: PlatformContext,
                                          namespace_factory: NamespaceFactory, run_id: str, worker_id: str) -> None:
    ctx = platform_context
    namespace = namespace_factory(unique("rd-fsb"))
    ctx.apply(pvc_and_writer(namespace, ctx.images["busybox"]))
    ctx.wait_for_pods_ready(namespace=namespace, selector="app=writer", what="writer pod", expected=1,
                            timeout_name="pod_ready")
    before = sha256_in_pod(ctx, namespace, "/data/file")

    # The Backup is made the way the runbook's Schedules make theirs.
    template = {"includedNamespaces": [namespace], "includedResources": ["*"], "defaultVolumesToFsBackup": True,
                "storageLocation": "default", "ttl": "24h0m0s",
                "metadata": {"labels": {"app.kubernetes.io/name": "restoredrill", "backup-type": "drill"}}}
    backup = unique(f"{namespace}-b")
    started = time.monotonic()
    velero.create_backup_from_schedule_template(template, backup, schedule_name=f"{namespace}-daily")
    velero.wait_for_backup(backup)
    backup_seconds = time.monotonic() - started
    found = velero.check_pod_volume_backups(backup, [(f"{namespace}/writer", "data")])
    assert len(found) == 1

    # A sentinel written after the backup must not come back: the data is from the backup.
    ctx.kubectl(["-n", namespace, "exec", "writer", "--", "sh", "-c", "echo changed > /data/sentinel"])
    delete_owned_namespace(ctx.api, namespace, run_id=run_id, worker_id=worker_id,
                           wait_timeout=timeout("namespace_deleted"))

    restore = unique(f"{namespace}-r")
    started = time.monotonic()
    velero.create_restore(restore, backup_name=backup, included_namespaces=[namespace])
    restores = velero.wait_for_pod_volume_restores(restore, expected=1)
    restore_seconds = time.monotonic() - started
    assert [item["status"]["phase"] for item in restores] == ["Completed"]
    assert velero.wait_for_restore(restore)["status"]["phase"] == "Completed"
    ctx.wait_for_pods_ready(namespace=namespace, selector="app=writer", what="restored writer pod", expected=1,
                            timeout_name="pod_ready")
    assert sha256_in_pod(ctx, namespace, "/data/file") == before
    absent = ctx.kubectl(["-n", namespace, "exec", "writer", "--", "sh", "-c",
                          "test -e /data/sentinel && echo present || echo absent"]).strip()
    assert absent == "absent"
    print(f"single-PVC fs-backup {backup_seconds:.1f}s, restore {restore_seconds:.1f}s")


# ---- CNPG --------------------------------------------------------------------------------------
def test_cnpg_backup_and_recovery_into_a_second_cluster(cnpg: CloudNativePG,
                                                         namespace_factory: NamespaceFactory) -> None:
    namespace = namespace_factory(unique("rd-cnpg"))
    origin = unique("db")
    cnpg.create_cluster(name=origin, namespace=namespace)
    cnpg.wait_for_cluster_healthy(name=origin, namespace=namespace)
    cnpg.psql(cluster=origin, namespace=namespace,
              sql="CREATE TABLE drill(id int primary key, note text); "
                  "INSERT INTO drill SELECT g, md5(g::text) FROM generate_series(1, 1000) g;")
    expected = cnpg.psql(cluster=origin, namespace=namespace,
                         sql="SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM drill").strip()

    backup = unique("backup")
    cnpg.create_backup(name=backup, namespace=namespace, cluster=origin)
    cnpg.wait_for_backup(name=backup, namespace=namespace)

    copy = unique("db-restored")
    cnpg.create_cluster(name=copy, namespace=namespace, recover_from=origin)
    cnpg.wait_for_cluster_healthy(name=copy, namespace=namespace)
    got = cnpg.psql(cluster=copy, namespace=namespace,
                    sql="SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM drill").strip()
    assert got == expected
    assert got.startswith("1000|")


# ---- Flux --------------------------------------------------------------------------------------
def test_flux_kustomization_from_the_git_server(flux: Flux, platform_context: PlatformContext,
                                                 namespace_factory: NamespaceFactory, tmp_path: Path) -> None:
    ctx = platform_context
    namespace = namespace_factory(unique("rd-flux"))
    tree = tmp_path / "gitops"
    (tree / "apps" / "demo").mkdir(parents=True)
    (tree / "apps" / "demo" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - configmap.yaml\n")
    (tree / "apps" / "demo" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\ndata:\n  greeting: from-git\n")
    repo = unique("gitops")
    url = flux.publish_repository(tree, repo=repo)
    flux.create_git_repository(name=repo, url=url)
    flux.wait_for_source_ready(repo)
    flux.create_kustomization(name=repo, path="./apps/demo", source=repo, target_namespace=namespace)
    flux.wait_for_kustomization_ready(repo)
    assert any(entry.startswith(f"{namespace}_demo__ConfigMap") for entry in flux.inventory(repo))

    def greeting() -> str:
        return ctx.kubectl(["-n", namespace, "get", "configmap", "demo", "-o", "jsonpath={.data.greeting}"])

    assert greeting() == "from-git"

    # Suspended: drift stays, even when a reconcile is requested.
    flux.suspend(repo)
    assert flux.is_suspended(repo)
    ctx.kubectl(["-n", namespace, "patch", "configmap", "demo", "--type=merge", "-p",
                 '{"data":{"greeting":"drifted"}}'])
    flux.request_reconcile(repo)

    def reverted() -> tuple[bool | None, str]:
        value = greeting()
        return (True if value == "from-git" else None), value

    # A named wait that must run out: a suspended Kustomization does not revert drift.
    with pytest.raises(WaitTimeout):
        wait_until("a suspended Kustomization NOT to revert drift", reverted, timeout=SUSPENDED_PROBE_SECONDS)
    assert greeting() == "drifted"

    # Resumed: the drift is reverted from git.
    token = flux.resume(repo)
    flux.wait_for_reconciled(repo, token=token)
    wait_until("the drifted ConfigMap to be reverted by Flux", reverted, timeout=timeout("flux_reconcile"))
    ctx.delete([{"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                 "metadata": {"name": repo, "namespace": flux.namespace}},
                {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                 "metadata": {"name": repo, "namespace": flux.namespace}}])


# ---- faults ------------------------------------------------------------------------------------
def test_a_missing_image_is_named_fast(platform_context: PlatformContext,
                                       namespace_factory: NamespaceFactory) -> None:
    namespace = namespace_factory(unique("rd-img"))
    missing = "restoredrill.local/does-not-exist:0.0.0"
    platform_context.apply([{"apiVersion": "v1", "kind": "Pod",
                             "metadata": {"name": "p", "namespace": namespace, "labels": {"app": "p"}},
                             "spec": {"containers": [{"name": "c", "image": missing,
                                                      "imagePullPolicy": "IfNotPresent"}]}}])
    started = time.monotonic()
    with pytest.raises(ImageMissingError) as raised:
        platform_context.wait_for_pods_ready(namespace=namespace, selector="app=p", what="pod with missing image")
    assert raised.value.image == missing and missing in str(raised.value)
    assert time.monotonic() - started < 60


@pytest.mark.xdist_group("object-store-outage")
def test_object_store_down_makes_the_bsl_unavailable_within_a_minute(velero: Velero,
                                                                      object_store: ObjectStore) -> None:
    velero.check_bsl_available()
    object_store.scale(0)
    try:
        started = time.monotonic()
        message = velero.wait_for_bsl_unavailable()  # timeout "bsl_unavailable": 60 s
        assert time.monotonic() - started <= 60
        assert message
        with pytest.raises(BackupStorageUnavailable) as raised:
            velero.create_backup_from_schedule_template({"includedNamespaces": ["default"]}, unique("never"))
        # The suite's error carries Velero's own words about the store, not a timeout.
        assert "is Unavailable: " in str(raised.value) and "no message" not in str(raised.value)
    finally:
        object_store.scale(1)
        object_store.wait_ready()
        velero.wait_for_bsl_available()
