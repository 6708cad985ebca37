"""The `existing` provider's non-destructive drill, against the local cluster treated as someone else's.

This session's fixtures play the user: they install the platform (Velero, CNPG, Flux, MinIO) and
deploy pelican through Flux, as a separate step. A second pytest session then drills pelican with
`--cluster-provider existing` on the same kubeconfig, as a user pointing restoredrill at their own
cluster would. The API server's audit log is the recording: every write of that second session
must be to the copy's namespace or to the drill's own Velero objects, and nothing of it is left.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from restoredrill.catalogue import App, Catalogue
from restoredrill.cluster import ClusterHandle
from restoredrill.drill.namespace import NamespaceDrill
from tests.conftest import PROJECT_ROOT, user_project

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill]
pytest_plugins = ("pytester",)

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Velero objects a drill makes and owns (its Backup, Restore, their download requests, the deletion
# of its Backup, the resource-modifier ConfigMap); each is checked by name below.
OWN_VELERO_RESOURCES = frozenset({"backups", "restores", "downloadrequests", "deletebackuprequests", "configmaps"})


def audit_writes(log: Path, *, since: datetime, user: str, run_id: str) -> list[dict[str, Any]]:
    """Write requests of `user` in the API server's audit log after `since` (ResponseComplete stage)
    made by the run `run_id` (its User-Agent names it) or by kubectl (which the drill also runs)."""
    writes = []
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event.get("stage") != "ResponseComplete" or event.get("verb") not in WRITE_VERBS:
            continue
        if (event.get("user") or {}).get("username") != user:
            continue
        agent = str(event.get("userAgent", ""))
        if f"run/{run_id}" not in agent and not agent.startswith("kubectl"):
            continue
        when = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if when >= since:
            writes.append(event)
    return writes


@pytest.fixture(scope="module", params=["pelican", "immich"])
def deployed(request: pytest.FixtureRequest, catalogue: Catalogue) -> Iterator[NamespaceDrill]:
    """The app as the user runs it: deployed by Flux on a cluster with the platform installed. immich
    has a CNPG Cluster (velero 9433: its volumes restored empty under a mapping) and an NFS library."""
    factory: Callable[[App], NamespaceDrill] = request.getfixturevalue("module_namespace_drill")
    drill = factory(next(app for app in catalogue.apps if app.name == request.param))
    drill.step("deploy", drill.deploy)
    yield drill


def user_name(api: Any) -> str:
    """Who the kubeconfig authenticates as, as the API server sees it (a SelfSubjectReview)."""
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview"))
    return str(api.sanitize_for_serialization(review)["status"]["userInfo"]["username"])


def test_existing_provider_drills_a_copy_and_writes_nothing_else(
        deployed: NamespaceDrill, cluster: ClusterHandle, pytester: pytest.Pytester,
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = deployed.plan.app
    assert cluster.log_dir is not None
    audit_log = cluster.log_dir / "audit.log"
    assert audit_log.is_file(), "the local cluster's API server writes an audit log"
    user = user_name(deployed.ctx.api)
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    user_project(pytester.path)
    (live,) = deployed.ctx.as_manifests([deployed.ctx.core.read_namespace(deployed.ns)])
    live_uid = live["metadata"]["uid"]
    time.sleep(1.1)  # audit timestamps have microseconds; keep the fixture's own writes out of the window
    run_id = f"existing{secrets.token_hex(3)}"
    monkeypatch.setenv("RESTOREDRILL_RUN_ID", run_id)
    started = datetime.now(UTC)
    result = pytester.runpytest_subprocess(
        "suites/drills/test_namespace_restore.py", "-k", f"[{app}]", "--gitops-repo", "repo",
        "--cluster-provider", "existing", "--cluster-kubeconfig", str(cluster.kubeconfig),
        "--cluster-context", str(cluster.context), "-p", "no:cacheprovider", timeout=1200)
    finished = datetime.now(UTC)
    assert result.ret == 0, result.stdout.str()[-6000:]
    result.assert_outcomes(passed=1)
    summary = json.loads((pytester.path / "reports" / "summary.json").read_text())
    (entry,) = [r for r in summary["results"] if r.get("scenario") == "mapped-namespace-restore"]
    copy = f"{deployed.ns}-drill-"
    assert entry["pod_volume_backups"] >= 1 and entry["pod_volume_restores"] == entry["pod_volume_backups"]
    assert all(line.startswith("deleted ") for line in entry["cleaned_up"]), entry["cleaned_up"]

    writes = audit_writes(audit_log, since=started, user=user, run_id=run_id)
    assert writes, "the audit log recorded none of the drill's writes: is the recording working?"
    outside = []
    for event in writes:
        ref = event.get("objectRef") or {}
        namespace, resource, name = ref.get("namespace", ""), ref.get("resource", ""), ref.get("name", "")
        if namespace.startswith(copy) or (resource == "namespaces" and name.startswith(copy)):
            continue
        if namespace == "velero" and resource in OWN_VELERO_RESOURCES and (
                "-drill-" in name or name.startswith("restoredrill-") or resource == "deletebackuprequests"):
            continue
        outside.append(f"{event['verb']} {resource}/{namespace}/{name} at {event['requestReceivedTimestamp']}")
    assert not outside, f"writes outside the copy between {started} and {finished}: {outside}"
    # The app itself is as it was (the same namespace), and no copy is left.
    namespaces = deployed.ctx.as_manifests(deployed.ctx.core.list_namespace().items)
    assert next(ns for ns in namespaces if ns["metadata"]["name"] == deployed.ns)["metadata"]["uid"] == live_uid
    assert not [ns["metadata"]["name"] for ns in namespaces if ns["metadata"]["name"].startswith(copy)]
