"""Drills that cannot lie: each verifier, given the fault it exists for on a real cluster, fails the
drill with a message that names it.

One real namespace drill of the example's pelican runs up to the restore (module fixture); a clean
verification passes first, so each fault below is what makes the drill fail. Faults are injected
into the restored state and undone after each test, except the last ones, which need their own
backup. Run in file order (no xdist split): they share one restored namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from restoredrill.catalogue import App, Catalogue
from restoredrill.drill import data
from restoredrill.drill.checks import parse_checks
from restoredrill.drill.namespace import DrillFailed, NamespaceDrill
from restoredrill.platform import ObjectStore, kopia
from restoredrill.platform.velero import GROUP, VERSION

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill]

APP = "pelican"
CLAIM = "pelican-data"
LARGE = f"{data.MOUNT_ROOT}/{CLAIM}/{data.SEED_DIR}/large.bin"


def app_named(catalogue: Catalogue, name: str) -> App:
    return next(app for app in catalogue.apps if app.name == name)


@pytest.fixture(scope="module")
def restored(request: pytest.FixtureRequest, catalogue: Catalogue) -> Iterator[NamespaceDrill]:
    """pelican deployed, seeded, backed up, sentinelled, destroyed and restored; not yet verified."""
    factory: Callable[[App], NamespaceDrill] = request.getfixturevalue("module_namespace_drill")
    drill = factory(app_named(catalogue, APP))
    for step, action in (("deploy", drill.deploy), ("seed", drill.seed), ("record", drill.take_snapshot),
                         ("backup", drill.backup), ("sentinel", drill.write_sentinels), ("suspend", drill.suspend),
                         ("destroy", drill.destroy), ("restore", drill.restore)):
        drill.step(step, action)
    yield drill


def in_inspector(drill: NamespaceDrill, script: str) -> str:
    result: list[str] = []
    drill.with_inspector([CLAIM], lambda pod: result.append(
        drill.ctx.kubectl(["-n", drill.ns, "exec", pod, "--", "sh", "-c", script])))
    return result[0]


def expect_failure(action: Callable[[], None], *needles: str) -> DrillFailed:
    with pytest.raises(DrillFailed) as caught:
        action()
    message = str(caught.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in the drill's failure:\n{message}"
    return caught.value


def test_clean_restore_verifies(restored: NamespaceDrill) -> None:
    """The baseline: without a fault the same restore verifies, so the faults below are the cause."""
    restored.step("verify", restored.verify)
    assert restored.record.files_verified > 0 and restored.record.pod_volume_restores == 2
    assert restored.record.volumes_verified == 2


def test_declared_checks_run_on_the_restored_app_and_a_failing_one_fails_the_drill(restored: NamespaceDrill) -> None:
    """The drill config's own checks: a file in the restored volume and the app's Service answering
    pass and are reported; a file the restore did not bring back fails the drill, naming the check."""
    seeded = f"{CLAIM}:/{data.SEED_DIR}/small.txt"
    passing = parse_checks([{"file": seeded, "min_bytes": 1, "name": "seed file restored"},
                            {"http": f"http://pelican-panel.{restored.ns}.svc.cluster.local:80/", "status": 200}],
                           source="test", app=APP)
    restored.checks = passing
    try:
        restored.verify()
        assert [(c["name"], c["passed"]) for c in restored.record.checks] == [
            ("seed file restored", True), (f"http: http://pelican-panel.{restored.ns}.svc.cluster.local:80/", True)]
        restored.checks = parse_checks([{"file": f"{CLAIM}:/{data.SEED_DIR}/never-written.txt",
                                         "name": "uploads restored"}], source="test", app=APP)
        expect_failure(restored.verify, "uploads restored", "never-written.txt")
    finally:
        restored.checks = ()


def test_a_corrupted_pack_of_the_snapshot_fails_the_drill_naming_it(restored: NamespaceDrill,
                                                                    request: pytest.FixtureRequest) -> None:
    """Kopia verification of the backup itself: a flipped pack object in the bucket fails at once,
    naming the object, the volume and what kopia said; not a timeout, not a pass."""
    store: ObjectStore = request.getfixturevalue("object_store")
    bsl = restored.velero.bsl()
    assert bsl is not None
    repository = kopia.repository_for(bsl, volume_namespace=restored.ns)
    with store.client() as s3:
        packs = [k for k in s3.list_keys(repository.bucket, prefix=repository.prefix)
                 if k.rsplit("/", 1)[-1].startswith("p")]
        assert packs, f"no pack objects under s3://{repository.bucket}/{repository.prefix}"
        originals = {key: s3.get_object(repository.bucket, key) for key in packs}
        try:
            for key, body in originals.items():
                middle = len(body) // 2
                s3.put_object(repository.bucket, key, body[:middle] + bytes(b ^ 0xFF for b in body[middle:middle + 64])
                              + body[middle + 64:])
            failure = expect_failure(restored.verify, "s3://", "pack", f"PVC {restored.ns}/{CLAIM}")
            assert any(key.rsplit("/", 1)[-1] in str(failure) for key in packs), str(failure)
        finally:
            for key, body in originals.items():
                s3.put_object(repository.bucket, key, body)
    restored.verify()  # and with the packs as they were, it verifies again


def test_a_changed_mode_or_owner_fails_the_drill(restored: NamespaceDrill) -> None:
    """A restore that leaves a file with the wrong mode or owner is no restore of it."""
    small = f"{data.MOUNT_ROOT}/{CLAIM}/{data.SEED_DIR}/small.txt"
    before = in_inspector(restored, f"stat -c '%a %u %g' {small}").split()
    in_inspector(restored, f"chmod 0000 {small} && chown 4242:4242 {small}")
    try:
        expect_failure(restored.verify, f"{data.SEED_DIR}/small.txt", "mode", "uid")
    finally:
        in_inspector(restored, f"chmod {before[0]} {small} && chown {before[1]}:{before[2]} {small}")


def test_a_file_missing_from_the_restored_volume_fails_naming_it(restored: NamespaceDrill) -> None:
    """A file the snapshot holds and the restored volume lacks: both checks name it."""
    small = f"{data.MOUNT_ROOT}/{CLAIM}/{data.SEED_DIR}/small.txt"
    kept = in_inspector(restored, f"stat -c '%a %u %g %Y' {small} && base64 {small}").split("\n", 1)
    mode, uid, gid, mtime = kept[0].split()
    in_inspector(restored, f"rm {small}")
    try:
        expect_failure(restored.verify, f"file '{data.SEED_DIR}/small.txt' is in the backup's snapshot and missing "
                                        "from the restored volume", f"'{data.SEED_DIR}/small.txt' is missing after "
                                                                    "the restore")
    finally:
        in_inspector(restored, f"printf '%s' '{kept[1].strip()}' | base64 -d > {small} && chmod {mode} {small} && "
                               f"chown {uid}:{gid} {small} && touch -d @{mtime} {small}")
    restored.verify()  # put back as it was (its folder's new mtime is newer than the restore: noted), it verifies


def test_a_file_the_app_writes_after_the_restore_is_reported_and_the_drill_passes(restored: NamespaceDrill) -> None:
    """The app runs again after the restore and writes: reported with its path, not a failure."""
    written = f"{data.SEED_DIR}/written-after-restore.log"
    in_inspector(restored, f"echo started > {data.MOUNT_ROOT}/{CLAIM}/{written}")
    notes = len(restored.record.notes)
    try:
        restored.verify()
        new = restored.record.notes[notes:]
        assert any(f"'{written}' was written by the app after the restore" in note for note in new), new
        assert any("written by the app after the restore" in note and "not in the backup" in note and
                   written in note for note in new), f"the snapshot check did not report {written}: {new}"
    finally:
        in_inspector(restored, f"rm -f {data.MOUNT_ROOT}/{CLAIM}/{written}")


def test_a_changed_byte_fails_the_drill(restored: NamespaceDrill) -> None:
    original = in_inspector(restored, f"dd if={LARGE} bs=1 skip=4242 count=1 2>/dev/null | od -An -to1").strip()
    flipped = "101" if original != "101" else "102"
    in_inspector(restored, f"printf '\\{flipped}' | dd of={LARGE} bs=1 seek=4242 conv=notrunc 2>/dev/null")
    try:
        expect_failure(restored.verify, f"PVC {restored.ns}/{CLAIM}", f"{data.SEED_DIR}/large.bin", "differs")
    finally:
        in_inspector(restored, f"printf '\\{original}' | dd of={LARGE} bs=1 seek=4242 conv=notrunc 2>/dev/null")


def test_a_present_sentinel_fails_the_drill(restored: NamespaceDrill) -> None:
    """Live data where restored data should be: as if the namespace had never been destroyed."""
    sentinel = f"{data.MOUNT_ROOT}/{CLAIM}/{data.SENTINEL}"
    in_inspector(restored, f"echo written-after-backup > {sentinel}")
    try:
        expect_failure(restored.verify, data.SENTINEL, "was the namespace really deleted?")
    finally:
        in_inspector(restored, f"rm -f {sentinel}")


def test_a_failed_pod_volume_restore_fails_the_drill(restored: NamespaceDrill) -> None:
    victim = restored.velero.list_pod_volume_restores(restored.record.restore)[0]
    name = victim["metadata"]["name"]
    status: dict[str, Any] = dict(victim.get("status") or {})

    def set_status(body: dict[str, Any]) -> None:
        # Velero's CRDs have no status subresource: the status is patched like any field.
        restored.ctx.merge_patch(GROUP, VERSION, "podvolumerestores", restored.velero.namespace, name,
                                 {"status": body})

    set_status({**status, "phase": "Failed", "message": "injected by restoredrill's fault test"})
    try:
        expect_failure(restored.verify, f"PodVolumeRestore {name}", "is Failed", "injected by restoredrill")
    finally:
        set_status(status)


def test_a_restore_warning_outside_the_allow_list_fails_the_drill(restored: NamespaceDrill) -> None:
    """Without its allow-list entry, the warning every namespace restore gives (kube-root-ca.crt) fails."""
    allowed = list(restored.allow)
    restored.allow = [entry for entry in allowed if "kube-root-ca.crt" not in entry]
    try:
        expect_failure(restored.verify, "restore warning not in the allow-list", "ConfigMap:kube-root-ca.crt")
    finally:
        restored.allow = allowed


def test_a_missing_pod_volume_restore_fails_the_drill(restored: NamespaceDrill) -> None:
    """A volume whose PodVolumeRestore does not exist was not restored (deleted here: it is not recreated)."""
    victim = restored.velero.list_pod_volume_restores(restored.record.restore)[0]
    volume, pod = victim["spec"]["volume"], victim["spec"]["pod"]
    restored.ctx.custom.delete_namespaced_custom_object(GROUP, VERSION, restored.velero.namespace,
                                                        "podvolumerestores", victim["metadata"]["name"])
    owner = f"{pod['namespace']}/{pod['name']}"
    expect_failure(restored.verify, f"no PodVolumeRestore for volume {volume!r} of pod {owner}")


def test_drift_after_resume_fails_the_drill(restored: NamespaceDrill) -> None:
    """A restored object that differs from Git: Flux changes it on resume, and the drill says so."""
    restored.ctx.kubectl(["-n", restored.ns, "patch", "configmap", "pelican-config", "--type", "merge", "-p",
                          '{"data": {"APP_TIMEZONE": "Mars/Olympus_Mons"}}'])
    expect_failure(restored.resume_and_adopt, f"ConfigMap/{restored.ns}/pelican-config", "changed by Flux on resume")


def test_an_object_missing_after_the_restore_fails_the_drill(restored: NamespaceDrill) -> None:
    restored.ctx.kubectl(["-n", restored.ns, "delete", "service", "pelican-panel", "--wait=true"])
    expect_failure(restored.verify, f"Service {restored.ns}/pelican-panel", "missing after the restore")


def test_a_backup_tarball_deleted_from_the_bucket_fails_the_restore_naming_it(
        restored: NamespaceDrill, request: pytest.FixtureRequest) -> None:
    """The backup's contents gone from the store (a lifecycle rule, a hand): the restore fails at once
    with the object's name, not as a wait for pods that never come."""
    store: ObjectStore = request.getfixturevalue("object_store")
    bsl = restored.velero.bsl()
    assert bsl is not None
    storage = bsl["spec"]["objectStorage"]
    backup = restored.record.backup
    key = "/".join(p for p in (str(storage.get("prefix") or "").strip("/"), "backups", backup, f"{backup}.tar.gz") if p)
    tag = restored.tag
    with store.client() as s3:
        body = s3.get_object(storage["bucket"], key)
        s3.delete_object(storage["bucket"], key)
        try:
            restored.tag = "tarball"  # a Restore of its own name
            expect_failure(restored.restore, f"s3://{storage['bucket']}/{key}", f"of Backup {backup}",
                           "the backup in the object store is incomplete")
        finally:
            restored.tag = tag
            s3.put_object(storage["bucket"], key, body)


def test_a_failing_pod_annotation_hook_fails_the_backup(restored: NamespaceDrill, catalogue: Catalogue,
                                                        request: pytest.FixtureRequest) -> None:
    """A hook declared on the pod (not in the Schedule) that fails: counted, named, and the Backup's
    own error (read through a DownloadRequest for its results) is in the failure."""
    pod = restored.app_pods()[0]["metadata"]["name"]
    hook = {"pre.hook.backup.velero.io/command": '["/bin/sh", "-c", "echo restoredrill-hook-fault >&2; exit 3"]',
            "pre.hook.backup.velero.io/on-error": "Continue"}
    restored.ctx.kubectl(["-n", restored.ns, "annotate", "pod", pod, "--overwrite",
                          *(f"{k}={v}" for k, v in hook.items())])
    try:
        factory: Callable[[App], NamespaceDrill] = request.getfixturevalue("module_namespace_drill")
        drill = factory(app_named(catalogue, APP))
        drill.take_snapshot()
        expect_failure(drill.backup, "1 of 1 backup hooks failed", f"pre annotation hook in {restored.ns}/{pod}",
                       "backup error")
    finally:
        restored.ctx.kubectl(["-n", restored.ns, "annotate", "pod", pod, *(f"{k}-" for k in hook)])


def test_a_claim_on_a_hostpath_volume_fails_the_backup(restored: NamespaceDrill, catalogue: Catalogue,
                                                       request: pytest.FixtureRequest) -> None:
    """Velero skips claims bound to hostPath PVs without a word: the drill counts PodVolumeBackups."""
    ns = restored.ns
    pv = f"restoredrill-hostpath-{restored.run_id}"
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
         "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Delete",
                  "hostPath": {"path": f"/tmp/{pv}", "type": "DirectoryOrCreate"},
                  "claimRef": {"namespace": ns, "name": "hostpath-data"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "hostpath-data", "namespace": ns},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv,
                  "resources": {"requests": {"storage": "64Mi"}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostpath-user", "namespace": ns},
         "spec": {"containers": [{"name": "c", "image": restored.busybox_image, "imagePullPolicy": "IfNotPresent",
                                  "command": ["sh", "-c", "exec sleep 86400"],
                                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                  "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "hostpath-data"}}],
                  "terminationGracePeriodSeconds": 0}},
    ]
    restored.ctx.apply(objects)
    try:
        restored.ctx.wait_for_pods_ready(namespace=ns, selector="", what="hostPath pod", timeout_name="pod_ready")
        factory: Callable[[App], NamespaceDrill] = request.getfixturevalue("module_namespace_drill")
        drill = factory(app_named(catalogue, APP))
        drill.take_snapshot()
        expect_failure(drill.backup, f"no PodVolumeBackup for volume 'data' of pod {ns}/hostpath-user",
                       "hostPath")
    finally:
        restored.ctx.delete(list(reversed(objects)), wait=True)
