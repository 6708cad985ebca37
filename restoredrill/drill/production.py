"""The production-backup drill: last night's real backup restored somewhere harmless, proven whole,
and judged for its age.

In a drill cluster (ephemeral: nothing of production runs there) the drill
1. gives the drill cluster's Velero a second BackupStorageLocation for the production store, with
   `accessMode: ReadOnly` and the credentials the user passes (an AWS-style credentials file, as
   Velero's own Secret holds), bucket, prefix, region and path style read from the repo (the
   Velero HelmRelease's `configuration.backupStorageLocation` or a BSL manifest), the URL from the
   repo unless the user gives one the drill cluster can reach;
2. waits until the location is Available and Velero's backup sync has brought in the app's
   Schedule's backups with their PodVolumeBackups;
3. picks one (`latest`, `random` within a window, as AWS Backup's restore testing does, or a
   name) and judges its age against the Schedule's cron (RPO);
4. creates the app's Flux Kustomizations suspended, restores the backup into the app's own
   namespace (the cluster is ephemeral), waits for every PodVolumeRestore and the pods;
5. verifies on evidence: the Restore Completed with only allowed warnings, one Completed
   PodVolumeRestore per PodVolumeBackup restoring as many bytes, every object of the backup
   present, each volume against its Kopia snapshot (verified in the production repository, read
   only) entry by entry, CNPG Clusters healthy, pods Ready, the user's declared checks;
6. resumes Flux and proves it adopted what the restore brought back (no object recreated).

Never a write to production (Velero v1.16.2, read for it): a ReadOnly location takes no Backup
(backup_controller: "backup can't be created because backup storage location ... is currently in
read-only mode"), no deletion (backup_deletion_controller, gc_controller skip it), no Kopia
maintenance (backup_repository_controller: "Skip running maintenance ... ReadOnly") and no new
repository (unified_repo.go PrepareRepo refuses to init one). The drill itself creates only the
Restore (which lives in the drill cluster and reads the store) and reads the repository with a
read-only kopia connect. The production drill test puts a recording proxy in front of the store
and asserts that no request but a read reached it.
"""

from __future__ import annotations

import base64
import configparser
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from restoredrill.catalogue import Catalogue, StorageLocation, dig
from restoredrill.drill import data
from restoredrill.drill.mapped import (
    ISOLATION_POLICY,
    NOT_COMPARED_KINDS,
    NOT_COMPARED_NAMES,
    isolation_policy,
    missing_objects,
)
from restoredrill.drill.namespace import DrillFailed, NamespaceDrill, pod_volume_claims
from restoredrill.errors import ConfigError, RestoreDrillError
from restoredrill.gosyntax import (
    GoSyntaxError,
    activation_interval,
    format_go_duration,
    next_activation,
    parse_velero_cron,
)
from restoredrill.platform import kopia
from restoredrill.platform.base import Manifest, labels
from restoredrill.platform.recorder import (
    forwarded_writes,
    parse_requests,
    recorder_manifests,
    recorder_url,
)
from restoredrill.platform.velero import GROUP, VERSION, velero_label_value
from restoredrill.podvolumes import compare_pod_volumes
from restoredrill.velero_semantics import default_storage_location
from restoredrill.verify import fs_backup_volumes
from restoredrill.waits import wait_until

PRODUCTION_BSL = "restoredrill-production"
PRODUCTION_SECRET = "restoredrill-production-credentials"
SHIELD = "restoredrill-production-shield"
SCHEDULE_LABEL = "velero.io/schedule-name"
STORAGE_LOCATION_LABEL = "velero.io/storage-location"
FLUX_NAME_LABEL = "kustomize.toolkit.fluxcd.io/name"
CHOICES = ("latest", "random")


# ---- where production keeps its backups (pure) ----------------------------------------------------
@dataclass(frozen=True)
class ProductionLocation:
    """The production BackupStorageLocation as the repo declares it, with the URL the drill uses."""

    name: str  # the location's name in production
    provider: str
    bucket: str
    prefix: str
    config: Mapping[str, str]  # region, s3ForcePathStyle, s3Url, ... (s3Url possibly replaced)
    source: str  # file and field it was read from

    @property
    def url(self) -> str:
        return self.config.get("s3Url", "")

    def manifest(self, *, namespace: str, s3_url: str | None = None) -> Manifest:
        """The drill cluster's ReadOnly location for it (`s3_url`: reached through the shield)."""
        storage = {"bucket": self.bucket, **({"prefix": self.prefix} if self.prefix else {})}
        # Path style always: the shield's name is the host, never `<bucket>.<host>`. No publicUrl:
        # Velero signs download URLs with it, which would bypass the shield (plugin object_store.go).
        config = {**{k: v for k, v in self.config.items() if k != "publicUrl"},
                  **({"s3Url": s3_url} if s3_url else {}), "s3ForcePathStyle": "true"}
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupStorageLocation",
                "metadata": {"name": PRODUCTION_BSL, "namespace": namespace, "labels": labels("production")},
                "spec": {"provider": self.provider, "accessMode": "ReadOnly", "objectStorage": storage,
                         "config": config, "credential": {"name": PRODUCTION_SECRET, "key": "cloud"}}}


def production_location(catalogue: Catalogue, *, schedule_template: Mapping[str, Any],
                        s3_url: str | None = None) -> ProductionLocation:
    """The location the app's Schedule writes to (its storageLocation, else the default one), read
    from the repo; `s3_url` replaces the repo's `s3Url` (an in-cluster name of production is not
    reachable from the drill cluster). Errors name the file, the field and the fix."""
    locations = list(catalogue.storage_locations)
    if not locations:
        raise ConfigError("the repo declares no Velero BackupStorageLocation (neither a BackupStorageLocation "
                          "manifest nor the Velero HelmRelease's configuration.backupStorageLocation)",
                          remedy="the production drill reads bucket, prefix and region from the repo: declare the "
                                 "location in the repo")
    wanted = str(schedule_template.get("storageLocation") or default_storage_location(
        ((loc.name, loc.default) for loc in locations), catalogue.velero_defaults.default_storage_location))
    found = next((loc for loc in locations if loc.name == wanted), None)
    if found is None:
        raise ConfigError(f"the app's Schedule writes to BackupStorageLocation {wanted!r}, which the repo does not "
                          f"declare (it declares {', '.join(sorted(loc.name for loc in locations))})",
                          remedy="declare that location in the repo, or point the Schedule at one it declares")
    return _read_location(found, s3_url=s3_url)


def _read_location(location: StorageLocation, *, s3_url: str | None) -> ProductionLocation:
    manifest = location.manifest
    body = dig(manifest.obj, location.field_path) if location.field_path else manifest.obj.get("spec")
    body = body if isinstance(body, dict) else {}
    where = f"{manifest.location(location.field_path) if location.field_path else manifest.path}"
    # A manifest has spec.objectStorage.bucket; the chart's values have bucket beside provider.
    nested = body.get("objectStorage")
    storage: dict[str, Any] = nested if isinstance(nested, dict) else body
    bucket, prefix = str(storage.get("bucket") or ""), str(storage.get("prefix") or "")
    config = {str(k): str(v).lower() if isinstance(v, bool) else str(v)
              for k, v in (body.get("config") or {}).items()}
    if s3_url:
        config["s3Url"] = s3_url
    field = "objectStorage.bucket" if storage is not body else "bucket"
    if not bucket or "${" in bucket:
        raise ConfigError(f"{where}: the BackupStorageLocation {location.name!r} has no literal {field} "
                          f"({bucket or 'none'}): the drill cannot tell which bucket production writes to",
                          remedy="write the bucket name in the repo (a Flux substitution such as ${BUCKET} is "
                                 "not resolved by the drill)")
    url = config.get("s3Url", "")
    if "${" in url or not url:
        raise ConfigError(f"{where}: config.s3Url is {url or 'not set'}", remedy="pass --production-s3-url URL: "
                          "the production store's S3 URL as the drill cluster can reach it")
    if not url.startswith("http://") or "amazonaws.com" in url:
        raise ConfigError(f"production's S3 URL {url} ({'--production-s3-url' if s3_url else where + ': config.s3Url'})"
                          " is not a plain http endpoint: the drill reads production only through its write shield, "
                          "which forwards plain http, path-style, to a store that accepts the client's Host",
                          remedy="pass --production-s3-url with the store's http:// endpoint as the drill cluster "
                                 "reaches it (SeaweedFS's and MinIO's S3 gateways serve one)")
    return ProductionLocation(name=location.name, provider=str(body.get("provider") or "aws"), bucket=bucket,
                              prefix=prefix, config=config, source=where)


def read_credentials_file(path: Path) -> str:
    """The text of an AWS-style credentials file, checked (never printed)."""
    if not path.is_file():
        raise ConfigError(f"production credentials file {path} does not exist",
                          remedy="pass --production-credentials FILE: an AWS credentials file with the "
                                 "[default] aws_access_key_id and aws_secret_access_key production's Velero uses")
    text = path.read_text()
    try:
        kopia.credentials_from_file(text)
    except (ConfigError, ValueError, configparser.Error) as error:
        raise ConfigError(f"production credentials file {path}: {error}",
                          remedy="write it as Velero's Secret holds it: [default] with aws_access_key_id and "
                                 "aws_secret_access_key lines") from None
    return text


# ---- which backup, and is it fresh enough (pure) ---------------------------------------------------
def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _finished(backup: Mapping[str, Any]) -> datetime:
    status = backup.get("status") or {}
    moment = parse_time(status.get("completionTimestamp")) or parse_time(status.get("startTimestamp"))
    return moment or parse_time((backup.get("metadata") or {}).get("creationTimestamp")) or datetime.min.replace(
        tzinfo=UTC)


def _describe(backup: Mapping[str, Any]) -> str:
    status = backup.get("status") or {}
    return (f"{(backup.get('metadata') or {}).get('name')} ({status.get('phase') or 'no phase'}, completed "
            f"{status.get('completionTimestamp') or 'never'})")


def schedule_backups(backups: Sequence[Mapping[str, Any]], *, schedule: str) -> list[Mapping[str, Any]]:
    """The synced backups of one Schedule in the production location, newest first."""
    mine = [b for b in backups if ((b.get("metadata") or {}).get("labels") or {}).get(SCHEDULE_LABEL)
            == velero_label_value(schedule) and (b.get("spec") or {}).get("storageLocation") == PRODUCTION_BSL]
    return sorted(mine, key=_finished, reverse=True)


def pick_backup(backups: Sequence[Mapping[str, Any]], *, schedule: str, choice: str, now: datetime,
                window: timedelta, rng: random.Random | None = None) -> Mapping[str, Any]:
    """The backup to drill: `latest` (the newest, whatever its phase: a PartiallyFailed last night is
    a failure, named with the last good one), `random` (a Completed one within `window`) or a name.
    Raises RestoreDrillError listing what there is."""
    mine = schedule_backups(backups, schedule=schedule)
    listing = ", ".join(_describe(b) for b in mine[:5]) or "none"
    if choice not in CHOICES:
        named = next((b for b in mine if (b.get("metadata") or {}).get("name") == choice), None)
        if named is None:
            raise RestoreDrillError(f"no backup {choice!r} of Schedule {schedule} in the production location "
                                    f"(newest there: {listing})", remedy="name one of those, or use latest")
        chosen = named
    elif not mine:
        raise RestoreDrillError(f"the production location holds no backup of Schedule {schedule}",
                                remedy="check that the Schedule runs in production (`velero schedule get`) and "
                                       "that the location's bucket and prefix are production's")
    elif choice == "latest":
        chosen = mine[0]
    else:
        recent = [b for b in mine if _phase(b) == "Completed" and now - _finished(b) <= window]
        if not recent:
            raise RestoreDrillError(f"no Completed backup of Schedule {schedule} within the last "
                                    f"{format_go_duration(window)} (newest: {listing})",
                                    remedy="drill the latest backup, or widen --production-window")
        chosen = (rng or random.Random()).choice(recent)
    if _phase(chosen) != "Completed":
        good = next((b for b in mine if _phase(b) == "Completed"), None)
        raise RestoreDrillError(
            f"backup {_describe(chosen)} of Schedule {schedule} did not complete: "
            f"{(chosen.get('status') or {}).get('failureReason') or 'see its errors'}; the last good backup is "
            f"{_describe(good) if good else 'none'}",
            remedy=f"`velero backup describe {(chosen.get('metadata') or {}).get('name')} --details` in production")
    return chosen


def _phase(backup: Mapping[str, Any]) -> str:
    return str((backup.get("status") or {}).get("phase") or "")


def rpo_problem(backup: Mapping[str, Any], *, schedule: Mapping[str, Any], now: datetime,
                grace: timedelta) -> str | None:
    """The backup is older than the Schedule allows: its next run after the backup was due more
    than `grace` ago (the audit's RPO rule, for one backup)."""
    spec = schedule.get("spec") or {}
    name = (schedule.get("metadata") or {}).get("name")
    try:
        cron = parse_velero_cron(str(spec.get("schedule") or ""))
    except GoSyntaxError as error:
        return f"Schedule {name}: its schedule {spec.get('schedule')!r} is not a cron Velero accepts: {error}"
    started = parse_time((backup.get("status") or {}).get("startTimestamp")) or _finished(backup)
    due = next_activation(cron, started)
    if due is None or now <= due + grace:
        return None
    interval = activation_interval(cron, started)
    every = f", every {format_go_duration(interval)}" if interval else ""
    return (f"backup {_describe(backup)} of Schedule {name} is {format_go_duration(now - started)} old: the next run "
            f"was due at {due.isoformat()} (schedule {spec.get('schedule')!r}{every}) and the grace of "
            f"{format_go_duration(grace)} has passed: RPO exceeded; {_describe(backup)} is the last good backup")


def postgres_major_problem(*, cluster: str, repo_image: str | None, drill_image: str) -> str | None:
    """PostgreSQL data of major N needs a server of major N: the repo's imageName against the one the
    drill runs. None when they match or the repo names no image (CNPG's default for its version)."""
    def major(image: str) -> str | None:
        tag = image.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
        digits = tag.split(".", 1)[0].split("-", 1)[0]
        return digits if digits.isdigit() else None

    if not repo_image:
        return None
    want, have = major(repo_image), major(drill_image)
    if want is None or have is None or want == have:
        return None
    return (f"CNPG Cluster {cluster} runs PostgreSQL {want} in production ({repo_image}) and the drill cluster's "
            f"server is PostgreSQL {have} ({drill_image}): its data directory cannot be opened by another major, "
            "and the drill does not rewrite the major")


def disarming_modifiers(namespace: str) -> dict[str, Any]:
    """Velero resource modifier rules (v1, JSON merge patches: an absent key is no error) that keep
    restored objects from writing to production's backup destinations: CNPG Clusters without
    spec.backup and spec.plugins (WAL archiving and base backups into production's bucket; a PGDATA
    restored from production has no empty-archive check), ScheduledBackups and CronJobs suspended."""
    rules: list[dict[str, Any]] = [
        {"conditions": {"groupResource": "clusters.postgresql.cnpg.io", "namespaces": [namespace]},
         "mergePatches": [{"patchData": json.dumps({"spec": {"backup": None, "plugins": None}})}]},
        {"conditions": {"groupResource": "scheduledbackups.postgresql.cnpg.io", "namespaces": [namespace]},
         "mergePatches": [{"patchData": json.dumps({"spec": {"suspend": True}})}]},
        {"conditions": {"groupResource": "cronjobs.batch", "namespaces": [namespace]},
         "mergePatches": [{"patchData": json.dumps({"spec": {"suspend": True}})}]},
    ]
    return {"version": "v1", "resourceModifierRules": rules}


# ---- the drill -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProductionSettings:
    credentials: str  # the AWS credentials file's text
    location: ProductionLocation
    shield_image: str  # restoredrill.images.recorder.RECORDER_REFERENCE, loaded into the drill cluster
    choice: str = "latest"
    window: timedelta = timedelta(days=30)
    grace: timedelta = timedelta(hours=1)


class ProductionDrill(NamespaceDrill):
    """A NamespaceDrill whose backup is production's: no deploy, seed or backup of its own."""

    drift_fails = False  # last night's objects may differ from Git at HEAD: reported, not failed
    coverage: list[str]

    settings: ProductionSettings
    rpo_problems: list[str]
    synced_names: list[str]

    def now(self) -> datetime:
        return datetime.now(UTC)

    def configure(self, settings: ProductionSettings) -> ProductionDrill:
        self.settings = settings
        self.rpo_problems = []
        self.synced_names = []
        self.coverage = []
        self.record.scenario = "production-restore"
        self.record.standins += [
            f"BackupStorageLocation {self.velero.namespace}/{PRODUCTION_BSL}: production's location "
            f"{settings.location.name!r} (from {settings.location.source}), ReadOnly, at {settings.location.url} "
            f"through the write shield",
            f"write shield {self.velero.namespace}/{SHIELD} in front of production: Velero uploads a restore's log "
            "and results into the backup's location even when it is ReadOnly (restore_controller.go PutRestoreLog, "
            "PutRestoreResults); the shield forwards reads to production and keeps every write in the drill "
            "cluster, so nothing is written to production"]
        return self

    def run(self) -> Any:
        self.step("connect", self.connect)
        self.step("sync", self.wait_synced)
        self.step("pick", self.pick)
        self.step("suspend", self.create_suspended)
        self.step("restore", self.restore)
        self.step("verify", self.verify)
        self.step("adopt", self.resume_and_adopt)
        self.step("shield", self.check_shield)
        self.step_name = "rpo"
        self.fail(self.rpo_problems, remedy="the backup restores, but it is older than its Schedule allows: check "
                                            "that production's Schedule runs and its backups complete")
        return self.record

    def evidence(self) -> dict[str, str]:
        found = super().evidence()
        try:
            found["write shield log"] = self.ctx.kubectl(["-n", self.velero.namespace, "logs", f"deploy/{SHIELD}",
                                                          "--tail=2000"])
        except Exception as error:  # evidence is best effort
            found["write shield log"] = f"(could not collect: {error})"
        return found

    def check_shield(self) -> None:
        """What the shield saw: every write kept in the drill cluster (none forwarded), and reads of
        production, which prove the data came from it."""
        log = self.ctx.kubectl(["-n", self.velero.namespace, "logs", f"deploy/{SHIELD}", "--tail=-1"])
        requests = parse_requests(log)
        pods = self.ctx.core.list_namespaced_pod(self.velero.namespace,
                                                 label_selector=f"app.kubernetes.io/name={SHIELD}").items
        restarts = [c.restart_count for p in pods for c in (p.status and p.status.container_statuses) or []]
        kept = [r for r in requests if r.kept and r.is_write]
        where = sorted({r.path.rsplit("/", 1)[0] + "/" for r in kept})
        self.record.notes.append(f"write shield: {len(requests)} requests to production's store, {len(kept)} writes "
                                 f"kept in the drill cluster ({', '.join(where) or 'none'}), "
                                 f"{len(forwarded_writes(requests))} forwarded")
        problems = [f"the write shield forwarded a write to production: {r.summary()}"
                    for r in forwarded_writes(requests)]
        if restarts != [0]:
            problems.append(f"the write shield restarted ({restarts}): what it kept and what its log said are lost")
        if '"shield":"keep-writes"' not in log.split("\n", 1)[0]:
            problems.append("the write shield's log does not start in keep-writes mode")
        if not any(r.method == "GET" and not r.kept and 200 <= r.status < 300 for r in requests):
            problems.append("no read reached production's store through the shield: the restore did not come "
                            "from production")
        self.fail(problems, remedy="this is a restoredrill defect: report it with the shield's log")

    # ---- connect and sync -------------------------------------------------------------------
    def connect(self) -> None:
        namespace = self.velero.namespace
        self.ctx.apply(recorder_manifests(namespace=namespace, upstream_url=self.settings.location.url,
                                          image=self.settings.shield_image, name=SHIELD, shield=True))
        self.ctx.wait_for_pods_ready(namespace=namespace, selector=f"app.kubernetes.io/name={SHIELD}",
                                     what="the write shield in front of production", expected=1,
                                     timeout_name="pod_ready")
        self.ctx.apply([{"apiVersion": "v1", "kind": "Secret",
                         "metadata": {"name": PRODUCTION_SECRET, "namespace": namespace,
                                      "labels": labels("production")},
                         "type": "Opaque",
                         "data": {"cloud": base64.b64encode(self.settings.credentials.encode()).decode()}},
                        self.settings.location.manifest(namespace=namespace,
                                                        s3_url=recorder_url(namespace, name=SHIELD))])

        check = (f"check the credentials file, the bucket and prefix ({self.settings.location.source}) and that "
                 f"{self.settings.location.config.get('s3Url')} is reachable from the drill cluster "
                 "(--production-s3-url)")

        def available() -> tuple[bool | None, str]:
            bsl = self.ctx.get_object(GROUP, VERSION, "backupstoragelocations", namespace, PRODUCTION_BSL) or {}
            status = bsl.get("status") or {}
            if status.get("phase") == "Unavailable":  # Velero validated it and failed: no point in waiting
                raise DrillFailed(self.plan.app, self.step_name, [
                    f"BackupStorageLocation {PRODUCTION_BSL} (production's {self.settings.location.name!r}, "
                    f"ReadOnly) is Unavailable: {status.get('message') or 'Velero gave no reason'}"],
                    remedy=f"`velero backup-location get {PRODUCTION_BSL}`; {check}")
            return (True if status.get("phase") == "Available" else None), str(status or "not validated yet")

        wait_until(f"BackupStorageLocation {PRODUCTION_BSL} (production, ReadOnly) to be Available", available,
                   timeout=self.ctx.timeout("platform_ready"),
                   remedy=f"`velero backup-location get {PRODUCTION_BSL}`: {check}")

    def schedule_name(self) -> str:
        return str(self.plan.schedule["metadata"]["name"])

    def wait_synced(self) -> None:
        """Velero's backup sync brought the Schedule's backups in, each Completed one with its
        PodVolumeBackups (the sync creates those after the Backup)."""
        def synced() -> tuple[list[Mapping[str, Any]] | None, str]:
            # A whole sync pass after the location was made (it writes lastSyncedTime at its end, after
            # every Backup and its PodVolumeBackups: backup_sync_controller.go).
            bsl = self.ctx.get_object(GROUP, VERSION, "backupstoragelocations", self.velero.namespace,
                                      PRODUCTION_BSL) or {}
            made = parse_time((bsl.get("metadata") or {}).get("creationTimestamp"))
            last = parse_time((bsl.get("status") or {}).get("lastSyncedTime"))
            if made is None or last is None or last < made:
                return None, f"last synced {last or 'never'}"
            backups = schedule_backups(self.ctx.list_objects(GROUP, VERSION, "backups", self.velero.namespace),
                                       schedule=self.schedule_name())
            return backups, f"{len(backups)} backups of the Schedule"

        self.synced = wait_until(f"a backup sync of production's location {PRODUCTION_BSL}", synced,
                                 timeout=self.ctx.timeout("backup"), interval=2.0,
                                 remedy="`velero backup-location get`; Velero syncs a location's backups about "
                                        "once a minute")
        self.synced_names = [str(b["metadata"]["name"]) for b in self.synced]

    def pick(self) -> None:
        now = self.now()
        backup = pick_backup(self.synced, schedule=self.schedule_name(), choice=self.settings.choice, now=now,
                             window=self.settings.window)
        name = str(backup["metadata"]["name"])
        self.record.backup = name
        self.record.backup_completed_at = str((backup.get("status") or {}).get("completionTimestamp", ""))
        finished = _finished(backup)
        self.record.backup_age_s = round((now - finished).total_seconds(), 1)
        # The app's namespace only: a Schedule may back up several, the restore takes this one.
        volumes = [v for v in self.velero.pod_volume_backups(name) if v.pod_namespace == self.ns]
        self.record.pod_volume_backups = len(volumes)
        self.snapshot.pod_volumes = sorted((v.pod, v.volume) for v in volumes)
        # RPO is about production, not the pick: the newest Completed backup of the Schedule.
        newest = next((b for b in schedule_backups(self.synced, schedule=self.schedule_name())
                       if _phase(b) == "Completed"), None)
        problem = rpo_problem(newest, schedule=self.plan.schedule, now=now, grace=self.settings.grace) \
            if newest is not None else None
        if problem:
            self.rpo_problems.append(problem)
        self.record.notes.append(f"drilled production backup {_describe(backup)}, chosen as {self.settings.choice}")
        if not self.ctx.cluster.offline:
            return  # elsewhere the restored Cluster runs production's own image
        drill_image = str(self.ctx.images.get("postgresql", ""))
        self.fail([p for cluster in self.plan.cnpg_clusters
                   if (p := postgres_major_problem(cluster=cluster, repo_image=self.cnpg_image(cluster),
                                                   drill_image=drill_image))],
                  remedy="drill this app on a provider that runs the repo's own PostgreSQL image (kind), or give "
                         "the drill a server of the same major")

    def cnpg_image(self, cluster: str) -> str | None:
        catalogue = self.gitops.catalogue
        for manifest in catalogue.deployed():
            if manifest.kind == "Cluster" and manifest.group == "postgresql.cnpg.io" and manifest.name == cluster \
                    and manifest.namespace == self.ns:
                image = manifest.get("spec", "imageName")
                return str(image) if image else None
        return None

    # ---- restore ------------------------------------------------------------------------------
    def create_suspended(self) -> None:
        """The app's namespace (the drill's, labelled) and its Kustomizations, created suspended: Flux
        must not apply anything before the restore brought the data back (the runbook's order)."""
        self.gitops.create_namespace(self.ns, kustomizations=self.plan.kustomization_refs)
        self.created_namespace = True
        # Production's restored workloads must not reach production either: their egress is confined
        # to the namespace, DNS and the API server, and what would write to production's backup
        # destinations is disarmed as it is restored (the repo's copy is disarmed when published).
        endpoints = self.ctx.core.read_namespaced_endpoints("kubernetes", "default")
        ips = [address.ip for subset in endpoints.subsets or [] for address in subset.addresses or []]
        policy = isolation_policy(self.ns, api_server_ips=ips)
        # The drill's own pods (inspector, snapshot verifier) read production through the shield.
        policy["spec"]["podSelector"] = {"matchExpressions": [
            {"key": key, "operator": "DoesNotExist"} for key in sorted({data.INSPECTOR_LABEL, kopia.VERIFIER_LABEL})]}
        self.ctx.apply([policy,
                        {"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": self.modifier_name, "namespace": self.velero.namespace,
                                      "labels": labels("production")},
                         "data": {"rules.yaml": yaml.safe_dump(disarming_modifiers(self.ns), sort_keys=False)}}])
        self.record.standins += [
            f"NetworkPolicy {self.ns}/{ISOLATION_POLICY}: the restored pods may reach only each other, cluster DNS "
            "and the API server (enforced where the CNI enforces NetworkPolicy)",
            f"resource modifier {self.velero.namespace}/{self.modifier_name}: restored CNPG Clusters lose "
            "spec.backup and spec.plugins, CNPG ScheduledBackups and CronJobs come back suspended: none may write "
            "to production's backup destinations"]
        self.gitops.apply_suspended(self.plan.kustomizations)

    @property
    def modifier_name(self) -> str:
        return f"restoredrill-{self.run_id}-{self.tag}-production"[:63]

    def restore_modifier(self) -> str | None:
        return self.modifier_name

    def restore_bsl(self) -> Mapping[str, Any] | None:
        return self.ctx.get_object(GROUP, VERSION, "backupstoragelocations", self.velero.namespace, PRODUCTION_BSL)

    def restore(self) -> None:
        super().restore()
        pods = self.app_pods()
        self.snapshot.pod_volume_claims = pod_volume_claims(self.ns, pods)
        self.snapshot.objects = self.flux_managed_objects()
        self.coverage = self.coverage_problems(pods)

    def coverage_problems(self, pods: Sequence[Mapping[str, Any]]) -> list[str]:
        """What the backup should hold and does not: a pod volume fs-backup should have copied with no
        PodVolumeBackup (opted out, the pod not Running at backup time, a hostPath PV), a claim of the
        app no PodVolumeBackup holds; and no object Flux managed, so adoption would prove nothing."""
        expected = sorted((f"{self.ns}/{pod['metadata']['name']}", volume) for pod in pods
                          for volume in fs_backup_volumes(pod, default_volumes_to_fs_backup=self.fs_backup_default()))
        records = [v for v in self.velero.pod_volume_backups(self.record.backup) if v.pod_namespace == self.ns]
        problems = [p for p in compare_pod_volumes(operation="backup", expected=expected, records=records)
                    if not p.startswith("unexpected ")]
        held = {self.snapshot.pod_volume_claims.get((r.pod, r.volume)) for r in records}
        files, _ = self.claim_groups()
        problems += [f"PersistentVolumeClaim {self.ns}/{claim} is in no PodVolumeBackup of {self.record.backup}: it "
                     "was restored empty" for claim in files if claim not in held]
        if not self.snapshot.objects:
            problems.append(f"no restored object of {self.ns} carries Flux's {FLUX_NAME_LABEL} label: production's "
                            "Flux did not manage them, so adoption would prove nothing")
        return problems

    def flux_managed_objects(self) -> list[tuple[str, str, str, str]]:
        """The restored objects production's Flux managed (its kustomize-controller label): those Flux
        here must adopt, not recreate, on resume."""
        resources = self.velero.download("BackupResourceList", self.record.backup, fetch=self.fetch_in_cluster)
        listing: Mapping[str, Sequence[str]] = json.loads(resources or b"{}")
        found = []
        for api_kind, names in listing.items():
            api_version, _, kind = api_kind.rpartition("/")
            group, _, version = api_version.rpartition("/")
            if kind in NOT_COMPARED_KINDS:
                continue
            for qualified in names:
                namespace, _, name = str(qualified).rpartition("/")
                if namespace != self.ns or (kind, name) in NOT_COMPARED_NAMES:
                    continue
                obj = self.read_object(version, group, kind, name)
                if obj is not None and FLUX_NAME_LABEL in ((obj.get("metadata") or {}).get("labels") or {}):
                    found.append((version, group, kind, name))
        return sorted(found)

    # ---- verify -------------------------------------------------------------------------------
    def snapshot_bsl(self) -> str:
        return PRODUCTION_BSL

    def object_problems(self) -> list[str]:
        """Every object of the backup present after the restore (production's own resource list), and
        everything the backup should hold (`coverage_problems`)."""
        resources = json.loads(self.velero.download("BackupResourceList", self.record.backup,
                                                    fetch=self.fetch_in_cluster) or b"{}")

        def present(api_version: str, kind: str, name: str) -> bool:
            group, _, version = api_version.rpartition("/")
            return self.read_object(version, group, kind, name) is not None

        return [*self.coverage, *missing_objects(resources, source=self.ns, present=present)]

    def snapshot_problems(self) -> list[str]:
        problems = super().snapshot_problems()
        check = self.record.snapshot_check or {}
        volumes = check.get("volumes") or []
        # Nothing of production's data is known beforehand: the snapshot is the only ground truth.
        self.record.volumes_verified = sum(1 for v in volumes if not v.get("problems"))
        self.record.files_verified = sum(int(v.get("entries") or 0) for v in volumes)
        if "kopia" not in self.ctx.images:
            problems.append("the production drill verifies volumes against their Kopia snapshots, and this provider "
                            "has no kopia image")
        return problems


def forget_production(drill: ProductionDrill) -> list[str]:
    """Remove the drill cluster's view of production: its ReadOnly location first (so Velero's sync
    does not bring the backups back), then the Backup and PodVolumeBackup objects the sync made
    and the Secret. API deletes in the drill cluster only: the store is never touched (a
    DeleteBackupRequest would be; none is made)."""
    namespace, removed = drill.velero.namespace, []
    location = f"{STORAGE_LOCATION_LABEL}={PRODUCTION_BSL}"
    steps: list[tuple[str, Callable[[], Any]]] = [
        (f"BackupStorageLocation {PRODUCTION_BSL}", lambda: drill.ctx.custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "backupstoragelocations", PRODUCTION_BSL)),
        ("synced PodVolumeBackups", lambda: [drill.ctx.custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "podvolumebackups", str(item["metadata"]["name"]))
            for name in drill.synced_names for item in drill.velero.list_pod_volume_backups(name)]),
        ("synced Backups", lambda: drill.ctx.custom.delete_collection_namespaced_custom_object(
            GROUP, VERSION, namespace, "backups", label_selector=location)),
        (f"Secret {PRODUCTION_SECRET}", lambda: drill.ctx.core.delete_namespaced_secret(PRODUCTION_SECRET, namespace)),
        ("its Kopia BackupRepositories", lambda: [drill.ctx.custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "backuprepositories", str(r["metadata"]["name"]))
            for r in drill.ctx.list_objects(GROUP, VERSION, "backuprepositories", namespace)
            if (r.get("spec") or {}).get("backupStorageLocation") == PRODUCTION_BSL]),
        (f"ConfigMap {drill.modifier_name}", lambda: drill.ctx.core.delete_namespaced_config_map(
            drill.modifier_name, namespace)),
        (f"write shield {SHIELD}", lambda: drill.ctx.delete(recorder_manifests(
            namespace=namespace, upstream_url=drill.settings.location.url, image=drill.settings.shield_image,
            name=SHIELD, shield=True), wait=True)),
    ]
    for what, action in steps:
        try:
            action()
            removed.append(f"removed {what} from the drill cluster")
        except Exception as error:  # best effort: say what stayed
            removed.append(f"{what} not removed: {error}")
    return removed
