"""The non-destructive drill on a cluster restoredrill did not create: its pure parts, and the refusal
on a cluster that has no Velero (against a stand-in API server that records every request)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from restoredrill.cluster import ClusterHandle
from restoredrill.drill.mapped import (
    GITOPS_RESOURCES,
    OWNERSHIP_LABELS,
    copy_namespace,
    isolation_policy,
    missing_objects,
    resource_modifiers,
    volume_restore_problems,
)
from restoredrill.kube import load_api_client
from restoredrill.platform.base import PlatformContext
from restoredrill.platform.discover import PlatformMissing, discover_platform
from restoredrill.platform.velero import restore_manifest
from restoredrill.podvolumes import records
from tests.conftest import PROJECT_ROOT, user_project
from tests.providers.fake_apiserver import running_fake_apiserver

pytest_plugins = ("pytester",)


def pod_volume(name: str, *, pod: str, volume: str, phase: str = "Completed", size: int = 100) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"pod": {"name": pod}, "volume": volume},
            "status": {"phase": phase, "progress": {"totalBytes": size, "bytesDone": size}}}


def test_the_copy_namespace_is_named_after_the_app_and_the_run() -> None:
    assert copy_namespace("pelican", "ab12cd34") == "pelican-drill-ab12cd34"
    long = copy_namespace("n" * 70, "ab12cd34")
    assert len(long) <= 63 and long.endswith("-drill-ab12cd34")


def test_every_backed_up_volume_is_restored_whole() -> None:
    backups = [pod_volume("b1", pod="web-0", volume="data", size=500), pod_volume("b2", pod="db-1", volume="pgdata")]
    restores = [pod_volume("r1", pod="web-0", volume="data", size=500), pod_volume("r2", pod="db-1", volume="pgdata")]
    assert volume_restore_problems(records(backups), records(restores), source="immich", copy="immich-drill-x") == []


def test_a_volume_restored_empty_under_the_mapping_is_named() -> None:
    """velero 9433: CNPG volumes restored empty under a namespace mapping."""
    backups = [pod_volume("b1", pod="immich-postgres-1", volume="pgdata", size=40_000_000)]
    no_restore = volume_restore_problems(records(backups), [], source="immich", copy="immich-drill-x")
    assert no_restore == ["volume pgdata of pod immich/immich-postgres-1: no PodVolumeRestore in immich-drill-x, so "
                          "its data was not restored (an empty volume under a namespace mapping is velero issue 9433 "
                          "for CNPG)"]
    restored_empty = records([pod_volume("r1", pod="immich-postgres-1", volume="pgdata", size=0)])
    empty = volume_restore_problems(records(backups), restored_empty, source="immich", copy="immich-drill-x")
    assert empty and "restored 0 bytes of the 40000000 backed up" in empty[0]


def test_a_failed_or_unexpected_pod_volume_restore_is_named() -> None:
    backups = [pod_volume("b1", pod="web-0", volume="data")]
    restores = [pod_volume("r1", pod="web-0", volume="data", phase="Failed"),
                pod_volume("r9", pod="other", volume="x")]
    problems = volume_restore_problems(records(backups), records(restores), source="s", copy="c")
    assert problems[0].startswith("volume data of pod s/web-0: PodVolumeRestore r1 is Failed")
    assert problems[1] == "PodVolumeRestore r9 (other:x) has no PodVolumeBackup"


def test_objects_of_the_backup_must_be_in_the_copy() -> None:
    resource_list = {
        "v1/ConfigMap": ["pelican/pelican-config", "pelican/kube-root-ca.crt"],
        "apps/v1/Deployment": ["pelican/pelican-panel"],
        "v1/Pod": ["pelican/pelican-panel-abc"],  # recreated by the Deployment: not compared one for one
        "v1/PersistentVolume": ["/pv-1"],  # cluster-scoped: not restored into the copy
        "gateway.networking.k8s.io/v1/HTTPRoute": ["pelican/pelican"],
    }
    present = {("v1", "ConfigMap", "pelican-config"), ("apps/v1", "Deployment", "pelican-panel")}
    problems = missing_objects(resource_list, source="pelican",
                               present=lambda api, kind, name: (api, kind, name) in present)
    assert problems == ["HTTPRoute pelican is in the backup but not in the restored copy"]


def test_the_backups_gitops_objects_never_reach_the_copy() -> None:
    """A HelmRelease restored into the copy would make the cluster's own helm-controller install its
    chart again (into the copy, or into its targetNamespace: the live app): the restore leaves the
    GitOps kinds out, and the copy is not expected to hold them."""
    body = restore_manifest(name="r", backup_name="b", excluded_resources=GITOPS_RESOURCES)
    assert {"helmreleases.helm.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io",
            "applications.argoproj.io"} <= set(body["spec"]["excludedResources"])
    resource_list = {"helm.toolkit.fluxcd.io/v2/HelmRelease": ["media/plex"],
                     "source.toolkit.fluxcd.io/v1/OCIRepository": ["media/app-template"]}
    assert missing_objects(resource_list, source="media", present=lambda api, kind, name: False) == []


def test_ownership_labels_are_stripped_by_merge_patches_only_where_present() -> None:
    rules = resource_modifiers("pelican")["resourceModifierRules"]
    assert {rule["conditions"]["labelSelector"]["matchExpressions"][0]["key"] for rule in rules
            if "labelSelector" in rule["conditions"]} == set(OWNERSHIP_LABELS)
    flux_label = "kustomize.toolkit.fluxcd.io/name"
    flux = next(r for r in rules if "labelSelector" in r["conditions"]
                and r["conditions"]["labelSelector"]["matchExpressions"][0]["key"] == flux_label)
    assert flux["conditions"]["namespaces"] == ["pelican"] and flux["conditions"]["groupResource"] == "**"
    assert json.loads(flux["mergePatches"][0]["patchData"]) == {
        "metadata": {"labels": {"kustomize.toolkit.fluxcd.io/name": None}}}


def test_claims_are_provisioned_anew_never_bound_to_the_live_volumes() -> None:
    (claims,) = [r for r in resource_modifiers("pelican")["resourceModifierRules"]
                 if r["conditions"]["groupResource"] == "persistentvolumeclaims" and "matches" not in r["conditions"]]
    assert claims["conditions"]["namespaces"] == ["pelican"]
    patch = json.loads(claims["mergePatches"][0]["patchData"])
    assert patch["spec"] == {"volumeName": None}
    assert patch["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] is None


def test_a_static_claim_takes_the_default_class_in_the_copy() -> None:
    """A claim with storageClassName "" could only bind to the live static PV (the NFS library)."""
    (static,) = [r for r in resource_modifiers("immich")["resourceModifierRules"]
                 if "matches" in r["conditions"]]
    assert static["conditions"]["matches"] == [{"path": "/spec/storageClassName", "value": ""}]
    assert json.loads(static["mergePatches"][0]["patchData"]) == {"spec": {"storageClassName": None,
                                                                            "accessModes": ["ReadWriteOnce"]}}


def test_the_copy_is_isolated_from_the_live_app() -> None:
    policy = isolation_policy("pelican-drill-x", api_server_ips=["10.0.0.1"])
    egress = policy["spec"]["egress"]
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert {"to": [{"podSelector": {}}]} in egress  # the copy's own pods only
    assert {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]} in egress
    assert not any("namespaceSelector" in peer and "kube-system" not in json.dumps(peer)
                   for rule in egress for peer in rule["to"])


def test_a_cluster_without_velero_is_refused_naming_what_is_missing(tmp_path: Path) -> None:
    with running_fake_apiserver() as server:
        kubeconfig = server.kubeconfig(tmp_path)
        handle = ClusterHandle(provider="existing", name="theirs", kubeconfig=kubeconfig, context=None,
                               created_by_us=False)
        ctx = PlatformContext(cluster=handle, api=load_api_client(kubeconfig, None), images={})
        with pytest.raises(PlatformMissing) as raised:
            discover_platform(ctx)
    assert "this cluster has no Velero: CustomResourceDefinitions backups.velero.io" in str(raised.value)
    assert "restoredrill installs nothing on a cluster it did not create" in str(raised.value)
    assert {method for method, _, _ in server.requests} == {"GET"}  # it only looked


def test_the_drill_on_a_cluster_without_velero_fails_and_writes_nothing(pytester: pytest.Pytester,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    user_project(pytester.path)
    with running_fake_apiserver() as server:
        result = pytester.runpytest_subprocess(
            "suites/drills/test_namespace_restore.py", "-k", "pelican", "--gitops-repo", "repo",
            "--cluster-provider", "existing", "--cluster-kubeconfig", str(server.kubeconfig(tmp_path)),
            "-p", "no:cacheprovider")
    assert result.ret == 1
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*this cluster has no Velero: CustomResourceDefinitions*missing*"])
    assert {method for method, _, _ in server.requests} <= {"GET"}, server.requests
