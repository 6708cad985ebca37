"""The production-backup drill's pure parts: where production's backups are, which one to drill,
whether it is fresh enough, and whether the drill can open its database."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from restoredrill.catalogue import Catalogue
from restoredrill.drill.production import (
    PRODUCTION_BSL,
    disarming_modifiers,
    pick_backup,
    postgres_major_problem,
    production_location,
    read_credentials_file,
    rpo_problem,
)
from restoredrill.errors import ConfigError, RestoreDrillError
from tests.conftest import RepoCopy

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
SCHEDULE = {"metadata": {"name": "pelican-daily"}, "spec": {"schedule": "0 3 * * *", "template": {}}}


def backup(name: str, *, completed: datetime, phase: str = "Completed", schedule: str = "pelican-daily",
           location: str = PRODUCTION_BSL) -> dict[str, Any]:
    stamp = completed.strftime("%Y-%m-%dT%H:%M:%SZ")
    started = (completed - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": name, "labels": {"velero.io/schedule-name": schedule}},
            "spec": {"storageLocation": location},
            "status": {"phase": phase, "startTimestamp": started, "completionTimestamp": stamp}}


NIGHTS = [backup(f"pelican-daily-2026120{d}030000", completed=datetime(2026, 12, d, 3, 2, tzinfo=UTC))
          for d in (1, 2)]


def test_the_location_comes_from_the_repos_velero_release(example_catalogue: Catalogue) -> None:
    location = production_location(example_catalogue, schedule_template={})
    assert (location.name, location.bucket, location.prefix) == ("default", "velero", "")
    assert location.config["s3Url"] == "http://seaweedfs-s3.seaweedfs.svc.cluster.local:8333"
    assert location.config["s3ForcePathStyle"] == "true" and location.config["region"] == "us-east-1"
    assert "helmrelease.yaml" in location.source
    manifest = location.manifest(namespace="velero")
    assert manifest["spec"]["accessMode"] == "ReadOnly" and manifest["metadata"]["name"] == PRODUCTION_BSL
    assert manifest["spec"]["credential"] == {"name": "restoredrill-production-credentials", "key": "cloud"}
    moved = production_location(example_catalogue, schedule_template={}, s3_url="http://10.0.0.5:8333")
    assert moved.config["s3Url"] == "http://10.0.0.5:8333"


def test_a_schedule_writing_to_an_undeclared_location_is_an_error(example_catalogue: Catalogue) -> None:
    with pytest.raises(ConfigError, match="writes to BackupStorageLocation 'offsite', which the repo does not"):
        production_location(example_catalogue, schedule_template={"storageLocation": "offsite"})


def test_a_substituted_url_needs_the_users_url(example_repo: RepoCopy) -> None:
    release = example_repo.root / "kubernetes/apps/velero/velero/app/helmrelease.yaml"
    release.write_text(release.read_text().replace("http://seaweedfs-s3.seaweedfs.svc.cluster.local:8333",
                                                   "http://${S3_HOST}:8333"))
    with pytest.raises(ConfigError) as caught:
        production_location(example_repo.catalogue(), schedule_template={})
    assert "helmrelease.yaml" in str(caught.value) and "config.s3Url" in str(caught.value)
    assert "--production-s3-url" in str(caught.value)
    assert production_location(example_repo.catalogue(), schedule_template={}, s3_url="http://h:1").bucket == "velero"


def test_the_credentials_file_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.write_text("[default]\naws_access_key_id=a\naws_secret_access_key=b\n")
    assert read_credentials_file(good).startswith("[default]")
    bad = tmp_path / "bad"
    bad.write_text("aws_access_key_id=a\n")
    with pytest.raises(ConfigError, match=f"production credentials file {bad}"):
        read_credentials_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        read_credentials_file(tmp_path / "missing")


def test_latest_is_the_newest_backup_of_the_schedule() -> None:
    other = backup("gatus-daily-1", completed=datetime(2026, 12, 2, 4, 0, tzinfo=UTC), schedule="gatus-daily")
    drill_own = backup("pelican-daily-own", completed=datetime(2026, 12, 2, 5, 0, tzinfo=UTC), location="default")
    chosen = pick_backup([*NIGHTS, other, drill_own], schedule="pelican-daily", choice="latest", now=NOW,
                         window=timedelta(days=30))
    assert chosen["metadata"]["name"] == "pelican-daily-20261202030000"


def test_a_partially_failed_last_backup_fails_naming_the_last_good_one() -> None:
    failed = backup("pelican-daily-20261202030000", completed=datetime(2026, 12, 2, 3, 2, tzinfo=UTC),
                    phase="PartiallyFailed")
    with pytest.raises(RestoreDrillError) as caught:
        pick_backup([NIGHTS[0], failed], schedule="pelican-daily", choice="latest", now=NOW, window=timedelta(days=30))
    message = str(caught.value)
    assert "pelican-daily-20261202030000 (PartiallyFailed" in message and "did not complete" in message
    assert "the last good backup is pelican-daily-20261201030000 (Completed" in message


def test_random_picks_a_completed_backup_within_the_window() -> None:
    old = backup("pelican-daily-20261001030000", completed=datetime(2026, 10, 1, 3, 2, tzinfo=UTC))
    picks = {pick_backup([*NIGHTS, old], schedule="pelican-daily", choice="random", now=NOW,
                         window=timedelta(days=30), rng=random.Random(seed))["metadata"]["name"] for seed in range(20)}
    assert picks == {"pelican-daily-20261201030000", "pelican-daily-20261202030000"}


def test_a_named_backup_that_is_not_there_lists_what_is() -> None:
    with pytest.raises(RestoreDrillError, match=r"no backup 'nope' of Schedule pelican-daily.*pelican-daily-2026120"):
        pick_backup(NIGHTS, schedule="pelican-daily", choice="nope", now=NOW, window=timedelta(days=30))
    with pytest.raises(RestoreDrillError, match="holds no backup of Schedule gatus-daily"):
        pick_backup(NIGHTS, schedule="gatus-daily", choice="latest", now=NOW, window=timedelta(days=30))


def test_a_backup_older_than_its_schedule_allows_is_an_rpo_failure() -> None:
    last = NIGHTS[1]
    assert rpo_problem(last, schedule=SCHEDULE, now=NOW, grace=timedelta(hours=1)) is None
    late = datetime(2026, 12, 3, 4, 30, tzinfo=UTC)  # the 03:00 run of Dec 3 is 90 minutes overdue
    problem = rpo_problem(last, schedule=SCHEDULE, now=late, grace=timedelta(hours=1))
    assert problem is not None and "Schedule pelican-daily" in problem and "RPO exceeded" in problem
    assert "due at 2026-12-03T03:00:00+00:00" in problem and "every 24h0m0s" in problem
    assert "pelican-daily-20261202030000 (Completed" in problem


def test_postgres_data_needs_a_server_of_its_major() -> None:
    problem = postgres_major_problem(cluster="immich-postgres",
                                     repo_image="ghcr.io/tensorchord/cloudnative-vectorchord:16.9-0.4.3",
                                     drill_image="restoredrill.local/postgresql:15")
    assert problem is not None and "PostgreSQL 16" in problem and "PostgreSQL 15" in problem
    assert postgres_major_problem(cluster="c", repo_image="ghcr.io/cloudnative-pg/postgresql:15.8",
                                  drill_image="restoredrill.local/postgresql:15") is None
    assert postgres_major_problem(cluster="c", repo_image=None, drill_image="x:15") is None


def test_the_location_is_read_path_style_through_the_shield_and_never_by_public_url(
        example_catalogue: Catalogue) -> None:
    location = production_location(example_catalogue, schedule_template={})
    location = replace(location, config={**location.config, "publicUrl": "http://public:8333",
                                         "s3ForcePathStyle": "false"})
    config = location.manifest(namespace="velero", s3_url="http://shield:9000")["spec"]["config"]
    assert config["s3Url"] == "http://shield:9000" and config["s3ForcePathStyle"] == "true"
    assert "publicUrl" not in config


@pytest.mark.parametrize("url", ["https://s3.example.com", "http://s3.eu-west-1.amazonaws.com"])
def test_a_store_the_shield_cannot_forward_to_is_an_error_up_front(example_catalogue: Catalogue, url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        production_location(example_catalogue, schedule_template={}, s3_url=url)
    assert url in str(caught.value) and "--production-s3-url" in str(caught.value)


def test_restored_objects_are_disarmed_against_writing_to_production() -> None:
    rules = disarming_modifiers("immich")["resourceModifierRules"]
    by_resource = {r["conditions"]["groupResource"]: r["mergePatches"][0]["patchData"] for r in rules}
    assert by_resource["clusters.postgresql.cnpg.io"] == '{"spec": {"backup": null, "plugins": null}}'
    assert by_resource["scheduledbackups.postgresql.cnpg.io"] == '{"spec": {"suspend": true}}'
    assert by_resource["cronjobs.batch"] == '{"spec": {"suspend": true}}'
    assert all(r["conditions"]["namespaces"] == ["immich"] for r in rules)
