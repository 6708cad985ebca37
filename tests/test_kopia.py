"""Velero's Kopia repositories read without Velero: where they are, the kopia command lines, the
verifier pod, and what kopia's output means (recorded from the kopia CLI Velero v1.16.2 links)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from restoredrill.errors import ConfigError
from restoredrill.platform.kopia import (
    DEFAULT_PASSWORD,
    KopiaCommands,
    KopiaRepository,
    S3Credentials,
    backup_tarball_key,
    classify_kopia_output,
    credentials_from_file,
    filesystem_repository,
    kopia_problems,
    repository_for,
    repository_password,
    restore_failure,
    verifier_pod,
    verifier_secret,
)

SNAPSHOT = "8cda3a1c38ca050a57236faa40c3dad7"
PACK = "pe7ba9ea3ac245aeb7633d3b892732373-sb1fc2bff7e30f1e6147"
ESC = "\x1b"
# Recorded from `kopia snapshot verify --verify-files-percent=100` after 64 bytes of the pack were flipped.
CORRUPT_VERIFY = (
    "Listing blobs...\nListed 10 blobs.\nProcessed 0 objects.\n"
    f"{ESC}[31mERROR{ESC}[0m error processing root@vm:/tmp/kx/src@2026-12-01 20:53:33 UTC/big: error reading object "
    "bab095e5ee0362ae2affb70c1bf836b6: unable to open object bab095e5ee0362ae2affb70c1bf836b6: unexpected content "
    f"error: invalid checksum at {PACK} offset 95 length 3000028/3000028: decrypt: unable to decrypt content: cipher: "
    "message authentication failed\nFinished processing 5 objects.\n"
    f"{ESC}[31mERROR{ESC}[0m error reading object bab095e5ee0362ae2affb70c1bf836b6: unable to open object "
    f"bab095e5ee0362ae2affb70c1bf836b6: unexpected content error: invalid checksum at {PACK} offset 95 length "
    "3000028/3000028: decrypt: unable to decrypt content: cipher: message authentication failed\n"
)
# ... and after the pack was deleted.
MISSING_VERIFY = (
    "Listing blobs...\nListed 9 blobs.\nProcessed 0 objects.\n"
    f"{ESC}[31mERROR{ESC}[0m error processing root@vm:/tmp/kx/src@2026-12-01 20:53:33 UTC/data/big: object "
    f"bab095e5ee0362ae2affb70c1bf836b6 is backed by missing blob {PACK}\nFinished processing 3 objects.\n"
    f"{ESC}[31mERROR{ESC}[0m object bab095e5ee0362ae2affb70c1bf836b6 is backed by missing blob {PACK}\n"
)
CORRUPT_RESTORE = (
    "Restoring to local filesystem (/scratch/snapshots/data) with parallelism=4...\n"
    f"{ESC}[31mERROR{ESC}[0m error restoring: restore error: copy file: error creating file: unable to open snapshot "
    "file for /scratch/snapshots/data/big: unable to open object: bab095e5ee0362ae2affb70c1bf836b6: unexpected "
    f"content error: invalid checksum at {PACK} offset 95 length 3000028/3000028: decrypt: unable to decrypt content: "
    "cipher: message authentication failed\n"
)
NOT_FOUND = ("Listing blobs...\nListed 9 blobs.\n"
             f"{ESC}[31mERROR{ESC}[0m unable to parse snapshot manifest {SNAPSHOT}: snapshot not found\n"
             f"Finished processing 0 objects.\n{ESC}[31mERROR{ESC}[0m found 0 of the 1 requested snapshot IDs to "
             "verify\n")
# Recorded from `kopia repository connect filesystem ... --readonly` with a wrong KOPIA_PASSWORD.
WRONG_PASSWORD = (f"{ESC}[31mERROR{ESC}[0m failed to open repository: unable to create format manager: invalid "
                  f"repository password\n{ESC}[31mERROR{ESC}[0m error connecting to repository: unable to create "
                  "format manager: invalid repository password\n")


def minio_bsl(**config: str) -> dict[str, Any]:
    return {"metadata": {"name": "default"},
            "spec": {"provider": "aws", "objectStorage": {"bucket": "velero", "prefix": "/cluster-a/"},
                     "config": {"region": "minio", "s3ForcePathStyle": "true",
                                "s3Url": "http://minio.minio.svc:9000", **config}}}


# ---- where the repository is ------------------------------------------------------------------
def test_the_repository_of_a_volume_namespace_is_under_the_bsl_prefix() -> None:
    repo = repository_for(minio_bsl(), volume_namespace="pelican")
    assert repo == KopiaRepository(volume_namespace="pelican", bucket="velero", prefix="cluster-a/kopia/pelican/",
                                   endpoint="minio.minio.svc:9000", region="minio", disable_tls=True)
    assert repo.object_url(PACK) == f"s3://velero/cluster-a/kopia/pelican/{PACK}"


def test_no_prefix_https_and_skipped_verification() -> None:
    bsl = minio_bsl(s3Url="https://s3.example.org/", insecureSkipTLSVerify="true")
    bsl["spec"]["objectStorage"] = {"bucket": "backups", "caCert": "Q0E="}
    repo = repository_for(bsl, volume_namespace="immich")
    assert (repo.prefix, repo.endpoint, repo.disable_tls, repo.disable_tls_verification, repo.ca_cert_base64) == (
        "kopia/immich/", "s3.example.org", False, True, "Q0E=")


def test_aws_without_s3url_uses_the_regional_endpoint() -> None:
    bsl = {"spec": {"provider": "velero.io/aws", "objectStorage": {"bucket": "b"}, "config": {"region": "eu-west-1"}}}
    repo = repository_for(bsl, volume_namespace="n")
    assert (repo.endpoint, repo.disable_tls) == ("s3-eu-west-1.amazonaws.com", False)


@pytest.mark.parametrize("spec, message", [
    ({"provider": "gcp", "objectStorage": {"bucket": "b"}}, "only S3"),
    ({"provider": "aws", "objectStorage": {"bucket": "b"}, "config": {}}, "neither s3Url nor region"),
    ({"provider": "aws", "objectStorage": {"bucket": "b"}, "config": {"s3Url": "http://h:9000/path"}}, "has a path"),
    ({"provider": "aws", "config": {"s3Url": "http://h"}}, "names no bucket"),
])
def test_a_bsl_the_drill_cannot_read_says_why(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        repository_for({"metadata": {"name": "x"}, "spec": spec}, volume_namespace="n")


def test_the_backup_tarball_key() -> None:
    assert backup_tarball_key(minio_bsl(), "pelican-1") == "cluster-a/backups/pelican-1/pelican-1.tar.gz"
    bsl = {"spec": {"provider": "aws", "objectStorage": {"bucket": "b"}}}
    assert backup_tarball_key(bsl, "x") == "backups/x/x.tar.gz"


def test_the_repository_password_is_read_from_velero_repo_credentials_trimmed() -> None:
    secret = {"data": {"repository-password": base64.b64encode(f"{DEFAULT_PASSWORD}\n".encode()).decode()}}
    assert repository_password(secret) == "static-passw0rd"
    with pytest.raises(ConfigError, match="velero/velero-repo-credentials has no 'repository-password'"):
        repository_password(None)


def test_credentials_from_an_aws_credentials_file() -> None:
    text = "[default]\naws_access_key_id = minio\naws_secret_access_key = minio123\n"
    assert credentials_from_file(text) == S3Credentials("minio", "minio123")
    with pytest.raises(ConfigError, match=r"no \[other\] profile"):
        credentials_from_file(text, profile="other")
    with pytest.raises(ConfigError, match="lacks"):
        credentials_from_file("[default]\naws_access_key_id = x\n")


# ---- command lines ----------------------------------------------------------------------------
@pytest.fixture
def commands() -> KopiaCommands:
    return KopiaCommands(repository=repository_for(minio_bsl(), volume_namespace="pelican"), home="/scratch/kopia")


def test_connect_is_read_only_and_carries_no_secret(commands: KopiaCommands) -> None:
    argv = commands.connect()
    assert argv[:4] == ["/usr/local/bin/kopia", "repository", "connect", "s3"]
    assert {"--readonly", "--bucket=velero", "--prefix=cluster-a/kopia/pelican/", "--endpoint=minio.minio.svc:9000",
            "--disable-tls", "--region=minio", "--no-check-for-updates", "--cache-directory=/scratch/kopia/cache",
            "--config-file=/scratch/kopia/repository.config", "--no-persist-credentials"} <= set(argv)
    env = commands.env(password="s3cret", credentials=S3Credentials("AK", "SK"))
    assert env == {"KOPIA_PASSWORD": "s3cret", "AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK",
                   "KOPIA_CHECK_FOR_UPDATES": "false"}
    assert not any(secret in arg for arg in argv for secret in env.values() if secret != "false")


def test_verify_reads_every_file_and_restore_keeps_every_attribute(commands: KopiaCommands) -> None:
    verify = commands.verify(SNAPSHOT)
    assert verify[1:3] == ["snapshot", "verify"] and verify[-1] == SNAPSHOT
    assert "--verify-files-percent=100" in verify
    restore = commands.restore(SNAPSHOT, "/scratch/snapshots/data")
    assert restore[1:3] == ["snapshot", "restore"] and restore[-2:] == [SNAPSHOT, "/scratch/snapshots/data"]
    assert {"--mode=local", "--no-ignore-permission-errors", "--no-skip-owners", "--no-skip-permissions",
            "--no-skip-times"} <= set(restore)


@pytest.mark.parametrize("bad", ["--all", "../x", "", "8cda3a1c 38ca"])
def test_a_snapshot_id_is_never_a_flag_or_a_path(commands: KopiaCommands, bad: str) -> None:
    with pytest.raises(ConfigError, match="not a Kopia snapshot ID"):
        commands.verify(bad)


def test_a_filesystem_repository_connects_by_path() -> None:
    argv = KopiaCommands(repository=filesystem_repository("/tmp/repo"), home="/tmp/h").connect()
    assert argv[2:5] == ["connect", "filesystem", "--path=/tmp/repo"] and "--readonly" in argv


# ---- the verifier pod -------------------------------------------------------------------------
def test_the_verifier_pod_mounts_claims_read_only_and_scratch() -> None:
    pod = verifier_pod(name="v", namespace="pelican", image="restoredrill.local/kopia:velero-v1.16.2",
                       claims=["pelican-data", "pelican-logs"], secret="v", scratch_size="20Gi")
    (container,) = pod["spec"]["containers"]
    claims = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/volumes/pelican-data"]["readOnly"] and mounts["/volumes/pelican-logs"]["readOnly"]
    assert claims[mounts["/volumes/pelican-data"]["name"]]["persistentVolumeClaim"] == {
        "claimName": "pelican-data", "readOnly": True}
    assert claims[mounts["/scratch"]["name"]]["emptyDir"] == {"sizeLimit": "20Gi"}
    assert "readOnly" not in mounts["/scratch"]
    assert container["envFrom"] == [{"secretRef": {"name": "v"}}]
    assert container["securityContext"]["runAsUser"] == 0
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_the_verifier_secret_holds_the_environment() -> None:
    secret = verifier_secret(name="v", namespace="n", env={"KOPIA_PASSWORD": "p"})
    assert secret["stringData"] == {"KOPIA_PASSWORD": "p"} and secret["metadata"]["namespace"] == "n"


# ---- kopia's output ---------------------------------------------------------------------------
def test_a_corrupted_pack_is_named_once_with_the_file_it_broke() -> None:
    (failure,) = classify_kopia_output(CORRUPT_VERIFY)
    assert (failure.kind, failure.blob, failure.path) == ("corrupt-pack", PACK, "big")
    assert "\x1b" not in failure.line


def test_a_missing_pack_is_named() -> None:
    (failure,) = classify_kopia_output(MISSING_VERIFY)
    assert (failure.kind, failure.blob, failure.path) == ("missing-pack", PACK, "data/big")


def test_a_corrupted_pack_during_restore() -> None:
    (failure,) = classify_kopia_output(CORRUPT_RESTORE)
    assert (failure.kind, failure.blob, failure.path) == ("corrupt-pack", PACK, "/scratch/snapshots/data/big")


@pytest.mark.parametrize("output, kind", [
    (NOT_FOUND, "snapshot-not-found"),
    (WRONG_PASSWORD, "wrong-password"),
    ("ERROR open repository: repository is not connected. See https://kopia.io/docs/repositories/", "not-connected"),
    ("ERROR error connecting to repository: unable to get repository storage: dial tcp 10.0.0.1:9000: connect: "
     "connection refused", "unreachable"),
    ("ERROR something new", "other"),
])
def test_other_failures_are_classified(output: str, kind: str) -> None:
    assert [f.kind for f in classify_kopia_output(output)][:1] == [kind]


def test_one_failure_said_in_several_lines_is_one_problem() -> None:
    assert [f.kind for f in classify_kopia_output(WRONG_PASSWORD)] == ["wrong-password"]
    assert [f.kind for f in classify_kopia_output(NOT_FOUND)] == ["snapshot-not-found"]
    assert len(classify_kopia_output("ERROR one thing\nERROR another thing\n")) == 2


def test_kopia_problems_name_the_bucket_object_and_the_volume() -> None:
    repo = repository_for(minio_bsl(), volume_namespace="pelican")
    (problem,) = kopia_problems(operation="snapshot verify", volume="PVC pelican/pelican-data", snapshot_id=SNAPSHOT,
                                repository=repo, output=CORRUPT_VERIFY, returncode=1)
    assert problem.startswith(f"PVC pelican/pelican-data (snapshot {SNAPSHOT}, repository "
                              "s3://velero/cluster-a/kopia/pelican/)")
    assert f"pack object s3://velero/cluster-a/kopia/pelican/{PACK} corrupted while reading 'big'" in problem
    (missing,) = kopia_problems(operation="snapshot verify", volume="v", snapshot_id=SNAPSHOT, repository=repo,
                                output=MISSING_VERIFY, returncode=1)
    assert f"s3://velero/cluster-a/kopia/pelican/{PACK} is missing from the bucket" in missing


def test_kopia_problems_on_success_timeouts_and_silent_failures() -> None:
    repo = filesystem_repository("/r")
    ok = "Listing blobs...\nListed 10 blobs.\nProcessed 0 objects.\nFinished processing 5 objects.\n"
    assert kopia_problems(operation="snapshot verify", volume="v", snapshot_id=SNAPSHOT, repository=repo, output=ok,
                          returncode=0) == []
    (timed_out,) = kopia_problems(operation="snapshot verify", volume="v", snapshot_id=SNAPSHOT, repository=repo,
                                  output="Listing blobs...", returncode=None)
    assert "`kopia snapshot verify` timed out: Listing blobs..." in timed_out
    # An ERROR line fails even when kopia exits 0.
    assert kopia_problems(operation="snapshot verify", volume="v", snapshot_id=SNAPSHOT, repository=repo,
                          output=CORRUPT_VERIFY, returncode=0)


# ---- the backup's tarball ---------------------------------------------------------------------
def failed_restore(reason: str, phase: str = "Failed") -> dict[str, Any]:
    return {"metadata": {"name": "pelican-restore"}, "spec": {"backupName": "pelican-1"},
            "status": {"phase": phase, "failureReason": reason}}


def test_a_missing_backup_tarball_is_an_error_naming_it() -> None:
    reason = ("error downloading backup: rpc error: code = Unknown desc = operation error S3: GetObject, https "
              "response error StatusCode: 404, RequestID: 1, HostID: 2, api error NoSuchKey: The specified key does "
              "not exist.")
    error = restore_failure(failed_restore(reason), bsl=minio_bsl())
    assert error is not None
    assert ("Restore pelican-restore failed: the tarball of backup pelican-1, "
            "s3://velero/cluster-a/backups/pelican-1/pelican-1.tar.gz, is missing from the bucket") in str(error)
    assert "NoSuchKey" in str(error) and error.remedy


def test_other_restore_failures_are_not_blamed_on_the_tarball() -> None:
    assert restore_failure(failed_restore("error downloading backup: EOF"), bsl=minio_bsl()) is not None
    assert restore_failure(failed_restore("context deadline exceeded"), bsl=minio_bsl()) is None
    assert restore_failure(failed_restore("", phase="Completed"), bsl=minio_bsl()) is None
    assert restore_failure({}, bsl=minio_bsl()) is None
