"""The configuration files and command lines of the local cluster's host processes (pure: unit-tested)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from restoredrill.cluster.local.addons import DNS_DOMAIN
from restoredrill.cluster.local.config import CGROUP_ROOT_NAME, CNI_NETWORK, Layout, LocalClusterConfig
from restoredrill.toolchain.gobuild import GoToolchain

# Debian's containernetworking-plugins put the plugins here.
CNI_BIN_DIR = Path("/usr/lib/cni")


def containerd_config(*, layout: Layout, pause_image: str) -> str:
    """containerd 1.6 config: own root/state/socket, cgroupfs runc, CNI from Debian, no registry."""
    root, cri = layout.containerd, 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / 'opt'}"

[{cri}]
  sandbox_image = "{pause_image}"
  enable_selinux = false
  # This sandbox may not lower oom_score_adj (no CAP_SYS_RESOURCE): never go below our own.
  restrict_oom_score_adj = true
  # Pod network namespaces under our state dir, so `down` can tell them from anyone else's.
  netns_mounts_under_state_dir = true
  # Containers may bind ports below 1024 and ping without capabilities, inside their own network
  # namespace (net.ipv4.ip_unprivileged_port_start=0): containerd 2.x's default, and kind's, k3s's
  # and minikube's; 1.6 defaults to off. An app that binds :80 as a non-root user (pelican-panel
  # as uid 82) needs it.
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{root / 'runc'}"

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{layout.cni_conf}"
  max_conf_num = 1
"""


def cni_config(*, config: LocalClusterConfig, layout: Layout) -> dict[str, Any]:
    """A bridge network without masquerading (pods only talk to each other and to the node)."""
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": config.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": config.node_pod_cidr, "gateway": config.node_ip}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_ipam),
                },
            },
        ],
    }


def kubelet_config(*, config: LocalClusterConfig, layout: Layout) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "address": config.node_ip,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "readOnlyPort": 0,
        "tlsCertFile": str(layout.pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(layout.pki / "kubelet-serving.key"),
        # Debian's containerd 1.6 uses cgroupfs; the host is cgroup v1.
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT_NAME}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "clusterDNS": [config.dns_ip],
        "clusterDomain": DNS_DOMAIN,
        "resolvConf": str(layout.etc / "resolv.conf"),
        "podLogsDir": str(layout.pod_logs),
        # Imported images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "protectKernelDefaults": False,
        "registerNode": True,
        "syncFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(*, config: LocalClusterConfig, layout: Layout) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.component_kubeconfig("kube-proxy"))},
        "mode": "iptables",
        "clusterCIDR": config.pod_cidr,
        "hostnameOverride": config.name,
        "bindAddress": config.node_ip,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # 0: leave the host's nf_conntrack_max alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
        "nodePortAddresses": [f"{config.node_ip}/32"],
    }


def process_commands(*, config: LocalClusterConfig, layout: Layout, toolchain: GoToolchain) -> dict[str, list[str]]:
    """The command line of every host process, by name."""
    pki = layout.pki
    kc = layout.component_kubeconfig
    return {
        "etcd": [
            str(toolchain.binary("etcd")), "--name", config.name, "--data-dir", str(layout.etcd_data),
            "--listen-client-urls", f"http://127.0.0.1:{config.etcd_client_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{config.etcd_client_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{config.etcd_peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{config.etcd_peer_port}",
            "--initial-cluster", f"{config.name}=http://127.0.0.1:{config.etcd_peer_port}",
            "--log-level", "warn", "--quota-backend-bytes", str(2 * 1024**3),
            "--snapshot-count", "10000", "--unsafe-no-fsync",
        ],
        "containerd": ["containerd", "--config", str(layout.etc / "containerd.toml")],
        "kube-apiserver": [
            str(toolchain.binary("kube-apiserver")),
            "--etcd-servers", f"http://127.0.0.1:{config.etcd_client_port}",
            "--bind-address", config.node_ip, "--advertise-address", config.node_ip,
            "--secure-port", str(config.api_port),
            "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--kubelet-client-certificate", str(pki / "apiserver-kubelet-client.crt"),
            "--kubelet-client-key", str(pki / "apiserver-kubelet-client.key"),
            "--kubelet-certificate-authority", str(pki / "ca.crt"),
            "--kubelet-preferred-address-types", "InternalIP",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-account-issuer", f"https://kubernetes.default.svc.{DNS_DOMAIN}",
            "--service-cluster-ip-range", config.service_cidr,
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins", "NodeRestriction",
            "--allow-privileged=true", "--profiling=false", "--v=1",
            # Every write recorded (who, what, when): the evidence that a drill wrote only what it owns.
            "--audit-policy-file", str(layout.etc / "audit-policy.yaml"),
            "--audit-log-path", str(layout.logs / "audit.log"), "--audit-log-maxsize", "200",
            "--audit-log-maxbackup", "2",
        ],
        "kube-controller-manager": [
            str(toolchain.binary("kube-controller-manager")),
            "--kubeconfig", str(kc("controller-manager")),
            "--authentication-kubeconfig", str(kc("controller-manager")),
            "--authorization-kubeconfig", str(kc("controller-manager")),
            "--bind-address", "127.0.0.1", "--leader-elect=false",
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            "--cluster-signing-cert-file", str(pki / "ca.crt"), "--cluster-signing-key-file", str(pki / "ca.key"),
            "--use-service-account-credentials=true",
            "--allocate-node-cidrs=true", "--cluster-cidr", config.pod_cidr, "--node-cidr-mask-size", "24",
            "--service-cluster-ip-range", config.service_cidr, "--profiling=false", "--v=1",
        ],
        "kube-scheduler": [
            str(toolchain.binary("kube-scheduler")),
            "--kubeconfig", str(kc("scheduler")),
            "--authentication-kubeconfig", str(kc("scheduler")),
            "--authorization-kubeconfig", str(kc("scheduler")),
            "--bind-address", "127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1",
        ],
        "kubelet": [
            str(toolchain.binary("kubelet")),
            "--config", str(layout.etc / "kubelet.yaml"),
            "--kubeconfig", str(kc("kubelet")),
            "--root-dir", str(config.kubelet_root),
            "--hostname-override", config.name, "--node-ip", config.node_ip, "--v=1",
        ],
        "kube-proxy": [
            str(toolchain.binary("kube-proxy")), "--config", str(layout.etc / "kube-proxy.yaml"), "--v=1",
        ],
    }



def audit_policy() -> dict[str, Any]:
    """The API server's audit policy: metadata of every write, nothing of reads or of the noisy writes
    components make all the time (leases, events, status heartbeats of nodes)."""
    return {
        "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "None", "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]},
                                            {"group": "", "resources": ["events"]},
                                            {"group": "events.k8s.io", "resources": ["events"]}]},
            {"level": "None", "verbs": ["get", "list", "watch"]},
            {"level": "Metadata"},
        ],
    }
