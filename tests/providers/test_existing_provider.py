"""The existing provider: fails fast and clearly on a bad kubeconfig, and its teardown deletes only
the namespaces of its own run and worker (against a stand-in API server)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from restoredrill.cluster.existing import ClusterUnreachableError, ExistingCluster
from restoredrill.cluster.namespaces import ownership_labels
from restoredrill.errors import ConfigError, RestoreDrillError
from tests.providers.fake_apiserver import FakeApiServer, running_fake_apiserver

RUN = "20261126t182600-ab12cd"


def kubeconfig_for(server: str, directory: Path, *, context: str = "prod") -> Path:
    path = directory / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
                "current-context": context,
            }
        )
    )
    return path


def test_unreachable_api_server_fails_fast_naming_kubeconfig_and_context(tmp_path: Path) -> None:
    kubeconfig = kubeconfig_for("https://127.0.0.1:1", tmp_path)
    provider = ExistingCluster(kubeconfig=kubeconfig, context="prod", run_id=RUN, connect_timeout=2)

    started = time.monotonic()
    with pytest.raises(ClusterUnreachableError) as error:
        provider.up()
    elapsed = time.monotonic() - started

    assert elapsed < 10, f"took {elapsed:.1f}s to notice an unreachable server"
    message = str(error.value)
    assert f"the API server https://127.0.0.1:1 of context prod of kubeconfig {kubeconfig} is unreachable" in message
    assert "Connection refused" in message
    assert (
        f"fix: check that the cluster is up and the context is right: `kubectl --kubeconfig {kubeconfig} "
        "cluster-info --context prod`" in message
    )


def test_missing_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    provider = ExistingCluster(kubeconfig=tmp_path / "nope", context=None, run_id=RUN)

    with pytest.raises(ConfigError, match=f"kubeconfig {tmp_path / 'nope'} does not exist"):
        provider.up()


def test_unknown_context_is_a_config_error_that_lists_how_to_find_one(tmp_path: Path) -> None:
    kubeconfig = kubeconfig_for("https://127.0.0.1:1", tmp_path)
    provider = ExistingCluster(kubeconfig=kubeconfig, context="staging", run_id=RUN)

    with pytest.raises(ConfigError) as error:
        provider.up()

    assert f"cannot use context staging of kubeconfig {kubeconfig}" in str(error.value)
    assert f"kubectl --kubeconfig {kubeconfig} config get-contexts" in str(error.value)


def test_images_cannot_be_loaded_into_a_cluster_we_do_not_run(tmp_path: Path) -> None:
    provider = ExistingCluster(kubeconfig=tmp_path / "kc", context=None, run_id=RUN)

    provider.load_images({})
    with pytest.raises(ConfigError, match=r"cannot load locally built images \(velero\)"):
        provider.load_images({"velero": tmp_path / "velero.tar"})


@pytest.fixture
def apiserver() -> Iterator[FakeApiServer]:
    with running_fake_apiserver() as server:
        yield server


def test_up_on_a_reachable_cluster_is_not_ours(apiserver: FakeApiServer, tmp_path: Path) -> None:
    provider = ExistingCluster(kubeconfig=apiserver.kubeconfig(tmp_path), context="fake", run_id=RUN)

    handle = provider.up()

    assert handle.created_by_us is False
    assert handle.provider == "existing"
    assert "Kubernetes v1.34.4-fake" in provider.status()


def test_down_deletes_only_this_run_and_workers_namespaces(apiserver: FakeApiServer, tmp_path: Path) -> None:
    apiserver.add_namespace("immich", {"app": "immich"})
    apiserver.add_namespace("immich-gw0", ownership_labels(run_id=RUN, worker_id="gw0"))
    apiserver.add_namespace("immich-gw1", ownership_labels(run_id=RUN, worker_id="gw1"))
    apiserver.add_namespace("immich-old", ownership_labels(run_id="20261101t000000-000000", worker_id="gw0"))
    provider = ExistingCluster(kubeconfig=apiserver.kubeconfig(tmp_path), context="fake", run_id=RUN, worker_id="gw0")
    provider.up()

    assert provider.owned_namespaces() == ["immich-gw0"]
    provider.down()

    assert apiserver.deletes() == ["immich-gw0"]
    assert sorted(apiserver.namespaces) == ["immich", "immich-gw1", "immich-old"]


def test_down_rechecks_each_namespace_even_if_the_list_is_wrong(apiserver: FakeApiServer, tmp_path: Path) -> None:
    apiserver.list_ignores_selector = True
    apiserver.add_namespace("kube-system", {})
    apiserver.add_namespace("immich-gw0", ownership_labels(run_id=RUN, worker_id="gw0"))
    provider = ExistingCluster(kubeconfig=apiserver.kubeconfig(tmp_path), context="fake", run_id=RUN, worker_id="gw0")

    with pytest.raises(RestoreDrillError, match=r"1 namespace\(s\) of run .* were not removed") as error:
        provider.down()

    assert "refusing to delete namespace 'kube-system'" in str(error.value)
    assert apiserver.deletes() == ["immich-gw0"]
    assert "kube-system" in apiserver.namespaces
