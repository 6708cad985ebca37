"""Pure parts of the full-cluster recovery: the Flux dependency order of the apps' restores."""

from __future__ import annotations

from typing import Any

import pytest

from restoredrill.drill.fullcluster import FullClusterRecord, dependency_order
from restoredrill.drill.plan import AppPlan


def plan(app: str, *depends_on: str) -> AppPlan:
    kustomization: dict[str, Any] = {"metadata": {"name": app, "namespace": "flux-system"},
                                     "spec": {"dependsOn": [{"name": d} for d in depends_on]}}
    return AppPlan(app=app, namespace=app, kustomizations=(kustomization,), schedule={}, schedule_source="",
                   claims=())


def test_apps_come_after_what_they_depend_on() -> None:
    plans = [plan("immich", "database"), plan("gatus"), plan("database", "storage"), plan("storage")]
    assert [p.app for p in dependency_order(plans)] == ["storage", "database", "immich", "gatus"]


def test_dependencies_outside_the_drilled_apps_do_not_reorder() -> None:
    plans = [plan("pelican"), plan("immich", "cloudnative-pg"), plan("gatus")]
    assert [p.app for p in dependency_order(plans)] == ["pelican", "immich", "gatus"]


def test_a_cycle_is_an_error_that_names_an_app() -> None:
    with pytest.raises(ValueError, match="cycle through app"):
        dependency_order([plan("a", "b"), plan("b", "a")])


def test_the_record_reports_the_sequence_and_each_rto() -> None:
    record = FullClusterRecord(apps=["pelican"], steps=[("new cluster up", 12.5)], rto_s={"pelican": 30.1},
                               total_s=600.0, synced_backups=1)
    facts = record.facts()
    assert facts["scenario"] == "full-cluster-recovery" and facts["sequence_s"] == 600.0
    assert facts["rto_s_by_app"] == {"pelican": 30.1} and facts["steps"] == {"new cluster up": 12.5}
