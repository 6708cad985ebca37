"""Every static rule passes on the bundled example and fails, naming the culprit, when its fault
is put into a copy of it."""

import pytest

from restoredrill.rules import RULES, Finding
from tests.conftest import RepoCopy, rendered

VELERO_APP = "kubernetes/apps/velero/velero/app"
PELICAN_SCHEDULE = f"{VELERO_APP}/schedules/pelican-schedule.yaml"
PRICEBUDDY_SCHEDULE = f"{VELERO_APP}/schedules/pricebuddy-schedule.yaml"


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_example_repo_passes_every_rule(example_repo: RepoCopy, rule_id: str) -> None:
    errors = [f for f in example_repo.findings(rule_id) if f.severity == "error"]
    assert errors == [], rendered(errors)


def line_of(repo: RepoCopy, relative: str, text: str) -> int:
    """The line of the first occurrence of `text` in a file of the repo copy."""
    lines = repo.path(relative).read_text().splitlines()
    return next(number for number, line in enumerate(lines, start=1) if text in line)


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, rendered(findings)
    return findings[0]


def test_manifests_parse_names_file_and_line(example_repo: RepoCopy) -> None:
    example_repo.replace("kubernetes/apps/pelican/pelican/app/configmap.yaml", "metadata:\n", "metadata:\n   bad: [\n")
    finding = only(example_repo.findings("manifests-parse"))
    assert finding.location.path == "kubernetes/apps/pelican/pelican/app/configmap.yaml"
    assert finding.location.line is not None
    # The rest of the repo is still read: pelican's other objects are catalogued.
    assert any(m.kind == "Deployment" and m.name == "pelican-panel" for m in example_repo.catalogue().manifests)


def test_kustomization_reference_to_a_missing_file(example_repo: RepoCopy) -> None:
    example_repo.delete(PELICAN_SCHEDULE)
    finding = only(example_repo.findings("kustomization-references"))
    assert finding.location.path == f"{VELERO_APP}/kustomization.yaml"
    assert finding.location.line == line_of(example_repo, f"{VELERO_APP}/kustomization.yaml", "pelican-schedule")
    assert "./schedules/pelican-schedule.yaml" in finding.problem


def test_schedule_file_not_listed_in_the_velero_kustomization(example_repo: RepoCopy) -> None:
    example_repo.replace(f"{VELERO_APP}/kustomization.yaml", "  - ./schedules/pelican-schedule.yaml\n", "")
    finding = only(example_repo.findings("schedule-referenced"))
    assert finding.subject == "Schedule velero/pelican-daily"
    assert finding.location.path == PELICAN_SCHEDULE
    assert f"`- ./schedules/pelican-schedule.yaml` to `resources:` in {VELERO_APP}/kustomization.yaml" in finding.fix


def test_stateful_namespace_without_schedule(example_repo: RepoCopy) -> None:
    example_repo.replace(f"{VELERO_APP}/kustomization.yaml", "  - ./schedules/n8n-schedule.yaml\n", "")
    example_repo.delete(f"{VELERO_APP}/schedules/n8n-schedule.yaml")
    finding = only(example_repo.findings("namespace-covered"))
    assert finding.subject == "namespace n8n"
    assert "PersistentVolumeClaim n8n-data" in finding.problem
    assert "includedNamespaces: [n8n]" in finding.fix


def test_a_namespace_may_be_excused_with_a_reason(example_repo: RepoCopy) -> None:
    config = example_repo.path("restoredrill.yaml")
    text = config.read_text()
    assert "seaweedfs" in text  # the example excuses the backup store itself
    config.write_text(text.replace("backup_required: false", "backup_required: true"))
    finding = only(example_repo.findings("namespace-covered"))
    assert finding.subject == "namespace seaweedfs"


@pytest.mark.parametrize(("schedule", "message"), [
    ('"0 2 * * 7"', "end of range (7) above maximum (6)"),
    ('"0 0 2 * * *"', "expected exactly 5 fields, found 6"),
])
def test_schedule_cron_velero_rejects(example_repo: RepoCopy, schedule: str, message: str) -> None:
    example_repo.replace(PELICAN_SCHEDULE, 'schedule: "0 2 * * *"', f"schedule: {schedule}")
    finding = only(example_repo.findings("schedule-cron"))
    assert finding.subject == "Schedule velero/pelican-daily"
    assert message in finding.problem
    assert finding.location.line == line_of(example_repo, PELICAN_SCHEDULE, "schedule:")


@pytest.mark.parametrize("schedule", ['"@every 24h"', "'@daily'", '"CRON_TZ=Europe/Paris 30 1 * * *"'])
def test_schedule_cron_velero_accepts(example_repo: RepoCopy, schedule: str) -> None:
    example_repo.replace(PELICAN_SCHEDULE, 'schedule: "0 2 * * *"', f"schedule: {schedule}")
    assert example_repo.findings("schedule-cron") == []


@pytest.mark.parametrize(("ttl", "message"), [
    ("168h0m0s", "keeps backups for 168h0m0s, less than the required 720h0m0s"),
    ("30d", "is not a Go duration"),
])
def test_schedule_ttl_too_short_or_unreadable(example_repo: RepoCopy, ttl: str, message: str) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "ttl: 720h0m0s", f"ttl: {ttl}")
    finding = only(example_repo.findings("schedule-ttl"))
    assert finding.subject == "Schedule velero/pelican-daily"
    assert message in finding.problem
    assert finding.location.line == line_of(example_repo, PELICAN_SCHEDULE, "ttl:")


def test_schedule_ttl_zero_means_the_server_default(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "ttl: 720h0m0s", "ttl: 0s")
    assert example_repo.findings("schedule-ttl") == []  # the server default is 30 days
    findings = example_repo.findings("schedule-ttl", min_ttl="1000h")
    assert len(findings) == 7  # every schedule now keeps too little
    pelican = only([f for f in findings if f.subject == "Schedule velero/pelican-daily"])
    assert "ttl '0s' means the server default, 720h0m0s" in pelican.problem


def test_schedule_without_fs_backup(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "defaultVolumesToFsBackup: true", "defaultVolumesToFsBackup: false")
    finding = only(example_repo.findings("schedule-fs-backup"))
    assert "pelican/pelican-data, pelican/pelican-logs but none of their data" in finding.problem
    assert finding.fix.startswith("set spec.template.defaultVolumesToFsBackup: true")


def test_fs_backup_left_to_the_server_default(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "    defaultVolumesToFsBackup: true\n", "")
    assert example_repo.findings("schedule-fs-backup") == []  # the HelmRelease turns it on server-wide
    example_repo.replace(f"{VELERO_APP}/helmrelease.yaml", "      defaultVolumesToFsBackup: true",
                         "      defaultVolumesToFsBackup: false")
    finding = only(example_repo.findings("schedule-fs-backup"))
    assert "neither fs-backup (defaultVolumesToFsBackup is off" in finding.problem


def test_schedule_without_cluster_resources(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "includeClusterResources: true", "includeClusterResources: false")
    finding = only(example_repo.findings("schedule-cluster-resources"))
    assert finding.subject == "Schedule velero/pelican-daily"


def test_schedule_with_an_undefined_storage_location(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "storageLocation: default", "storageLocation: offsite")
    finding = only(example_repo.findings("schedule-storage-location"))
    assert "'offsite' is not defined (defined: default)" in finding.problem


def test_schedule_for_a_namespace_that_does_not_exist(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "      - pelican\n", "      - pelikan\n")
    finding = only(example_repo.findings("schedule-namespaces-exist"))
    assert "'pelikan'" in finding.problem and "did you mean 'pelican'" in finding.problem


def test_two_schedules_with_one_name(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "name: pelican-daily", "name: n8n-daily")
    findings = example_repo.findings("schedule-unique-name")
    assert len(findings) == 2
    assert {f.location.path for f in findings} == {PELICAN_SCHEDULE, f"{VELERO_APP}/schedules/n8n-schedule.yaml"}


def test_in_pod_database_without_hooks(example_repo: RepoCopy) -> None:
    start = example_repo.path(PRICEBUDDY_SCHEDULE).read_text().index("    hooks:")
    end = example_repo.path(PRICEBUDDY_SCHEDULE).read_text().index("  useOwnerReferencesInBackup")
    text = example_repo.path(PRICEBUDDY_SCHEDULE).read_text()
    example_repo.write(PRICEBUDDY_SCHEDULE, text[:start] + text[end:])
    findings = example_repo.findings("database-hooks")
    assert len(findings) == 2, rendered(findings)
    assert all(f.subject == "Deployment pricebuddy/pricebuddy-database" for f in findings)
    assert "no pre-backup hook freezes it" in findings[0].problem
    assert "no post-backup hook thaws" in findings[1].problem


def test_hooks_that_select_another_pod_do_not_count(example_repo: RepoCopy) -> None:
    example_repo.replace(PRICEBUDDY_SCHEDULE, "app.kubernetes.io/component: database",
                         "app.kubernetes.io/component: web")
    assert len(example_repo.findings("database-hooks")) == 2


def test_a_lock_released_when_the_hook_client_exits(example_repo: RepoCopy) -> None:
    example_repo.write(PRICEBUDDY_SCHEDULE, _simple_pricebuddy_hooks(
        pre='mariadb -uroot -e "FLUSH TABLES WITH READ LOCK"', post='mariadb -uroot -e "UNLOCK TABLES"'))
    problems = [f.problem for f in example_repo.findings("database-hooks")]
    assert len(problems) == 2, problems
    assert "releases the lock as soon as that session ends" in problems[0]
    assert "UNLOCK TABLES in a new session, which releases nothing" in problems[1]


def _simple_pricebuddy_hooks(*, pre: str, post: str) -> str:
    return f"""apiVersion: velero.io/v1
kind: Schedule
metadata:
  name: pricebuddy-daily
  namespace: velero
spec:
  schedule: "0 2 * * *"
  template:
    includedNamespaces: [pricebuddy]
    defaultVolumesToFsBackup: true
    storageLocation: default
    ttl: 720h0m0s
    includeClusterResources: true
    hooks:
      resources:
        - name: freeze
          includedNamespaces: [pricebuddy]
          labelSelector:
            matchLabels:
              app.kubernetes.io/component: database
          pre:
            - exec:
                container: mariadb
                command: ["/bin/sh", "-c", {pre!r}]
          post:
            - exec:
                container: mariadb
                command: ["/bin/sh", "-c", {post!r}]
"""


def test_cnpg_cluster_without_object_store_backup_warns_then_fails_when_strict(example_repo: RepoCopy) -> None:
    finding = only(example_repo.findings("cnpg-object-store-backup"))
    assert finding.severity == "warning"
    assert finding.subject == "Cluster immich/immich-postgres"
    assert "TD-004" in finding.fix
    strict = only(example_repo.findings("cnpg-object-store-backup", strict_rules="cnpg-object-store-backup"))
    assert strict.severity == "error"


def test_flux_kustomization_with_a_missing_path_and_dependency(example_repo: RepoCopy) -> None:
    example_repo.replace("kubernetes/apps/immich/immich/ks.yaml", "path: ./kubernetes/apps/immich/immich/app",
                         "path: ./kubernetes/apps/immich/app")
    example_repo.replace("kubernetes/apps/immich/immich/ks.yaml", "- name: cloudnative-pg", "- name: cloudnative-pgg")
    findings = example_repo.findings("flux-kustomization")
    assert len(findings) == 2, rendered(findings)
    assert all(f.subject == "Kustomization flux-system/immich" for f in findings)
    assert "'./kubernetes/apps/immich/app' is not a folder" in findings[0].problem
    assert "did you mean 'cloudnative-pg'" in findings[1].problem


def test_crd_schema_catches_a_silently_dropped_field(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "defaultVolumesToFsBackup: true", "defaultVolumesToFSBackup: true")
    finding = only(example_repo.findings("crd-schema"))
    assert finding.subject == "Schedule velero/pelican-daily"
    assert finding.location.path == PELICAN_SCHEDULE
    assert finding.location.line == line_of(example_repo, PELICAN_SCHEDULE, "defaultVolumesToFSBackup")
    assert "spec.template.defaultVolumesToFSBackup" in finding.problem
    assert "rename the field to `defaultVolumesToFsBackup`" in finding.fix


def test_crd_schema_checks_cnpg_flux_and_gateway_objects_too(example_repo: RepoCopy) -> None:
    example_repo.replace("kubernetes/apps/immich/immich/app/cluster.yaml", "instances: 1", "instances: one")
    example_repo.replace("kubernetes/apps/pelican/pelican/ks.yaml", "prune: true", "prun: true")
    example_repo.replace("kubernetes/apps/pelican/pelican/app/httproute.yaml", "parentRefs:", "parentRef:")
    subjects = sorted({f.subject for f in example_repo.findings("crd-schema")})
    assert subjects == ["Cluster immich/immich-postgres", "HTTPRoute pelican/pelican",
                        "Kustomization flux-system/pelican"]


def test_crd_schema_rejects_an_unserved_api_version(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "apiVersion: velero.io/v1", "apiVersion: velero.io/v2")
    finding = only(example_repo.findings("crd-schema"))
    assert "Schedule velero.io/v2 is not served by github.com/vmware-tanzu/velero" in finding.problem
    assert "Schedule velero/pelican-daily" in finding.problem  # the objects are named in the one finding
    assert finding.fix.startswith("move them to apiVersion velero.io/v1")


APP_TEMPLATE_RELEASE = """apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: wiki}}
spec:
  interval: 1h
  chart: {{spec: {{chart: app-template, sourceRef: {{kind: HelmRepository, name: bjw-s}}}}}}
  values:
    controllers:
      db:
        pod:
          annotations: {annotations}
        containers:
          mariadb:
            image: {{repository: docker.io/library/mariadb, tag: 11.4.5}}
      wiki:
        containers:
          app:
            image: {{repository: ghcr.io/example/wiki, tag: 1.0.0}}
"""


def test_app_template_helm_releases_are_checked_for_database_hooks(example_repo: RepoCopy) -> None:
    example_repo.write("kubernetes/apps/pelican/pelican/app/wiki.yaml", APP_TEMPLATE_RELEASE.format(annotations="{}"))
    example_repo.replace("kubernetes/apps/pelican/pelican/app/kustomization.yaml", "  - ./httproute.yaml\n",
                         "  - ./httproute.yaml\n  - ./wiki.yaml\n")
    findings = example_repo.findings("database-hooks")
    assert {f.subject for f in findings} == {"HelmRelease pelican/wiki"}, rendered(findings)
    assert "container 'mariadb'" in findings[0].problem

    held = ('{"pre.hook.backup.velero.io/container": mariadb, "pre.hook.backup.velero.io/command": '
            '"[\\"/bin/sh\\", \\"-c\\", \\"mariadb -e \'FLUSH TABLES WITH READ LOCK; SELECT SLEEP(600)\' &\\"]", '
            '"post.hook.backup.velero.io/container": mariadb, "post.hook.backup.velero.io/command": '
            '"[\\"/bin/sh\\", \\"-c\\", \\"pkill -f SLEEP\\"]"}')
    example_repo.write("kubernetes/apps/pelican/pelican/app/wiki.yaml", APP_TEMPLATE_RELEASE.format(annotations=held))
    assert example_repo.findings("database-hooks") == []
