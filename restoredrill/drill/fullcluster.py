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

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from restoredrill.cluster import ClusterProvider
from restoredrill.drill.gitops import GitOpsDeployment
from restoredrill.drill.namespace import NamespaceDrill
from restoredrill.drill.plan import AppPlan
from restoredrill.errors import ConfigError
from restoredrill.kube import load_api_client
from restoredrill.platform import CloudNativePG, ObjectStore, PlatformStack, Velero
from restoredrill.platform.base import PlatformContext
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
    manual_steps: list[str] = field(default_factory=list)
    stand_ins: list[str] = field(default_factory=list)

    def facts(self) -> dict[str, Any]:
        return {"scenario": "full-cluster-recovery", "apps": self.apps, "steps": dict(self.steps),
                "rto_s_by_app": self.rto_s, "sequence_s": self.total_s, "synced_backups": self.synced_backups,
                "manual_steps": self.manual_steps or None, "stand_ins": self.stand_ins or None}


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
    drill.gitops.apply_suspended(drill.plan.kustomizations)
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


def select_plans(plans: Sequence[AppPlan], names: Iterable[str]) -> list[AppPlan]:
    """The plans of the apps `names` (all when empty); an unknown name is an error naming the apps."""
    wanted = set(names)
    if not wanted:
        return list(plans)
    known = {plan.app for plan in plans}
    unknown = sorted(wanted - known)
    if unknown:
        raise ConfigError(f"full_cluster_apps names {', '.join(unknown)}, which the drill does not drill",
                          remedy=f"choose among: {', '.join(sorted(known))}")
    return [plan for plan in plans if plan.app in wanted]


@dataclass
class FullClusterRecovery:
    """The sequence, run on a cluster restoredrill made. `load_images(provider, ctx)` loads what the
    new cluster's platform and apps run (a no-op where images are pulled); the drills' stand-ins
    and data are those of the session's GitOps deployment."""

    provider: ClusterProvider
    cluster_lock: Any  # held while the cluster is replaced, so no other session joins it half-built
    ctx: PlatformContext
    object_store: ObjectStore
    gitops: GitOpsDeployment
    velero: Velero
    cnpg: CloudNativePG
    plans: Sequence[AppPlan]
    busybox_image: str
    run_id: str
    worker_id: str
    load_images: Callable[[ClusterProvider, PlatformContext], None]
    out: Callable[[str], None] = print
    restore_status: tuple[str, ...] = ()  # the drill config's restore_status
    record: FullClusterRecord = field(default_factory=FullClusterRecord)
    drills: list[NamespaceDrill] = field(default_factory=list)

    def __post_init__(self) -> None:
        ordered = dependency_order(self.plans)
        self.record.apps = [plan.app for plan in ordered]
        self.drills = [NamespaceDrill(plan=plan, ctx=self.ctx, velero=self.velero, flux=self.gitops.flux,
                                      cnpg=self.cnpg, gitops=self.gitops, run_id=self.run_id,
                                      busybox_image=self.busybox_image, out=self.out,
                                      restore_status=self.restore_status)
                       for plan in ordered]
        for drill in self.drills:
            drill.record.standins = self.gitops.standins

    # As NamespaceDrill.step_observer: entered around each step of the sequence (subject None: the cluster).
    step_observer: ClassVar[staticmethod[[str | None, str], contextlib.AbstractContextManager[object]] | None] = None

    def step(self, name: str, action: Callable[[], Any]) -> Any:
        with self.step_observer(None, name) if self.step_observer else contextlib.nullcontext():
            return timed(self.record, name, action, out=self.out)

    def run(self) -> FullClusterRecord:
        started = time.monotonic()
        for drill in self.drills:  # what the nightly Schedules leave behind
            for name, action in (("deploy", drill.deploy), ("seed", drill.seed), ("record", drill.take_snapshot),
                                 ("backup", drill.backup), ("sentinel", drill.write_sentinels)):
                drill.step(name, action)
        self.record.steps.append(("back up every app", round(time.monotonic() - started, 1)))
        sequence = time.monotonic()

        # 1. Provision the cluster: the old one is destroyed; the object store and NFS folders stay.
        with self.cluster_lock:
            self.step("destroy the cluster", self.provider.down)
            handle = self.step("new cluster up", self.provider.up)
        ctx = PlatformContext(cluster=handle, api=load_api_client(handle.kubeconfig, handle.context),
                              images=self.ctx.images, timeouts=self.ctx.timeouts, out=self.ctx.out)
        # 2-3. Infrastructure and backup storage: the platform, with the store's old data and credentials.
        stack = self.step("platform installed", lambda: self._platform(ctx))
        gitops = GitOpsDeployment(ctx=ctx, flux=stack.flux, catalogue=self.gitops.catalogue, run_id=self.run_id,
                                  worker_id=self.worker_id, sops_age_key=self.gitops.sops_age_key, out=self.out,
                                  charts_dir=self.gitops.charts_dir, load_images=self.provider.load_images)
        self.step("Flux source ready", lambda: self._flux_source(gitops, stack))
        for drill in self.drills:
            drill.ctx, drill.velero, drill.flux, drill.cnpg, drill.gitops = (ctx, stack.velero, stack.flux,
                                                                             stack.cnpg, gitops)
        synced = self.step("backups synced", lambda: wait_for_synced_backups(
            self.drills[0], {d.record.backup: d.record.pod_volume_backups for d in self.drills},
            timeout=ctx.timeout("backup")))
        self.record.synced_backups = len(synced)
        # 4-5. Suspend and restore every app, in dependency order; verify each.
        for drill in self.drills:
            drill.record.scenario = "full-cluster-recovery"
            self.step(f"restore {drill.plan.app}", functools.partial(restore_app, drill))
            self.record.rto_s[drill.plan.app] = drill.record.rto_s
        self.record.total_s = round(time.monotonic() - sequence, 1)
        self.record.manual_steps = [f"{d.plan.app}: {step}" for d in self.drills for step in d.record.manual_steps]
        self.record.stand_ins = list(dict.fromkeys([*self.gitops.standins, *gitops.standins,
                                                    *(line for d in self.drills for line in d.record.standins)]))
        return self.record

    def _platform(self, ctx: PlatformContext) -> PlatformStack:
        self.load_images(self.provider, ctx)
        stack = PlatformStack.create(ctx, object_store=self.object_store.kind, data_dir=self.object_store.data_dir,
                                     credentials=self.object_store.credentials, reuse_installed=False)
        stack.install()
        return stack

    def _flux_source(self, gitops: GitOpsDeployment, stack: PlatformStack) -> None:
        if any(m.group == "gateway.networking.k8s.io" for m in gitops.catalogue.deployed()):
            gitops.install_gateway_api(stack.velero)
        gitops.alias_storage_classes(sorted({c for d in self.drills for c in d.plan.storage_classes}))
        gitops.publish()
