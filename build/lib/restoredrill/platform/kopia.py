"""Velero's backups in the bucket, read without Velero: the Kopia repository of each volume
namespace, read-only with the kopia CLI Velero itself links, and the backup's tarball.

Velero never checks what it restores (it turns Kopia's verification off), so the drill does:
`kopia snapshot verify` reads every file of a PodVolumeBackup's snapshot (status.snapshotID), and
`kopia snapshot restore` writes the snapshot into scratch space, where the drill's own inventory
script (data.INVENTORY_SCRIPT) records it exactly as it records the restored volume. Both trees
are then compared entry by entry (verify.compare_with_snapshot).

Why an independent restore, not Kopia's listing: Kopia identifies file contents by a keyed hash
(HMAC-SHA256 with the repository's hash secret, repo/hashing), which no tool outside Kopia can
compute for the restored volume, and `kopia ls -l` prints neither owner nor group. A restore into
scratch gives plain bytes (SHA-256 like the inventory) and every attribute Kopia stored, through
Kopia's own reader, which authenticates every content it decrypts: a flipped byte in a pack is
an error, never wrong data (measured: "invalid checksum at p...: decrypt: unable to decrypt
content: cipher: message authentication failed"). The restore and the verify each read the
snapshot once; the restore is what the comparison needs, the verify is the integrity verdict that
names the pack.

Everything here is pure (objects in, objects or argv out); drill/snapshot.py runs it in a pod.
Checked against Velero v1.16.2 and the kopia fork its go.mod pins (github.com/project-velero/kopia
v0.0.0-20250227051353-20bfabbfc7a0): re-check both when the pins move.
"""

from __future__ import annotations

import base64
import configparser
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

from restoredrill.errors import ConfigError, RestoreDrillError

Manifest = dict[str, Any]

# pkg/repository/manager/manager.go registers the Kopia provider under
# velerov1api.BackupRepositoryTypeKopia ("kopia"), which unified_repo.go passes to
# getStorageVariables as repoBackend.
REPOSITORY_TYPE = "kopia"
# pkg/repository/keys/keys.go: one password for every repository, in the Velero namespace.
PASSWORD_SECRET = "velero-repo-credentials"
PASSWORD_KEY = "repository-password"
DEFAULT_PASSWORD = "static-passw0rd"  # what EnsureCommonRepositoryKey writes when the Secret is absent

KOPIA = "/usr/local/bin/kopia"  # in the kopia image (platform/images.py)
SCRATCH = "/scratch"
VOLUMES = "/volumes"
VERIFIER_LABEL = "restoredrill.io/role"


class BackupStoreError(RestoreDrillError):
    """Something the backup needs is missing or damaged in the object store."""


# ---- where Velero keeps things in the bucket ----------------------------------------------------
@dataclass(frozen=True)
class KopiaRepository:
    """The Kopia repository Velero uses for the volumes of one namespace, as kopia's S3 storage
    sees it (the keys of pkg/repository/udmrepo/kopialib/backend/s3.go)."""

    volume_namespace: str
    bucket: str
    prefix: str  # always ends with "/": blobs are <prefix><blob ID>
    endpoint: str  # host[:port], no scheme
    region: str = ""
    disable_tls: bool = False
    disable_tls_verification: bool = False
    ca_cert_base64: str | None = None
    # A repository in a folder instead (kopia's filesystem storage): a copy of the bucket's prefix
    # taken for inspection, and the tests against the real CLI.
    filesystem_path: str | None = None

    def object_key(self, blob_id: str) -> str:
        """The bucket key of a repository blob (kopia's S3 storage does not shard: prefix + ID)."""
        return f"{self.prefix}{blob_id}"

    def object_url(self, blob_id: str) -> str:
        if self.filesystem_path is not None:
            return f"{self.filesystem_path}/{blob_id} (sharded into folders by kopia's filesystem storage)"
        return f"s3://{self.bucket}/{self.object_key(blob_id)}"

    def location(self) -> str:
        return self.filesystem_path or f"s3://{self.bucket}/{self.prefix}"


def filesystem_repository(path: str, *, volume_namespace: str = "") -> KopiaRepository:
    return KopiaRepository(volume_namespace=volume_namespace, bucket="", prefix="", endpoint="", filesystem_path=path)


def _bsl_bucket_prefix(bsl: Mapping[str, Any]) -> tuple[str, str, dict[str, str]]:
    spec = bsl.get("spec") or {}
    config = {str(k): str(v) for k, v in (spec.get("config") or {}).items()}
    bucket, prefix = config.get("bucket", "").strip("/"), config.get("prefix", "").strip("/")
    store = spec.get("objectStorage")
    if store is not None:
        bucket, prefix = str(store.get("bucket", "")).strip("/"), str(store.get("prefix", "") or "").strip("/")
    return bucket, prefix, config


def repository_for(bsl: Mapping[str, Any], *, volume_namespace: str) -> KopiaRepository:
    """Where Velero keeps the Kopia repository of `volume_namespace` for BackupStorageLocation `bsl`.

    Mirrors pkg/repository/provider/unified_repo.go getStorageVariables for the AWS backend:
    prefix = path.Join(BSL prefix, "kopia", volumeNamespace) + "/"; endpoint and TLS from
    config.s3Url (its host; http means no TLS), or s3-<region>.amazonaws.com without one;
    insecureSkipTLSVerify; the BSL's caCert.
    """
    spec = bsl.get("spec") or {}
    name = (bsl.get("metadata") or {}).get("name", "?")
    provider = str(spec.get("provider", ""))
    bucket, prefix, config = _bsl_bucket_prefix(bsl)
    # pkg/repository/config/config.go GetBackendType: "aws" or "velero.io/aws", or any provider with s3Url.
    if provider not in ("aws", "velero.io/aws") and not config.get("s3Url"):
        raise ConfigError(f"BackupStorageLocation {name} has provider {provider!r}: only S3 (aws) repositories "
                          "can be read", remedy="use an S3 BackupStorageLocation (provider aws)")
    if not bucket:
        raise ConfigError(f"BackupStorageLocation {name} names no bucket", remedy="set spec.objectStorage.bucket")
    region = config.get("region", "")
    s3_url = config.get("s3Url", "")
    if s3_url:
        url = urlparse(s3_url)
        if url.path not in ("", "/"):
            raise ConfigError(f"BackupStorageLocation {name}: s3Url {s3_url!r} has a path, which Velero refuses",
                              remedy="give s3Url as scheme://host[:port]")
        endpoint, disable_tls = url.netloc, url.scheme == "http"
    else:
        if not region:
            # Velero would ask AWS for the bucket's region (getS3BucketRegion); the drill does not guess.
            raise ConfigError(f"BackupStorageLocation {name} has neither s3Url nor region",
                              remedy="set config.region on the BackupStorageLocation")
        endpoint, disable_tls = f"s3-{region}.amazonaws.com", False
    ca_cert = (spec.get("objectStorage") or {}).get("caCert")
    return KopiaRepository(
        volume_namespace=volume_namespace, bucket=bucket, region=region.strip("/"),
        prefix="/".join(p for p in (prefix, REPOSITORY_TYPE, volume_namespace) if p) + "/",
        endpoint=endpoint.strip("/"), disable_tls=disable_tls,
        disable_tls_verification=config.get("insecureSkipTLSVerify", "").lower() == "true",
        ca_cert_base64=str(ca_cert) if ca_cert else None)


def backup_tarball_key(bsl: Mapping[str, Any], backup: str) -> str:
    """The bucket key of a backup's resources (pkg/persistence/object_store_layout.go
    getBackupContentsKey: <prefix>/backups/<name>/<name>.tar.gz)."""
    _, prefix, _ = _bsl_bucket_prefix(bsl)
    return "/".join(p for p in (prefix, "backups", backup, f"{backup}.tar.gz") if p)


def repository_password(secret: Mapping[str, Any] | None, *, namespace: str = "velero") -> str:
    """The repository password from Velero's `velero-repo-credentials` Secret (trimmed, as
    unified_repo.go getRepoPassword does)."""
    data = (secret or {}).get("data") or {}
    if PASSWORD_KEY not in data:
        raise ConfigError(f"Secret {namespace}/{PASSWORD_SECRET} has no {PASSWORD_KEY!r}: Velero creates it at start "
                          "(pkg/repository/keys EnsureCommonRepositoryKey)",
                          remedy="check that the Velero server ran in this namespace")
    return base64.b64decode(str(data[PASSWORD_KEY])).decode().strip()


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str = ""


def credentials_from_file(text: str, *, profile: str = "default") -> S3Credentials:
    """Keys from an AWS shared credentials file (the BSL's `cloud` Secret key, which Velero and the
    node-agent read through AWS_SHARED_CREDENTIALS_FILE)."""
    parser = configparser.ConfigParser()
    parser.read_string(text)
    if not parser.has_section(profile):
        raise ConfigError(f"the S3 credentials file has no [{profile}] profile",
                          remedy="use the Secret the BackupStorageLocation's credential names")
    section = parser[profile]
    if not section.get("aws_access_key_id") or not section.get("aws_secret_access_key"):
        raise ConfigError(f"profile [{profile}] of the S3 credentials file lacks aws_access_key_id or "
                          "aws_secret_access_key", remedy="use the Secret the BackupStorageLocation's credential names")
    return S3Credentials(section["aws_access_key_id"], section["aws_secret_access_key"],
                         section.get("aws_session_token", ""))


# ---- kopia command lines ------------------------------------------------------------------------
@dataclass(frozen=True)
class KopiaCommands:
    """The kopia command lines for one repository, each run with `env` (secrets travel in the
    environment, never on a command line that an error message or a process list would show).

    Every command keeps its config, cache and logs under `home` (scratch space) so nothing is
    shared with another repository or run: a content cache filled before a pack was damaged would
    hide the damage.
    """

    repository: KopiaRepository
    home: str
    kopia: str = KOPIA
    parallel: int = 4

    def global_flags(self) -> list[str]:
        return [f"--config-file={self.home}/repository.config", f"--log-dir={self.home}/logs",
                "--no-persist-credentials"]

    def connect(self) -> list[str]:
        """`kopia repository connect s3 ... --readonly`: the drill can never write to the repository
        Velero owns (cli/command_repository_connect.go --readonly)."""
        repo = self.repository
        common = ["--readonly", "--no-check-for-updates", f"--cache-directory={self.home}/cache"]
        if repo.filesystem_path is not None:
            return [self.kopia, "repository", "connect", "filesystem", f"--path={repo.filesystem_path}", *common,
                    *self.global_flags()]
        command = [self.kopia, "repository", "connect", "s3", f"--bucket={repo.bucket}", f"--prefix={repo.prefix}",
                   f"--endpoint={repo.endpoint}", *common]
        if repo.region:
            command.append(f"--region={repo.region}")
        if repo.disable_tls:
            command.append("--disable-tls")
        if repo.disable_tls_verification:
            command.append("--disable-tls-verification")
        if repo.ca_cert_base64:
            command.append(f"--root-ca-pem-base64={repo.ca_cert_base64}")  # a public certificate
        return [*command, *self.global_flags()]

    def verify(self, snapshot_id: str) -> list[str]:
        """`kopia snapshot verify` of one snapshot with every file read (--verify-files-percent=100);
        it stops at the first error (--max-errors=0 means 1, snapshot_tree_walker.go), which is
        what makes a damaged pack fail at once."""
        _check_id(snapshot_id)
        return [self.kopia, "snapshot", "verify", "--verify-files-percent=100", f"--parallel={self.parallel}",
                f"--file-parallelism={self.parallel}", *self.global_flags(), snapshot_id]

    def restore(self, snapshot_id: str, target: str) -> list[str]:
        """`kopia snapshot restore` into `target` with owners, permissions and times (kopia's
        defaults, the same FilesystemOutput Velero's uploader uses) and --no-ignore-permission-errors:
        the ground truth must not be silently wrong where a Velero restore may be (Velero sets
        IgnorePermissionErrors). --mode=local so no target name turns it into a zip or tar."""
        _check_id(snapshot_id)
        return [self.kopia, "snapshot", "restore", "--mode=local", "--no-ignore-permission-errors",
                "--no-skip-owners", "--no-skip-permissions", "--no-skip-times", f"--parallel={self.parallel}",
                *self.global_flags(), snapshot_id, target]

    def env(self, *, password: str, credentials: S3Credentials) -> dict[str, str]:
        values = {"KOPIA_PASSWORD": password, "AWS_ACCESS_KEY_ID": credentials.access_key_id,
                  "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key, "KOPIA_CHECK_FOR_UPDATES": "false"}
        if credentials.session_token:
            values["AWS_SESSION_TOKEN"] = credentials.session_token
        return values


_SNAPSHOT_ID = re.compile(r"[0-9a-fA-F]{16,64}|k[0-9a-fA-F]{16,64}")


def _check_id(snapshot_id: str) -> None:
    # A PodVolumeBackup's status.snapshotID is a manifest ID (hex); anything else would reach
    # kopia's argument parser as a flag or a path.
    if not _SNAPSHOT_ID.fullmatch(snapshot_id):
        raise ConfigError(f"{snapshot_id!r} is not a Kopia snapshot ID", remedy="read it from the PodVolumeBackup's "
                          "status.snapshotID")


# ---- the verifier pod ---------------------------------------------------------------------------
def verifier_secret(*, name: str, namespace: str, env: Mapping[str, str]) -> Manifest:
    """The Secret the verifier pod reads its environment from (password and S3 keys)."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace,
                                                               "labels": {VERIFIER_LABEL: "snapshot-verifier"}},
            "type": "Opaque", "stringData": dict(env)}


def verifier_pod(*, name: str, namespace: str, image: str, claims: Sequence[str], secret: str,
                 scratch_size: str | None = None) -> Manifest:
    """A pod with kopia and busybox that mounts each restored claim read-only at /volumes/<claim>
    and an emptyDir at /scratch, and waits: the drill execs kopia and the inventory in it.

    Root, because a restore that keeps owners needs chown and the inventory must read every file;
    the claims are mounted read-only (in the pod spec and the volume source), so the verifier
    cannot change what it verifies.
    """
    volumes: list[Manifest] = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
                               for i, claim in enumerate(claims)]
    mounts: list[Manifest] = [{"name": f"v{i}", "mountPath": f"{VOLUMES}/{claim}", "readOnly": True}
                              for i, claim in enumerate(claims)]
    volumes.append({"name": "scratch", "emptyDir": {"sizeLimit": scratch_size} if scratch_size else {}})
    mounts.append({"name": "scratch", "mountPath": SCRATCH})
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {VERIFIER_LABEL: "snapshot-verifier"}},
        "spec": {
            "containers": [{
                "name": "verifier", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "exec sleep 86400"], "volumeMounts": mounts,
                "envFrom": [{"secretRef": {"name": secret}}],
                "env": [{"name": "HOME", "value": SCRATCH}],
                "securityContext": {"runAsUser": 0, "runAsGroup": 0},
            }],
            "volumes": volumes, "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
        },
    }


# ---- what kopia's output means ------------------------------------------------------------------
FailureKind = Literal["corrupt-pack", "missing-pack", "snapshot-not-found", "wrong-password",
                      "not-a-repository", "not-connected", "unreachable", "other"]


@dataclass(frozen=True)
class KopiaFailure:
    """One error line of kopia, understood."""

    kind: FailureKind
    line: str  # kopia's own words, colour codes removed
    blob: str | None = None  # the pack (p...) or index/metadata (q..., x...) blob named
    path: str | None = None  # the file of the snapshot it was reading, when kopia says


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SUMMARY = re.compile(r"encountered \d+ errors?")
_BLOB = r"([pqxsn][0-9a-f]{16,}(?:-s[0-9a-f]+)?(?:-c\d+)?)"
_CORRUPT = re.compile(r"invalid checksum at " + _BLOB)
_MISSING = re.compile(r"backed by missing blob " + _BLOB)
# "error processing <user>@<host>:<source>@<YYYY-MM-DD hh:mm:ss UTC>/<path>: ..." (snapshot_verifier.go)
_PROCESSING = re.compile(r"error processing .*?@\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+?/(.*?): ")
# "unable to open snapshot file for <target>/<path>: ..." (restore/local_fs_output.go copyFileContent)
_RESTORING = re.compile(r"unable to open snapshot file for (\S.*?): ")
_PATTERNS: tuple[tuple[FailureKind, re.Pattern[str]], ...] = (
    ("snapshot-not-found", re.compile(r"snapshot not found|found \d+ of the \d+ requested snapshot IDs")),
    ("wrong-password", re.compile(r"invalid repository password")),
    ("not-a-repository", re.compile(r"repository not initialized|kopia\.repository: blob not found|"
                                    r"BLOB not found|NoSuchBucket")),
    ("not-connected", re.compile(r"repository is not connected")),
    ("unreachable", re.compile(r"connection refused|no such host|i/o timeout|dial tcp|"
                               r"certificate signed by unknown authority|AccessDenied|SignatureDoesNotMatch")),
)


def classify_kopia_output(output: str) -> list[KopiaFailure]:
    """Every ERROR line of a kopia command, classified (duplicates, which kopia prints once when it
    happens and once in its summary, merged)."""
    failures: list[KopiaFailure] = []
    seen: set[tuple[str, str | None]] = set()
    summary = None
    for raw in output.splitlines():
        line = _ANSI.sub("", raw).strip()
        if not line.startswith("ERROR"):
            continue
        line = line.removeprefix("ERROR").strip()
        if _SUMMARY.fullmatch(line):  # kopia's count of the errors it printed: they are each named
            summary = line
            continue
        failure = _classify_line(line)
        key = _same(failure)
        if key in seen:
            if failure.path:  # the summary repeat lacks the path; keep the richer one
                failures = [failure if _same(f) == key and not f.path else f for f in failures]
            continue
        seen.add(key)
        failures.append(failure)
    if summary is not None and not failures:
        failures.append(KopiaFailure("other", summary))
    return failures


def _same(failure: KopiaFailure) -> tuple[str, str | None]:
    # kopia says one failure in several lines (where it happened, then its summary): one per
    # pack, one per kind of repository-level failure, every line of an unknown one.
    return failure.kind, failure.blob if failure.blob else (failure.line if failure.kind == "other" else None)


def _classify_line(line: str) -> KopiaFailure:
    path = None
    if (found := _PROCESSING.search(line)) or (found := _RESTORING.search(line)):
        path = found.group(1)
    if found := _CORRUPT.search(line):
        return KopiaFailure("corrupt-pack", line, blob=found.group(1), path=path)
    if found := _MISSING.search(line):
        return KopiaFailure("missing-pack", line, blob=found.group(1), path=path)
    for kind, pattern in _PATTERNS:
        if pattern.search(line):
            return KopiaFailure(kind, line, path=path)
    return KopiaFailure("other", line, path=path)


def kopia_problems(*, operation: str, volume: str, snapshot_id: str, repository: KopiaRepository, output: str,
                   returncode: int | None) -> list[str]:
    """Sentences for the drill's failure from one kopia command's result: a damaged or missing pack
    names the bucket object and the volume, so the report says what to look at.

    `returncode` None is a timeout. An exit 0 with ERROR lines is still a failure.
    """
    failures = classify_kopia_output(output)
    if returncode == 0 and not failures:
        return []
    where = f"{volume} (snapshot {snapshot_id}, repository {repository.location()})"
    problems = []
    for failure in failures:
        in_file = f" while reading {failure.path!r}" if failure.path else ""
        if failure.kind == "corrupt-pack" and failure.blob:
            problems.append(f"{where}: `kopia {operation}` found pack object {repository.object_url(failure.blob)} "
                            f"corrupted{in_file} (its content fails authentication: the object's bytes changed in the "
                            "bucket); this backup of the volume cannot be restored intact")
        elif failure.kind == "missing-pack" and failure.blob:
            problems.append(f"{where}: `kopia {operation}`: pack object {repository.object_url(failure.blob)} is "
                            f"missing from the bucket{in_file}; this backup of the volume cannot be restored")
        elif failure.kind == "snapshot-not-found":
            problems.append(f"{where}: `kopia {operation}`: the snapshot is not in the repository (deleted by "
                            f"maintenance or a different repository): {failure.line}")
        elif failure.kind == "wrong-password":
            problems.append(f"{where}: `kopia {operation}`: the password from Secret {PASSWORD_SECRET} does not "
                            "open the repository")
        elif failure.kind == "not-a-repository":
            problems.append(f"{where}: `kopia {operation}`: no Kopia repository at that prefix: {failure.line}")
        else:
            problems.append(f"{where}: `kopia {operation}` failed: {failure.line}")
    if not problems:
        reason = "timed out" if returncode is None else f"exited {returncode}"
        tail = _ANSI.sub("", output).strip()[-400:]
        problems.append(f"{where}: `kopia {operation}` {reason}" + (f": {tail}" if tail else ""))
    return problems


def restore_failure(restore: Mapping[str, Any], *, bsl: Mapping[str, Any]) -> BackupStoreError | None:
    """A Restore that failed because the backup's tarball could not be read: an error naming the
    object. Velero's restore controller downloads <prefix>/backups/<name>/<name>.tar.gz first
    (restore_controller.go runValidatedRestore -> downloadToTempFile) and records the failure as
    status.failureReason "error downloading backup: ..." with phase Failed."""
    status = restore.get("status") or {}
    reason = str(status.get("failureReason") or "")
    if status.get("phase") != "Failed" or "error downloading backup" not in reason:
        return None
    backup = str((restore.get("spec") or {}).get("backupName", ""))
    bucket, _, _ = _bsl_bucket_prefix(bsl)
    key = backup_tarball_key(bsl, backup)
    missing = any(word in reason for word in ("NoSuchKey", "StatusCode: 404", "status code: 404", "not found"))
    return BackupStoreError(
        f"Restore {(restore.get('metadata') or {}).get('name', '?')} failed: the tarball of backup {backup}, "
        f"s3://{bucket}/{key}, {'is missing from the bucket' if missing else 'could not be read'} "
        f"(Velero: {reason.strip()[-300:]})",
        remedy="the backup's resources are gone: restore from another backup, and find what deletes objects in the "
               "bucket (a lifecycle rule, a retention job, a second Velero with another prefix)")
