"""Pure pieces of the drill runners: hook evidence, restore-result scopes, recovery Clusters, records."""

from __future__ import annotations

from typing import Any

from restoredrill.drill.databases import recovery_cluster
from restoredrill.drill.namespace import DrillFailed, DrillRecord, NamespaceDrill, RunbookStepWarning
from restoredrill.drill.plan import AppPlan
from restoredrill.velero_semantics import annotation_hook, backup_hook_runs

HOOKS = {"resources": [{"name": "freeze", "includedNamespaces": ["pricebuddy"],
                        "labelSelector": {"matchLabels": {"component": "database"}},
                        "pre": [{"exec": {"command": ["true"]}}], "post": [{"exec": {"command": ["true"]}}]}]}
DATABASE = {"metadata": {"name": "db", "namespace": "pricebuddy", "labels": {"component": "database"}}}
APP = {"metadata": {"name": "app", "namespace": "pricebuddy", "labels": {"component": "web"}}}


def drill_with(schedule_template: dict[str, Any]) -> NamespaceDrill:
    drill = NamespaceDrill.__new__(NamespaceDrill)
    drill.plan = AppPlan(app="pricebuddy", namespace="pricebuddy", kustomizations=(), schedule_source="",
                         schedule={"metadata": {"name": "pricebuddy-daily"}, "spec": {"template": schedule_template}},
                         claims=())
    return drill


def test_hooks_attempted_and_none_failed_is_consistent() -> None:
    drill = drill_with({"hooks": HOOKS})
    assert drill.hook_problems({"hookStatus": {"hooksAttempted": 2}}, [DATABASE, APP]) == []


def test_hooks_not_attempted_make_the_backup_inconsistent() -> None:
    problems = drill_with({"hooks": HOOKS}).hook_problems({}, [DATABASE, APP])
    assert len(problems) == 1 and "2 backup hook runs were due" in problems[0] and "attempted 0" in problems[0]
    assert "pre hook 'freeze' in pricebuddy/db, post hook 'freeze' in pricebuddy/db" in problems[0]
    assert "not consistent" in problems[0]


def test_a_failed_hook_makes_the_backup_inconsistent() -> None:
    problems = drill_with({"hooks": HOOKS}).hook_problems({"hookStatus": {"hooksAttempted": 2, "hooksFailed": 1}},
                                                          [DATABASE])
    (problem,) = problems
    assert problem.startswith("1 of 2 backup hooks failed (pre hook 'freeze' in pricebuddy/db")
    assert "not consistent" in problem


def test_a_schedule_without_hooks_needs_no_hook_evidence() -> None:
    assert drill_with({}).hook_problems({}, [DATABASE]) == []


def test_hooks_that_select_no_pod_are_a_problem_even_if_another_ran_twice() -> None:
    """Attempts are counted per selected pod: a count that merely reaches the declared number is not enough."""
    hooks = {"resources": [HOOKS["resources"][0],
                           {**HOOKS["resources"][0], "name": "other",
                            "labelSelector": {"matchLabels": {"component": "gone"}}}]}
    second = {"metadata": {**DATABASE["metadata"], "name": "db-2"}}
    problems = drill_with({"hooks": hooks}).hook_problems({"hookStatus": {"hooksAttempted": 4}}, [DATABASE, second])
    # 2 hooks x 2 selected pods: the count is right, and still "other" never ran.
    assert len(problems) == 1 and "backup hook 'other' of the Schedule selects no running pod" in problems[0]
    problems = drill_with({"hooks": HOOKS}).hook_problems({"hookStatus": {"hooksAttempted": 4}}, [DATABASE])
    assert len(problems) == 1 and "2 backup hook runs were due" in problems[0]


ANNOTATED = {"metadata": {"name": "db-0", "namespace": "pricebuddy", "labels": {"component": "database"},
                          "annotations": {"pre.hook.backup.velero.io/command": '["sh", "-c", "freeze"]',
                                          "post.hook.backup.velero.io/command": '["sh", "-c", "thaw"]'}}}


def test_pod_annotation_hooks_count_without_schedule_hooks() -> None:
    """Hooks declared on the pod, not in the Schedule: Velero runs them and the drill counts them too."""
    drill = drill_with({})
    assert drill.hook_problems({"hookStatus": {"hooksAttempted": 2}}, [ANNOTATED, APP]) == []
    (problem,) = drill.hook_problems({"hookStatus": {"hooksAttempted": 2, "hooksFailed": 1}}, [ANNOTATED])
    assert "1 of 2 backup hooks failed" in problem and "pre annotation hook in pricebuddy/db-0" in problem
    (problem,) = drill.hook_problems({}, [ANNOTATED])
    assert "2 backup hook runs were due" in problem and "attempted 0" in problem


def test_an_annotation_hook_replaces_the_schedule_hooks_of_its_phase() -> None:
    """Velero's HandleHooks: the pod's annotation hook takes priority for its phase, the Schedule's
    hooks of the other phase still run; the unphased legacy key is a pre hook."""
    legacy = {"metadata": {**DATABASE["metadata"], "annotations": {"hook.backup.velero.io/command": "freeze"}}}
    runs = backup_hook_runs(HOOKS["resources"], [legacy])
    assert [(r.phase, r.source) for r in runs] == [("pre", "annotation"), ("post", "freeze")]
    assert drill_with({"hooks": HOOKS}).hook_problems({"hookStatus": {"hooksAttempted": 2}}, [legacy]) == []
    assert annotation_hook({"post.hook.backup.velero.io/command": "x"}, "pre") is None


def test_restore_results_are_read_by_scope() -> None:
    scoped = NamespaceDrill._scoped({"velero": ["v"], "cluster": [], "namespaces": {"pelican": ["a", "b"]}})
    assert scoped == {"velero": ["v"], "namespace pelican": ["a", "b"]}


def test_a_drill_failure_lists_every_problem_and_is_an_assertion() -> None:
    error = DrillFailed("pelican", "verify", ["one", "two"], remedy="look")
    assert isinstance(error, AssertionError)
    assert "pelican: verify failed:\n  - one\n  - two" in str(error)


def test_the_record_gives_summary_facts() -> None:
    record = DrillRecord(app="pelican", namespace="pelican", backup="b", rto_s=12.5, steps=[("backup", 3.0)])
    facts = record.facts()
    assert facts["rto_s"] == 12.5 and facts["steps"] == {"backup": 3.0} and facts["scenario"] == "namespace-restore"
    assert facts["manual_steps"] is None


def test_a_recovery_cluster_keeps_the_repo_cluster_and_swaps_its_bootstrap() -> None:
    source: dict[str, Any] = {
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "immich-postgres", "namespace": "immich", "labels": {"app": "immich"}},
        "spec": {"instances": 1, "imageName": "upstream:16", "storage": {"size": "1Gi"},
                 "bootstrap": {"initdb": {"database": "immich"}}, "backup": {"barmanObjectStore": {}}}}
    external = [{"name": "immich-postgres-backup", "barmanObjectStore": {"serverName": "x"}}]
    cluster = recovery_cluster(source, namespace="target", image="local:15",
                               bootstrap={"recovery": {"source": "immich-postgres-backup"}}, external=external)
    assert cluster["metadata"] == {"name": "immich-postgres", "namespace": "target", "labels": {"app": "immich"}}
    assert cluster["spec"]["bootstrap"] == {"recovery": {"source": "immich-postgres-backup"}}
    assert cluster["spec"]["externalClusters"] == external and "backup" not in cluster["spec"]
    assert cluster["spec"]["imageName"] == "local:15" and cluster["spec"]["storage"] == {"size": "1Gi"}
    assert source["spec"]["imageName"] == "upstream:16"  # the catalogue's object is not changed


def test_a_drill_that_did_runbook_steps_warns_and_is_no_plain_pass() -> None:
    record = DrillRecord(app="immich", namespace="immich")
    assert record.runbook_steps_warning() is None
    record.manual_steps.append("PersistentVolume immich-library: claimRef removed")
    warning = record.runbook_steps_warning()
    assert isinstance(warning, RunbookStepWarning)
    assert "immich: passed-with-runbook-steps" in str(warning) and "claimRef removed" in str(warning)


def test_a_volume_that_survived_without_a_restore_is_not_counted_as_restored() -> None:
    facts = DrillRecord(app="immich", namespace="immich", volumes_survived=1).facts()
    assert facts["volumes_verified"] == 0 and facts["volumes_survived"] == 1


def test_schedule_hooks_that_run_nowhere_make_the_backup_inconsistent() -> None:
    """A relabelled database: the Schedule's hooks select no pod, Velero runs none and says nothing."""
    problems = drill_with({"hooks": HOOKS}).hook_problems({}, [APP])
    assert len(problems) == 2 and "selects no running pod" in problems[0]
    assert "declares 2 backup hooks, none of which runs" in problems[1] and "attempted 0" in problems[1]
    assert "not consistent" in problems[1]
