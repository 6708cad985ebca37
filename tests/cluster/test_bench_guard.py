"""`bench/backup_platform.py --fresh` deletes the platform's namespaces: never on a cluster we did not create."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from restoredrill.cluster import ClusterHandle
from restoredrill.errors import NotOursError

BENCH = Path(__file__).resolve().parents[2] / "bench" / "backup_platform.py"


@pytest.fixture
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_backup_platform", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fresh_refuses_a_kubeconfig_restoredrill_did_not_create(bench: ModuleType, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "production.kubeconfig"

    def no_api(*args: object) -> None:
        raise AssertionError("the bench talked to the cluster before refusing")

    monkeypatch.setattr(bench, "load_api_client", no_api)
    monkeypatch.setattr(sys, "argv", ["backup_platform.py", "--provider", "kind", "--kubeconfig", str(kubeconfig),
                                      "--fresh"])
    with pytest.raises(NotOursError) as refused:
        bench.main()
    message = str(refused.value)
    assert "velero, cnpg-system, flux-system" in message and str(kubeconfig) in message
    assert "restoredrill did not create" in message and "drop --fresh" in message


def test_only_the_running_local_clusters_own_kubeconfig_counts_as_ours(bench: ModuleType, tmp_path: Path) -> None:
    other = bench.bench_cluster(provider="local", kubeconfig=tmp_path / "other.kubeconfig", context=None)
    assert not other.created_by_us
    ours = ClusterHandle(provider="local", name="restoredrill", kubeconfig=tmp_path / "k", context="restoredrill",
                         created_by_us=True)
    bench.refuse_fresh_on_a_foreign_cluster(ours)  # no error
