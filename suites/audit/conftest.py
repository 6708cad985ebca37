"""The audit reads a cluster the user names: the `existing` provider unless another is asked for.

Without `--cluster-kubeconfig` (and no explicit `--cluster-provider`) the audit's tests skip, so
`pytest suites` on the drill cluster neither builds a cluster for them nor audits an empty one; but
`-m audit` without one fails: the user asked for an audit and none was made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.cluster import make_provider, setting
from restoredrill.cluster import ClusterProvider
from restoredrill.cluster.existing import ExistingCluster


@pytest.fixture(scope="session")
def cluster_provider(pytestconfig: pytest.Config, run_id: str, worker_id: str) -> ClusterProvider:
    """`--cluster-provider existing` semantics for `pytest suites -m audit --cluster-kubeconfig K`."""
    if setting(pytestconfig, "cluster_provider") not in (None, "existing"):
        return make_provider(pytestconfig)  # audit the session's own cluster, as asked
    kubeconfig = setting(pytestconfig, "cluster_kubeconfig")
    if not kubeconfig:
        remedy = "the audit reads the cluster you name: pass --cluster-kubeconfig K [--cluster-context C]"
        markexpr = str(pytestconfig.option.markexpr or "")
        if "audit" in markexpr and "not audit" not in markexpr:  # asked for, so not auditing is a failure
            pytest.fail(f"nothing was audited: {remedy}", pytrace=False)
        pytest.skip(remedy)
    return ExistingCluster(kubeconfig=Path(str(kubeconfig)), context=setting(pytestconfig, "cluster_context"),
                           run_id=run_id, worker_id=worker_id)
