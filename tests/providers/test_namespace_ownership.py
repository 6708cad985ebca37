"""The namespace ownership guard: pure logic on fake namespace objects, then the helpers against a
stand-in API server that records requests, to show a refused delete never reaches the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes import client

from restoredrill.cluster import namespaces
from restoredrill.cluster.namespaces import (
    CREATED_BY_LABEL,
    RUN_ID_LABEL,
    WORKER_LABEL,
    NamespaceFactory,
    assert_owned,
    create_owned_namespace,
    delete_owned_namespace,
    ownership_labels,
    worker_scoped_name,
)
from restoredrill.errors import ConfigError, NotOursError
from restoredrill.kube import load_api_client
from tests.providers.fake_apiserver import FakeApiServer, running_fake_apiserver

RUN = "20261126t182600-ab12cd"


def fake_namespace(name: str, labels: dict[str, str] | None) -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(name=name, labels=labels))


def test_labels_name_the_creator_the_run_and_the_worker() -> None:
    assert ownership_labels(run_id=RUN, worker_id="gw2") == {
        CREATED_BY_LABEL: "restoredrill",
        RUN_ID_LABEL: RUN,
        WORKER_LABEL: "gw2",
    }


def test_owned_namespace_passes() -> None:
    assert_owned(fake_namespace("immich-gw0", ownership_labels(run_id=RUN, worker_id="gw0")), RUN)
    assert_owned(fake_namespace("immich-gw0", ownership_labels(run_id=RUN, worker_id="gw0")), RUN, worker_id="gw0")


def test_unlabelled_namespace_is_refused_with_an_explanation() -> None:
    with pytest.raises(NotOursError) as error:
        assert_owned(fake_namespace("immich", None), RUN)

    message = str(error.value)
    assert "refusing to delete namespace 'immich'" in message
    assert f"lacks the label {CREATED_BY_LABEL}=restoredrill (it has no such label)" in message
    assert "restoredrill did not create it" in message
    assert "fix: restoredrill deletes only namespaces it created in this run" in message
    assert "kubectl delete namespace immich" in message


def test_a_look_alike_creator_label_is_refused() -> None:
    with pytest.raises(NotOursError, match=f"it has {CREATED_BY_LABEL}=someone-else"):
        assert_owned(fake_namespace("db", {CREATED_BY_LABEL: "someone-else", RUN_ID_LABEL: RUN}), RUN)


def test_a_namespace_of_another_run_is_refused() -> None:
    other = ownership_labels(run_id="20261125t020000-000000")

    with pytest.raises(NotOursError) as error:
        assert_owned(fake_namespace("immich", other), RUN)

    assert f"its label {RUN_ID_LABEL} does not name this run {RUN!r}" in str(error.value)
    assert "created by run '20261125t020000-000000'" in str(error.value)
    assert "may still be in use" in str(error.value)


def test_creator_label_without_run_id_is_refused() -> None:
    with pytest.raises(NotOursError, match="it has no such label"):
        assert_owned(fake_namespace("immich", {CREATED_BY_LABEL: "restoredrill"}), RUN)


def test_a_namespace_of_another_worker_is_refused_when_the_worker_is_given() -> None:
    labels = ownership_labels(run_id=RUN, worker_id="gw1")

    with pytest.raises(NotOursError, match=f"{WORKER_LABEL}=gw1 names another xdist worker than 'gw0'"):
        assert_owned(fake_namespace("immich-gw1", labels), RUN, worker_id="gw0")


def test_namespace_without_metadata_is_refused() -> None:
    with pytest.raises(NotOursError, match=r"namespace '\(unnamed\)'"):
        assert_owned(SimpleNamespace(metadata=None), RUN)


@pytest.mark.parametrize(
    ("base", "worker_id", "expected"),
    [("immich", "master", "immich"), ("immich", "gw0", "immich-gw0"), ("velero", "gw11", "velero-gw11")],
)
def test_worker_scoped_names(base: str, worker_id: str, expected: str) -> None:
    assert worker_scoped_name(base, worker_id) == expected


@pytest.mark.parametrize("base", ["Immich", "immich_db", "-immich", "a" * 60])
def test_worker_scoped_name_refuses_what_is_not_a_dns_label(base: str) -> None:
    with pytest.raises(ConfigError, match="is not a DNS label"):
        worker_scoped_name(base, "gw0")


def test_run_ids_are_label_values_and_differ() -> None:
    first, second = namespaces.new_run_id(), namespaces.new_run_id()

    assert first != second
    assert namespaces.check_run_id(first) == first
    with pytest.raises(ConfigError, match="cannot be a Kubernetes label value"):
        namespaces.check_run_id("run id with spaces")


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    with running_fake_apiserver() as server:
        yield server


@pytest.fixture
def api(apiserver: FakeApiServer, tmp_path: Path) -> client.ApiClient:
    return load_api_client(apiserver.kubeconfig(tmp_path), None, retries=0)


def test_delete_refuses_an_unlabelled_namespace_and_sends_no_delete(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    apiserver.add_namespace("production", {"team": "media"})

    with pytest.raises(NotOursError, match="refusing to delete namespace 'production'"):
        delete_owned_namespace(api, "production", run_id=RUN, wait_timeout=5)

    assert apiserver.deletes() == []
    assert "production" in apiserver.namespaces


def test_delete_removes_an_owned_namespace_with_a_uid_precondition(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    uid = apiserver.add_namespace("drill-gw0", ownership_labels(run_id=RUN, worker_id="gw0"))["metadata"]["uid"]

    delete_owned_namespace(api, "drill-gw0", run_id=RUN, wait_timeout=5)

    assert apiserver.deletes() == ["drill-gw0"]
    delete_body = next(body for method, _, body in apiserver.requests if method == "DELETE")
    assert delete_body["preconditions"] == {"uid": uid}
    assert "drill-gw0" not in apiserver.namespaces


def test_delete_of_a_missing_namespace_is_quiet(apiserver: FakeApiServer, api: client.ApiClient) -> None:
    delete_owned_namespace(api, "gone", run_id=RUN, wait_timeout=5)

    assert apiserver.deletes() == []


def test_create_labels_the_namespace(apiserver: FakeApiServer, api: client.ApiClient) -> None:
    create_owned_namespace(api, "immich-gw3", run_id=RUN, worker_id="gw3", labels={"app": "immich"})

    labels = apiserver.namespaces["immich-gw3"]["metadata"]["labels"]
    assert labels == {"app": "immich", **ownership_labels(run_id=RUN, worker_id="gw3")}


def test_create_will_not_adopt_a_namespace_that_is_not_ours(apiserver: FakeApiServer, api: client.ApiClient) -> None:
    apiserver.add_namespace("immich", {})

    with pytest.raises(NotOursError, match="namespace 'immich' already exists and is not this run's"):
        create_owned_namespace(api, "immich", run_id=RUN)


def test_factory_cleans_up_only_what_it_created(apiserver: FakeApiServer, api: client.ApiClient) -> None:
    apiserver.add_namespace("immich", {"team": "media"})
    apiserver.add_namespace("velero-gw0", ownership_labels(run_id=RUN, worker_id="gw0"))
    factory = NamespaceFactory(api, run_id=RUN, worker_id="gw0", delete_timeout=5)

    names = [factory("immich"), factory("minio")]
    failures = factory.cleanup()

    assert names == ["immich-gw0", "minio-gw0"]
    assert failures == []
    assert sorted(apiserver.deletes()) == ["immich-gw0", "minio-gw0"]
    assert sorted(apiserver.namespaces) == ["immich", "velero-gw0"]


def test_factory_cleanup_is_best_effort_and_reports_what_it_left(
    apiserver: FakeApiServer, api: client.ApiClient
) -> None:
    factory = NamespaceFactory(api, run_id=RUN, worker_id="gw0", delete_timeout=5)
    factory("a")
    factory("b")
    # Someone strips our labels from one of them while the test runs: it is no longer ours to delete.
    apiserver.namespaces["a-gw0"]["metadata"]["labels"] = {}

    failures = factory.cleanup()

    assert [name for name, _ in failures] == ["a-gw0"]
    assert isinstance(failures[0][1], NotOursError)
    assert apiserver.deletes() == ["b-gw0"]
