"""The drill's check against what the backup holds: every PodVolumeBackup's Kopia snapshot,
verified in the repository and compared, entry by entry, with the volume the restore produced.

For each snapshot: `kopia snapshot verify` with every file read (timed: a damaged pack fails
here, naming the bucket object and the volume); `kopia snapshot restore` into scratch space; the
drill's inventory script over the scratch tree and over the restored volume; and
verify.compare_with_snapshot of the two. The kopia side of it (where the repository is, the
command lines, the pod, what kopia's errors mean) is platform/kopia.py.

`verify_snapshots` runs the steps through any runner (a pod's `kubectl exec`, or a local process
in the tests); `verify_against_snapshots` is what the drill calls after a restore: it makes the
verifier pod and its Secret in the restored namespace, runs the steps there and removes both.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes.client.exceptions import ApiException

from restoredrill.drill import data
from restoredrill.errors import CommandError, ConfigError
from restoredrill.platform import kopia
from restoredrill.platform.base import PlatformContext
from restoredrill.platform.velero import CREDENTIALS_SECRET, GROUP, VERSION
from restoredrill.podvolumes import PodVolumeRecord
from restoredrill.verify import Entry, compare_with_snapshot, parse_inventory
from restoredrill.waits import wait_until

VERIFIER = "restoredrill-snapshot-verifier"
# A runner: (argv, seconds) -> (exit code or None on timeout, stdout and stderr).
Runner = Callable[[Sequence[str], float], tuple[int | None, str]]


@dataclass(frozen=True)
class VolumeSnapshot:
    """One PodVolumeBackup's snapshot and the claim it holds."""

    claim: str
    snapshot_id: str
    pod_volume_backup: str
    volume_namespace: str  # the repository's (spec.pod.namespace of the PodVolumeBackup)
    total_bytes: int | None = None  # status.progress.totalBytes: what Velero says it copied


def volume_snapshots(pod_volume_backups: Iterable[PodVolumeRecord], *,
                     claims: Mapping[tuple[str, str], str]) -> tuple[list[VolumeSnapshot], list[str]]:
    """The snapshots of Completed PodVolumeBackups, keyed to claims by (namespace/pod, volume);
    and a problem for each PodVolumeBackup that names no snapshot or no known claim."""
    found: list[VolumeSnapshot] = []
    problems: list[str] = []
    for pvb in pod_volume_backups:
        key = (pvb.pod, pvb.volume)
        if pvb.phase != "Completed":
            continue  # compare_pod_volumes reports it
        if key not in claims:
            problems.append(f"PodVolumeBackup {pvb.name} (pod {key[0]}, volume {key[1]!r}) copied no claim the drill "
                            "knows")
            continue
        if not pvb.snapshot_id:
            problems.append(f"PodVolumeBackup {pvb.name} of PVC {claims[key]} is Completed without a snapshotID: there "
                            "is no snapshot to verify (an empty volume Velero skipped?)")
            continue
        found.append(VolumeSnapshot(claim=claims[key], snapshot_id=pvb.snapshot_id, pod_volume_backup=pvb.name,
                                    volume_namespace=pvb.pod_namespace, total_bytes=pvb.total_bytes))
    return found, problems


@dataclass
class VolumeVerification:
    """What the check found for one volume, with each step's seconds."""

    claim: str
    snapshot_id: str
    verify_s: float | None = None
    restore_s: float | None = None
    compare_s: float | None = None
    entries: int = 0
    snapshot_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    written_by_app: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class SnapshotVerification:
    volumes: list[VolumeVerification] = field(default_factory=list)
    connect_s: float | None = None
    problems_before_volumes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [*self.problems_before_volumes, *(p for v in self.volumes for p in v.problems)]

    @property
    def written_by_app(self) -> list[str]:
        return [w for v in self.volumes for w in v.written_by_app]

    @property
    def notes(self) -> list[str]:
        return [n for v in self.volumes for n in v.notes]

    def facts(self) -> dict[str, Any]:
        """For summary.json: per volume, the seconds of each step and what was compared."""
        return {"connect_s": self.connect_s, "volumes": [
            {"claim": v.claim, "snapshot": v.snapshot_id, "verify_s": v.verify_s, "restore_s": v.restore_s,
             "compare_s": v.compare_s, "entries": v.entries, "bytes": v.snapshot_bytes,
             "problems": len(v.problems), "written_by_app": len(v.written_by_app)} for v in self.volumes]}


def verify_snapshots(in_pod: Runner, *, commands: kopia.KopiaCommands, snapshots: Sequence[VolumeSnapshot],
                     restore_uid: str, restore_started: float | None, timeout: float,
                     volumes_root: str = kopia.VOLUMES, scratch_root: str = kopia.SCRATCH,
                     volume_name: Callable[[str], str] = lambda claim: f"PVC {claim}") -> SnapshotVerification:
    """Connect read-only, then for each snapshot: verify, restore into scratch, inventory both
    trees, compare. A volume whose snapshot fails verification is not restored (its failure names
    the pack); the scratch copy of each volume is removed before the next one."""
    result = SnapshotVerification()
    started = time.monotonic()
    code, output = in_pod(commands.connect(), timeout)
    result.connect_s = time.monotonic() - started
    connect_problems = kopia.kopia_problems(operation="repository connect", volume="the backup's volumes",
                                            snapshot_id="-", repository=commands.repository, output=output,
                                            returncode=code)
    if connect_problems:
        result.problems_before_volumes = connect_problems
        return result
    for snap in snapshots:
        result.volumes.append(_verify_volume(in_pod, commands=commands, snap=snap, volume=volume_name(snap.claim),
                                             restore_uid=restore_uid, restore_started=restore_started,
                                             timeout=timeout, volumes_root=volumes_root, scratch_root=scratch_root))
    return result


def _verify_volume(in_pod: Runner, *, commands: kopia.KopiaCommands, snap: VolumeSnapshot, volume: str,
                   restore_uid: str, restore_started: float | None, timeout: float, volumes_root: str,
                   scratch_root: str) -> VolumeVerification:
    check = VolumeVerification(claim=snap.claim, snapshot_id=snap.snapshot_id)

    def step(operation: str, argv: Sequence[str]) -> tuple[float, list[str]]:
        began = time.monotonic()
        code, output = in_pod(argv, timeout)
        return time.monotonic() - began, kopia.kopia_problems(
            operation=operation, volume=volume, snapshot_id=snap.snapshot_id, repository=commands.repository,
            output=output, returncode=code)

    check.verify_s, problems = step("snapshot verify", commands.verify(snap.snapshot_id))
    if problems:
        check.problems += problems
        return check
    target = f"{scratch_root}/snapshots/{snap.claim}"
    check.restore_s, problems = step("snapshot restore", commands.restore(snap.snapshot_id, target))
    try:
        if problems:
            check.problems += problems
            return check
        began = time.monotonic()
        # The two trees are independent: inventoried at once (two execs), which halves the wall time
        # on a node with two cores (the inventory forks stat and sha256sum per file).
        with ThreadPoolExecutor(max_workers=2) as pool:
            snapshot_side = pool.submit(_inventory, in_pod, target, timeout=timeout, what=f"the snapshot of {volume}")
            restored_side = pool.submit(_inventory, in_pod, f"{volumes_root}/{snap.claim}", timeout=timeout,
                                        what=volume)
            snapshot_tree, restored = snapshot_side.result(), restored_side.result()
        diff = compare_with_snapshot(volume=volume, snapshot=snapshot_tree, restored=restored,
                                     restore_uid=restore_uid, restore_started=restore_started)
        check.compare_s = time.monotonic() - began
        check.entries = len(snapshot_tree)
        check.snapshot_bytes = sum(e.size for e in snapshot_tree.values())
        check.problems += diff.problems
        check.written_by_app += diff.written_by_app
        if snap.total_bytes is not None and snap.total_bytes != check.snapshot_bytes:
            # A note, not a failure: status.progress is the last periodic update of the data path
            # (pod_volume_backup_controller.go OnDataPathProgress), not a final count.
            check.notes.append(f"{volume}: PodVolumeBackup {snap.pod_volume_backup} reported {snap.total_bytes} "
                               f"bytes, its snapshot holds {check.snapshot_bytes}")
    finally:
        in_pod(["sh", "-c", 'rm -rf -- "$0"', target], timeout)  # in the verifier pod: scratch space for the next
    return check


def _inventory(in_pod: Runner, path: str, *, timeout: float, what: str) -> dict[str, Entry]:
    argv = ["sh", "-c", data.INVENTORY_SCRIPT, "inventory", path]
    code, output = in_pod(argv, timeout)
    if code != 0:
        raise CommandError([*argv[:2], "<inventory script>", *argv[3:]], returncode=code, output=output,
                           remedy=f"the inventory of {what} failed; see the output")
    return parse_inventory(output)


@dataclass(frozen=True)
class RepositoryAccess:
    """What reading a backup's repositories takes: the BackupStorageLocation, the repository
    password and the S3 keys (the node-agent's own)."""

    bsl: Mapping[str, Any]
    password: str
    credentials: kopia.S3Credentials


def repository_access(ctx: PlatformContext, *, velero_namespace: str, bsl_name: str,
                      credentials_secret: str = CREDENTIALS_SECRET, credentials_key: str = "cloud") -> RepositoryAccess:
    """Read the BackupStorageLocation, Velero's `velero-repo-credentials` password and the S3
    credentials file the BSL names (spec.credential), else the one Velero's pods mount."""
    bsl = ctx.get_object(GROUP, VERSION, "backupstoragelocations", velero_namespace, bsl_name)
    if bsl is None:
        raise ConfigError(f"no BackupStorageLocation {velero_namespace}/{bsl_name}",
                          remedy="name the BSL the backup was written to")
    credential = (bsl.get("spec") or {}).get("credential") or {}
    secret_name, key = str(credential.get("name") or credentials_secret), str(credential.get("key") or credentials_key)

    def secret(name: str) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], ctx.as_manifests(ctx.core.read_namespaced_secret(name, velero_namespace)))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    password = kopia.repository_password(secret(kopia.PASSWORD_SECRET), namespace=velero_namespace)
    files = (secret(secret_name) or {}).get("data") or {}
    if key not in files:
        raise ConfigError(f"Secret {velero_namespace}/{secret_name} has no {key!r} with the S3 credentials",
                          remedy="point the BackupStorageLocation's spec.credential at the credentials file")
    text = base64.b64decode(str(files[key])).decode()
    return RepositoryAccess(bsl=bsl, password=password, credentials=kopia.credentials_from_file(text))


def verify_against_snapshots(ctx: PlatformContext, *, namespace: str, snapshots: Sequence[VolumeSnapshot],
                             bsl: Mapping[str, Any], password: str, credentials: kopia.S3Credentials, image: str,
                             restore_uid: str, restore_started: float | None) -> SnapshotVerification:
    """The drill's step after a restore: every snapshot of the backup against the volume restored
    from it, in a verifier pod in `namespace` (the claims are namespaced) that mounts them
    read-only. `restore_started` only when the app runs its real image (see compare_with_snapshot).

    All snapshots must come from one repository (one volume namespace), as in a namespace drill.
    """
    namespaces = {s.volume_namespace for s in snapshots}
    if len(namespaces) > 1:
        raise ValueError(f"snapshots from several volume namespaces: {sorted(namespaces)}")
    if not snapshots:
        return SnapshotVerification()
    repository = kopia.repository_for(bsl, volume_namespace=namespaces.pop())
    commands = kopia.KopiaCommands(repository=repository, home=f"{kopia.SCRATCH}/kopia")
    secret = kopia.verifier_secret(name=VERIFIER, namespace=namespace,
                                   env=commands.env(password=password, credentials=credentials))
    pod = kopia.verifier_pod(name=VERIFIER, namespace=namespace, image=image,
                             claims=sorted({s.claim for s in snapshots}), secret=VERIFIER)
    timeout = ctx.timeout("pod_volume_restores")

    def in_pod(argv: Sequence[str], seconds: float) -> tuple[int | None, str]:
        try:
            return 0, ctx.kubectl(["-n", namespace, "exec", VERIFIER, "--", *argv], timeout=seconds)
        except CommandError as error:
            return error.returncode, error.output

    ctx.apply([secret, pod])
    try:
        ctx.wait_for_pods_ready(namespace=namespace, selector=f"{kopia.VERIFIER_LABEL}=snapshot-verifier",
                                what="snapshot verifier pod", expected=1, timeout_name="pod_ready")
        return verify_snapshots(in_pod, commands=commands, snapshots=snapshots, restore_uid=restore_uid,
                                restore_started=restore_started, timeout=timeout,
                                volume_name=lambda claim: f"PVC {namespace}/{claim}")
    finally:
        _delete_verifier(ctx, namespace)


def _delete_verifier(ctx: PlatformContext, namespace: str) -> None:
    for delete in (ctx.core.delete_namespaced_pod, ctx.core.delete_namespaced_secret):
        try:
            delete(VERIFIER, namespace, grace_period_seconds=0)
        except ApiException as error:
            if error.status != 404:
                raise

    def gone() -> tuple[bool | None, str]:
        try:
            ctx.core.read_namespaced_pod(VERIFIER, namespace)
        except ApiException as error:
            if error.status == 404:
                return True, "gone"
            raise
        return None, "still there"

    wait_until(f"snapshot verifier pod in {namespace} to go", gone, timeout=ctx.timeout("pod_ready"), interval=1.0)
