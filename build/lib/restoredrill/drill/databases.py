"""The runbook's CNPG recovery options B and C, for a Cluster the namespace drill deployed and seeded.

Option A (the Velero PVC restore, the operator adopting the restored data) is the namespace drill
itself. Here:
- B: configure barman backups on the live Cluster (what paying TD-004 means), take a CNPG Backup,
  then bootstrap a new Cluster from it with `bootstrap.recovery` and an `externalClusters`
  `barmanObjectStore` source, as the runbook's YAML does;
- C: `pg_dump -Fc` from the primary, a fresh Cluster bootstrapped with initdb, the dump copied in and
  `pg_restore --clean --if-exists`, with the runbook's own commands.
Each is verified by the drill table's row count and content digest, and timed. Recovery Clusters
live in namespaces this run creates (and deletes).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from restoredrill.drill import data
from restoredrill.errors import CommandError, RestoreDrillError
from restoredrill.platform import CloudNativePG
from restoredrill.platform.base import PlatformContext
from restoredrill.platform.cnpg import GROUP, VERSION, barman_object_store, s3_credentials_secret
from restoredrill.platform.s3 import S3Client
from restoredrill.waits import wait_until

DUMP_PATH = "/tmp/immich-backup.dump"
# CNPG instance containers have a read-only root filesystem; TMPDIR is /controller/tmp.
FALLBACK_DUMP_PATH = "/controller/tmp/immich-backup.dump"


class RecoveryFailed(RestoreDrillError):
    pass


@dataclass
class RecoveryRecord:
    option: str
    source: str
    target: str
    seconds: float | None = None
    rows: int = 0
    steps: list[str] = field(default_factory=list)

    def facts(self) -> dict[str, Any]:
        return {"scenario": f"cnpg-option-{self.option}", "recovery_source": self.source,
                "recovery_target": self.target, "rto_s": self.seconds, "rows_verified": self.rows,
                "steps": self.steps}


def recovery_cluster(source: dict[str, Any], *, namespace: str, image: str, bootstrap: dict[str, Any],
                     external: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The repo's Cluster as the runbook rewrites it: same name and storage, a new bootstrap."""
    cluster = copy.deepcopy(source)
    cluster["metadata"] = {"name": source["metadata"]["name"], "namespace": namespace,
                           "labels": dict((source.get("metadata") or {}).get("labels") or {})}
    spec = cluster.setdefault("spec", {})
    spec["imageName"] = image
    spec["bootstrap"] = bootstrap
    spec.pop("backup", None)
    if external:
        spec["externalClusters"] = external
    else:
        spec.pop("externalClusters", None)
    return cluster


@dataclass
class CnpgRecovery:
    ctx: PlatformContext
    cnpg: CloudNativePG
    s3: S3Client
    source_namespace: str
    cluster: dict[str, Any]  # the repo's Cluster manifest
    database: str
    image: str
    out: Callable[[str], None] = print
    # Where the runbook's own commands did not work as written (and what was done instead).
    findings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.cluster["metadata"]["name"])

    def check(self, namespace: str) -> data.TableCheck:
        return data.TableCheck.parse(self.cnpg.psql(cluster=self.name, namespace=namespace, sql=data.POSTGRES_CHECK,
                                                    database=self.database))

    # ---- option B ------------------------------------------------------------------------------
    def configure_object_store_backups(self, *, server_name: str) -> None:
        """Turn on barman backups for the live Cluster (the fix of TD-004) and wait for WAL archiving."""
        ns = self.source_namespace
        self.ctx.apply([s3_credentials_secret(self.cnpg.store()[1], namespace=ns)])
        store = barman_object_store(self.cnpg.store()[0], server_name=server_name)
        self.ctx.merge_patch(GROUP, VERSION, "clusters", ns, self.name, {"spec": {"backup": {"barmanObjectStore":
                                                                                             store}}})

        def archiving() -> tuple[bool | None, str]:
            cluster = self.ctx.get_object(GROUP, VERSION, "clusters", ns, self.name) or {}
            for condition in (cluster.get("status") or {}).get("conditions") or []:
                if condition.get("type") == "ContinuousArchiving":
                    ok = condition.get("status") == "True"
                    return (True if ok else None), f"{condition.get('reason')}: {condition.get('message')}"
            return None, "no ContinuousArchiving condition yet"

        wait_until(f"WAL archiving of {ns}/{self.name} to the object store", archiving,
                   timeout=self.ctx.timeout("cnpg_cluster_ready"))

    def take_backup(self, *, name: str) -> dict[str, Any]:
        self.cnpg.create_backup(name=name, namespace=self.source_namespace, cluster=self.name)
        return self.cnpg.wait_for_backup(name=name, namespace=self.source_namespace)

    def check_backup_exists(self, *, server_name: str) -> None:
        """Fail fast, and clearly, when the object store holds no base backup for `server_name`."""
        bucket = self.cnpg.store()[0].cnpg_bucket
        prefix = f"{server_name}/base/"
        keys = self.s3.list_keys(bucket, prefix=prefix)
        if not keys:
            raise RecoveryFailed(
                f"no CNPG base backup under s3://{bucket}/{prefix} on {self.cnpg.store()[0].url}: a Cluster "
                f"bootstrapped from it would never start",
                remedy="check externalClusters[].barmanObjectStore destinationPath and serverName against the "
                "Cluster that took the backups (its spec.backup.barmanObjectStore), and that a Backup completed")

    def recover_from_object_store(self, *, namespace: str, server_name: str) -> RecoveryRecord:
        record = RecoveryRecord(option="B", source=f"s3://{self.cnpg.store()[0].cnpg_bucket}/{server_name}",
                                target=f"{namespace}/{self.name}")
        started = time.monotonic()
        self.check_backup_exists(server_name=server_name)
        source = f"{self.name}-backup"
        store = barman_object_store(self.cnpg.store()[0], server_name=server_name)
        self.ctx.apply([s3_credentials_secret(self.cnpg.store()[1], namespace=namespace)])
        self.ctx.apply([recovery_cluster(self.cluster, namespace=namespace, image=self.image,
                                         bootstrap={"recovery": {"source": source}},
                                         external=[{"name": source, "barmanObjectStore": store}])])
        self.cnpg.wait_for_cluster_healthy(name=self.name, namespace=namespace)
        record.seconds = round(time.monotonic() - started, 1)
        return record

    # ---- option C ------------------------------------------------------------------------------
    def pod(self, namespace: str) -> str:
        return self.cnpg.primary_pod(cluster=self.name, namespace=namespace)

    def dump(self) -> bytes:
        """The runbook's `kubectl exec ... pg_dump -U <owner> -d <db> -Fc > immich-backup.dump`.

        CNPG lets only the `postgres` OS user in over the instance's local socket (peer
        authentication), so `-U <owner>` is refused there: that is recorded as a runbook finding and
        the dump is taken as `postgres`, which the same socket accepts.
        """
        pod = self.pod(self.source_namespace)

        def pg_dump(user: str) -> bytes:
            return self.ctx.kubectl_bytes(["-n", self.source_namespace, "exec", pod, "-c", "postgres", "--",
                                           "pg_dump", "-U", user, "-d", self.database, "-Fc"],
                                          input=b"", timeout=self.ctx.timeout("command") * 3)

        return self._runbook_or_postgres("pg_dump", pg_dump)

    def _runbook_or_postgres(self, tool: str, action: Callable[[str], bytes]) -> bytes:
        try:
            return action(self.owner())
        except CommandError as error:
            if "Peer authentication failed" not in error.output:
                raise RecoveryFailed(f"the runbook's {tool} failed: {error.output.strip()[-400:]}") from error
            self.findings.append(
                f"runbook Option C: `{tool} -U {self.owner()}` inside the instance pod fails: "
                f"{error.output.strip().splitlines()[0]} (CNPG allows only the postgres user over the local "
                f"socket). Fix the runbook: drop `-U {self.owner()}` (run as postgres), or connect over TCP "
                f"with `-h localhost` and the password from Secret {self.name}-app.")
        try:
            return action("postgres")
        except CommandError as error:
            raise RecoveryFailed(f"{tool} as postgres failed too: {error.output.strip()[-400:]}") from error

    def copy_dump(self, dump: bytes, *, namespace: str, pod: str) -> str:
        """The runbook's `kubectl cp immich-backup.dump <ns>/<pod>:/tmp/`; where the instance container's
        root filesystem is read-only (CNPG's default), recorded as a finding and copied to its TMPDIR."""
        for path in (DUMP_PATH, FALLBACK_DUMP_PATH):
            try:
                self.ctx.kubectl_bytes(["-n", namespace, "exec", "-i", pod, "-c", "postgres", "--", "sh", "-c",
                                        f"cat > {path}"], input=dump, timeout=self.ctx.timeout("command"))
                return path
            except CommandError as error:
                if "Read-only file system" not in error.output or path == FALLBACK_DUMP_PATH:
                    raise RecoveryFailed(f"copying the dump into {namespace}/{pod}:{path} failed: "
                                         f"{error.output.strip()[-300:]}") from error
                self.findings.append(
                    f"runbook Option C: `kubectl cp immich-backup.dump {namespace}/{pod}:/tmp/` fails: the CNPG "
                    f"instance container's root filesystem is read-only. Fix the runbook: copy it to "
                    f"{FALLBACK_DUMP_PATH.rsplit('/', 1)[0]}/ (the container's TMPDIR) and pg_restore from there.")
        raise AssertionError("unreachable")

    def owner(self) -> str:
        initdb = ((self.cluster.get("spec") or {}).get("bootstrap") or {}).get("initdb") or {}
        return str(initdb.get("owner") or self.database)

    def restore_dump(self, dump: bytes, *, namespace: str) -> RecoveryRecord:
        record = RecoveryRecord(option="C", source=f"pg_dump of {self.source_namespace}/{self.name}",
                                target=f"{namespace}/{self.name}")
        started = time.monotonic()
        initdb = ((self.cluster.get("spec") or {}).get("bootstrap") or {}).get("initdb") or {
            "database": self.database, "owner": self.owner()}
        self.ctx.apply([recovery_cluster(self.cluster, namespace=namespace, image=self.image,
                                         bootstrap={"initdb": initdb})])
        self.cnpg.wait_for_cluster_healthy(name=self.name, namespace=namespace)
        pod = self.pod(namespace)
        path = self.copy_dump(dump, namespace=namespace, pod=pod)

        def pg_restore(user: str) -> bytes:
            return self.ctx.kubectl_bytes(["-n", namespace, "exec", pod, "-c", "postgres", "--", "pg_restore", "-U",
                                           user, "-d", self.database, "--clean", "--if-exists", path],
                                          input=b"", timeout=self.ctx.timeout("command") * 3)

        self._runbook_or_postgres("pg_restore", pg_restore)
        record.seconds = round(time.monotonic() - started, 1)
        return record
