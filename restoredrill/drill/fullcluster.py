"""The runbook's "Full Cluster Recovery Sequence", on a cluster restoredrill made.

Before: every app deployed through Flux, seeded, recorded, backed up from its Schedule, sentinels
written (the namespace drill's first half, app by app). Then the whole cluster is destroyed: the
object store's data and the NFS stand-in live in host folders and survive, as the runbook's NFS
server does. A new cluster comes up, the platform is installed with the store's old credentials,
and Velero syncs the old Backups from the store. Each app is then restored in Flux dependency
order: its Kustomizations are created suspended, the namespace restored, every PodVolumeRestore
awaited, the app verified exactly as the namespace drill verifies it, and Flux resumed and checked
for adoption. The NFS library is verified intact without having been restored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from restoredrill.drill.namespace import NamespaceDrill
from restoredrill.drill.plan import AppPlan
from restoredrill.platform.velero import GROUP, VERSION
from restoredrill.waits import wait_until


def dependency_order(plans: Sequence[AppPlan]) -> list[AppPlan]:
    """Plans sorted so every app comes after the apps its Kustomizations depend on (stable otherwise)."""
    by_kustomization = {name: plan for plan in plans for name in plan.kustomization_names}
    ordered: list[AppPlan] = []
    visiting: set[str] = set()

    def visit(plan: AppPlan) -> None:
        if plan in ordered:
            return
        if plan.app in visiting:
            raise ValueError(f"Flux dependency cycle through app {plan.app}")
        visiting.add(plan.app)
        for kustomization in plan.kustomizations:
            for dependency in (kustomization.get("spec") or {}).get("dependsOn") or []:
                other = by_kustomization.get(str(dependency.get("name")))
                if other is not None and other is not plan:
                    visit(other)
        visiting.discard(plan.app)
        ordered.append(plan)

    for plan in plans:
        visit(plan)
    return ordered


@dataclass
class FullClusterRecord:
    apps: list[str] = field(default_factory=list)
    steps: list[tuple[str, float]] = field(default_factory=list)
    rto_s: dict[str, float | None] = field(default_factory=dict)
    total_s: float | None = None
    synced_backups: int = 0

    def facts(self) -> dict[str, Any]:
        return {"scenario": "full-cluster-recovery", "apps": self.apps, "steps": dict(self.steps),
                "rto_s_by_app": self.rto_s, "sequence_s": self.total_s, "synced_backups": self.synced_backups}


def wait_for_synced_backups(drill: NamespaceDrill, backups: Mapping[str, int], *,
                            timeout: float) -> list[dict[str, Any]]:
    """Velero on the new cluster lists the old Backups (BSL sync), each Completed, with its
    PodVolumeBackups (`backups`: name -> how many): the restore reads those from the cluster, and
    the sync creates them after the Backup."""
    wanted = sorted(backups)

    def probe() -> tuple[list[dict[str, Any]] | None, str]:
        found = {b["metadata"]["name"]: b for b in drill.ctx.list_objects(GROUP, VERSION, "backups",
                                                                          drill.velero.namespace)}
        phases = {name: (found.get(name, {}).get("status") or {}).get("phase") for name in wanted}
        volumes = {name: len(drill.velero.list_pod_volume_backups(name)) for name in wanted
                   if phases[name] == "Completed"}
        done = all(phase == "Completed" for phase in phases.values()) and all(
            volumes.get(name, -1) >= backups[name] for name in wanted)
        return ([found[n] for n in wanted] if done else None), f"phases {phases}; PodVolumeBackups {volumes}"

    return wait_until("the old Backups to sync into the new cluster's Velero", probe, timeout=timeout, interval=3.0,
                      remedy="`velero backup-location get`: the BSL must be Available and point at the old bucket")


def restore_app(drill: NamespaceDrill, out: Callable[[str], None] = print) -> None:
    """Suspend (create suspended), restore, verify, resume: the runbook's step 4 for one app."""
    bodies = []
    for kustomization in drill.plan.kustomizations:
        body = {k: v for k, v in kustomization.items() if k != "status"}
        body["spec"] = {**body.get("spec", {}), "suspend": True}
        bodies.append(body)
    drill.gitops.satisfy_dependencies(bodies)
    drill.ctx.apply(bodies)
    drill.step("restore", drill.restore)
    drill.step("verify", drill.verify)
    drill.step("adopt", drill.resume_and_adopt)


def timed(record: FullClusterRecord, name: str, action: Callable[[], Any],
          out: Callable[[str], None] = print) -> Any:
    out(f"[full-cluster recovery] {name} ...")
    started = time.monotonic()
    result = action()
    record.steps.append((name, round(time.monotonic() - started, 1)))
    out(f"[full-cluster recovery] {name}: {record.steps[-1][1]} s")
    return result
