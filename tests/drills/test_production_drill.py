"""The production-backup drill against a production it did not make, on a real cluster.

Production first: a second object store (its own MinIO, namespace, data folder and keys) plays
production's SeaweedFS; pelican is deployed, seeded and backed up from its own Schedule template
into it by a location Velero writes to, named as production's Schedule names its backups. Then
every trace of that production is removed from the cluster (the app's namespace and
Kustomizations, the writing location, the Backup and PodVolumeBackup objects, the Kopia
BackupRepository): the backup exists only in the production store, as last night's would.

The drill then restores it through a ReadOnly location whose URL is a recording proxy in front of
the production store, and the test asserts what the issue asks: the restored volumes hold exactly
what production held at backup time, and the store saw reads only: zero writes, zero deletes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from restoredrill.catalogue import App, Catalogue
from restoredrill.cluster import ClusterProvider
from restoredrill.drill.namespace import DrillFailed, NamespaceDrill
from restoredrill.drill.production import (
    PRODUCTION_BSL,
    ProductionDrill,
    ProductionSettings,
    parse_time,
    production_location,
    read_credentials_file,
)
from restoredrill.images.recorder import RECORDER_REFERENCE, build_recorder_image
from restoredrill.platform import Velero
from restoredrill.platform.base import PlatformContext, labels
from restoredrill.platform.objectstore import MinioObjectStore
from restoredrill.platform.recorder import describe, parse_requests, recorder_manifests, recorder_url, writes
from restoredrill.platform.velero import GROUP, VERSION
from restoredrill.verify import compare_volume

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill]

APP = "pelican"
PRODUCTION_NS = "rd-production-store"
WRITER = "rd-production-writer"


@dataclass
class Production:
    store: MinioObjectStore
    backup: str
    inventories: dict[str, Any]
    credentials_file: Path
    url: str  # the recording proxy's


def app_named(catalogue: Catalogue, name: str) -> App:
    return next(app for app in catalogue.apps if app.name == name)


def writer_location(store: MinioObjectStore, velero: Velero) -> list[dict[str, Any]]:
    secret = f"{WRITER}-credentials"
    cloud = base64.b64encode(store.credentials.aws_credentials_file().encode()).decode()
    return [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": velero.namespace,
                                                                 "labels": labels("production")},
             "type": "Opaque", "data": {"cloud": cloud}},
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupStorageLocation",
             "metadata": {"name": WRITER, "namespace": velero.namespace, "labels": labels("production")},
             "spec": {"provider": "aws", "objectStorage": {"bucket": "velero"},
                      "config": {"region": "us-east-1", "s3ForcePathStyle": "true", "s3Url": store.endpoint.url},
                      "credential": {"name": secret, "key": "cloud"}}}]


@pytest.fixture(scope="module")
def production(request: pytest.FixtureRequest, catalogue: Catalogue, tmp_path_factory: pytest.TempPathFactory,
               run_id: str) -> Iterator[Production]:
    ctx: PlatformContext = request.getfixturevalue("platform_context")
    velero: Velero = request.getfixturevalue("velero")
    provider: ClusterProvider = request.getfixturevalue("cluster_provider")
    root = tmp_path_factory.mktemp("production")
    store = MinioObjectStore(ctx, data_dir=root / "store", namespace=PRODUCTION_NS, buckets=("velero",))
    store.install()
    store.wait_ready()
    location = writer_location(store, velero)
    ctx.apply(location)
    try:
        wait_available(ctx, velero, WRITER)
        factory: Callable[[App], NamespaceDrill] = request.getfixturevalue("module_namespace_drill")
        writer = factory(app_named(catalogue, APP))
        writer.step("deploy", writer.deploy)
        writer.step("seed", writer.seed)
        writer.step("record", writer.take_snapshot)
        schedule = writer.plan.schedule
        name = f"{schedule['metadata']['name']}-20261201030000"  # as production's Schedule names its backups
        template = {**schedule["spec"]["template"], "storageLocation": WRITER}
        velero.create_backup_from_schedule_template(template, name, schedule_name=schedule["metadata"]["name"])
        finished = velero.wait_for_backup(name)
        assert len(velero.pod_volume_backups(name)) == 2, finished
        # Production's backup is now only in production's store: remove every trace of it here.
        writer.step("suspend", writer.suspend)
        writer.step("destroy", writer.destroy)
        ctx.delete([{"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                     "metadata": {"name": n, "namespace": writer.flux.namespace}}
                    for n in writer.plan.kustomization_names], wait=True)
        forget_writer(ctx, velero, name)
        provider.load_images(build_recorder_image())
        ctx.apply(recorder_manifests(namespace=PRODUCTION_NS, upstream_url=store.endpoint.url,
                                     image=RECORDER_REFERENCE))
        ctx.wait_for_pods_ready(namespace=PRODUCTION_NS, selector="app.kubernetes.io/name=s3-recorder",
                                what="recording proxy", expected=1, timeout_name="pod_ready")
        credentials = root / "production-credentials"
        credentials.write_text(store.credentials.aws_credentials_file())
        yield Production(store=store, backup=name, inventories=writer.snapshot.inventories,
                         credentials_file=credentials, url=recorder_url(PRODUCTION_NS))
    finally:
        ctx.delete(location, wait=True)
        store.uninstall()


def wait_available(ctx: PlatformContext, velero: Velero, name: str) -> None:
    from restoredrill.waits import wait_until

    def probe() -> tuple[bool | None, str]:
        bsl = ctx.get_object(GROUP, VERSION, "backupstoragelocations", velero.namespace, name) or {}
        phase = (bsl.get("status") or {}).get("phase")
        return (True if phase == "Available" else None), f"phase {phase}"

    wait_until(f"BackupStorageLocation {name}", probe, timeout=ctx.timeout("platform_ready"))


def forget_writer(ctx: PlatformContext, velero: Velero, backup: str) -> None:
    """The drill cluster forgets the writing location, its Backup, PodVolumeBackups and repository."""
    ctx.custom.delete_namespaced_custom_object(GROUP, VERSION, velero.namespace, "backupstoragelocations", WRITER)
    for item in velero.list_pod_volume_backups(backup):
        ctx.custom.delete_namespaced_custom_object(GROUP, VERSION, velero.namespace, "podvolumebackups",
                                                   item["metadata"]["name"])
    ctx.custom.delete_namespaced_custom_object(GROUP, VERSION, velero.namespace, "backups", backup)
    for repository in ctx.list_objects(GROUP, VERSION, "backuprepositories", velero.namespace):
        if (repository.get("spec") or {}).get("backupStorageLocation") == WRITER:
            ctx.custom.delete_namespaced_custom_object(GROUP, VERSION, velero.namespace, "backuprepositories",
                                                       repository["metadata"]["name"])


def settings_for(production: Production, catalogue: Catalogue, drill: ProductionDrill | None = None,
                 **changes: Any) -> ProductionSettings:
    schedule = next(s for s in catalogue.schedules if APP in (s.template.get("includedNamespaces") or []))
    location = production_location(catalogue, schedule_template=schedule.template, s3_url=production.url)
    settings = ProductionSettings(credentials=read_credentials_file(production.credentials_file), location=location,
                                  shield_image=RECORDER_REFERENCE)
    return replace(settings, **changes)


def recorded(ctx: PlatformContext) -> str:
    return ctx.kubectl(["-n", PRODUCTION_NS, "logs", "deploy/s3-recorder", "--tail=-1"])


def test_the_latest_production_backup_restores_whole_and_production_sees_only_reads(
        production: Production, catalogue: Catalogue, request: pytest.FixtureRequest) -> None:
    ctx: PlatformContext = request.getfixturevalue("platform_context")
    factory: Callable[..., ProductionDrill] = request.getfixturevalue("production_drill")
    before = len(parse_requests(recorded(ctx)))
    drill = factory(app_named(catalogue, APP), settings_for(production, catalogue))
    record = drill.run()

    assert record.backup == production.backup and record.scenario == "production-restore"
    assert record.pod_volume_backups == record.pod_volume_restores == 2
    assert record.volumes_verified == 2 and record.files_verified > 0, record.snapshot_check
    assert record.backup_age_s is not None and record.rto_s is not None
    assert any(PRODUCTION_BSL in line and "ReadOnly" in line for line in record.standins)
    # What production held at backup time is what the drill restored (the test knows; the drill did not).
    restored: dict[str, Any] = {}
    drill.with_inspector(sorted(production.inventories), lambda pod: restored.update(
        {claim: drill.inventory(pod, claim) for claim in production.inventories}))
    uid = str(drill.restored["metadata"]["uid"])
    for claim, expected in production.inventories.items():
        assert compare_volume(volume=claim, expected=expected, actual=restored[claim], restore_uid=uid) == []
    # Production saw reads only, and saw them: the drill went through the recording proxy.
    requests = parse_requests(recorded(ctx))[before:]
    assert requests, "no request reached the production store: the drill did not read production"
    assert writes(requests) == [], f"the drill wrote to production:\n{describe(writes(requests))}"
    pods = ctx.core.list_namespaced_pod(PRODUCTION_NS, label_selector="app.kubernetes.io/name=s3-recorder").items
    restarts = [c.restart_count for p in pods for c in (p.status and p.status.container_statuses) or []]
    assert restarts == [0], f"the witness restarted ({restarts}): its log may have lost requests"
    # Velero's restore wrote its log and results: the shield kept them, and the drill read them back.
    (shield,) = [note for note in record.notes if note.startswith("write shield:")]
    assert " 0 forwarded" in shield and "writes kept in the drill cluster (/velero/restores/" in shield, shield


def test_a_backup_older_than_its_schedule_allows_fails_the_drill_naming_it(
        production: Production, catalogue: Catalogue, request: pytest.FixtureRequest) -> None:
    factory: Callable[..., ProductionDrill] = request.getfixturevalue("production_drill")
    drill = factory(app_named(catalogue, APP), settings_for(production, catalogue, grace=timedelta(hours=1)))
    drill.step("connect", drill.connect)
    drill.step("sync", drill.wait_synced)
    completed = production.backup  # the next 03:00 run after it is long overdue three days later

    synced = next(b for b in drill.synced if b["metadata"]["name"] == completed)
    finished = parse_time(synced["status"]["completionTimestamp"])
    assert finished is not None
    drill.now = lambda: finished + timedelta(days=3)  # type: ignore[method-assign]
    drill.step("pick", drill.pick)
    drill.step_name = "rpo"
    with pytest.raises(DrillFailed) as caught:
        drill.fail(drill.rpo_problems)
    message = str(caught.value)
    assert f"backup {completed}" in message and "RPO exceeded" in message and "is the last good backup" in message


def test_wrong_production_credentials_fail_at_once_with_veleros_reason(
        production: Production, catalogue: Catalogue, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Wrong keys: Velero finds the ReadOnly location Unavailable, and the drill stops there, saying
    why and what to check, instead of waiting out its timeout."""
    factory: Callable[..., ProductionDrill] = request.getfixturevalue("production_drill")
    wrong = tmp_path / "wrong"
    wrong.write_text("[default]\naws_access_key_id=nobody\naws_secret_access_key=nothing\n")
    settings = replace(settings_for(production, catalogue), credentials=read_credentials_file(wrong))
    drill = factory(app_named(catalogue, APP), settings)
    with pytest.raises(DrillFailed) as caught:
        drill.step("connect", drill.connect)
    message = str(caught.value)
    assert "Unavailable" in message and "InvalidAccessKeyId" in message, message
    assert "credentials file" in message
