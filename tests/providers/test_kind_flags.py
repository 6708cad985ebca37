"""pytest-kind's own flags: honoured on the kind provider, refused elsewhere, never silently ignored."""

from __future__ import annotations

from typing import Any

import pytest

from fixtures import cluster as cluster_fixtures
from restoredrill.cluster.kind import KindCluster
from restoredrill.errors import ConfigError
from tests.conftest import MakeProviderOptions


@pytest.fixture(autouse=True)
def no_node_image_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # CI on a machine with no registry sets it for every run.
    monkeypatch.delenv(cluster_fixtures.KIND_IMAGE_ENV, raising=False)


def make(**values: Any) -> Any:
    return cluster_fixtures.make_provider(MakeProviderOptions(**values))  # type: ignore[arg-type]


def test_pytest_kind_flags_reach_the_kind_provider(tmp_path: Any) -> None:
    kind_bin = tmp_path / "kind"
    provider = make(cluster_provider="kind", cluster_name="nightly", kind_image="local", kind_bin=str(kind_bin),
                    kind_kubectl_bin="/opt/kubectl")

    assert isinstance(provider, KindCluster)
    assert provider.cluster_name == "nightly-gw0"
    assert provider.offline and provider.node_image == "local"
    assert provider.kind_bin == str(kind_bin) and provider.kubectl_bin == "/opt/kubectl"


def test_the_default_cluster_name_is_ours_not_pytest_kinds() -> None:
    provider = make(cluster_provider="kind")

    assert isinstance(provider, KindCluster)
    assert provider.cluster_name == "restoredrill-gw0"
    assert not provider.offline


def test_the_node_image_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cluster_fixtures.KIND_IMAGE_ENV, "local")

    provider = make(cluster_provider="kind")

    assert isinstance(provider, KindCluster) and provider.offline


def test_pytest_kinds_kubeconfig_is_refused_with_the_existing_provider_as_the_fix() -> None:
    with pytest.raises(ConfigError, match="--cluster-provider existing --cluster-kubeconfig"):
        make(cluster_provider="kind", kubeconfig="/home/me/.kube/config")


@pytest.mark.parametrize("flag,dest", [("--cluster-name", "cluster_name"), ("--kind-image", "kind_image")])
def test_kind_flags_on_another_provider_are_refused(flag: str, dest: str) -> None:
    with pytest.raises(ConfigError, match=f"{flag}.*kind only, not local") as error:
        make(cluster_provider="local", **{dest: "x"})

    assert "--cluster-provider kind" in str(error.value)
