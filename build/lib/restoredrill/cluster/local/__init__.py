"""The `local` provider: a real single-node Kubernetes cluster from binaries, without Docker.

`LocalCluster` (cluster.py) brings it up and down; what it puts on the host is recorded in one
ledger (ledger.py) and removed from nothing else (footprint.py), after a preflight that refuses
a host it would clash with (preflight.py).
"""

from restoredrill.cluster.local.cluster import LocalCluster
from restoredrill.cluster.local.config import CONTROL_PLANE, OWNER_MARKER, Layout, LocalClusterConfig
from restoredrill.cluster.local.configfiles import cni_config, containerd_config, kube_proxy_config, kubelet_config

__all__ = ["CONTROL_PLANE", "OWNER_MARKER", "Layout", "LocalCluster", "LocalClusterConfig", "cni_config",
           "containerd_config", "kube_proxy_config", "kubelet_config"]
