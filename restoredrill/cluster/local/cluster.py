"""The `local` provider: a real single-node Kubernetes cluster from binaries, without Docker.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and containerd
run as host processes (processes.py). Pods get a CNI bridge (`rdbr0`, whose address is also the
node IP the API server binds to), kube-proxy in iptables mode gives Services, CoreDNS answers
cluster DNS, and the local-path provisioner makes `spec.local` PVs (addons.py).

Host safety: the preflight (preflight.py) runs before anything is touched; every host resource
`up` makes is recorded in the ledger as it is made (ledger.py); `down`, and the clean-up of an
earlier run, remove only what the ledger records or what lives under our own marked directories
(footprint.py). Another kubelet's mounts, another kube-proxy's chains, a podman bridge are never
touched, whatever their names.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from restoredrill.cluster import ClusterHandle, ClusterProvider
from restoredrill.cluster.local import preflight
from restoredrill.cluster.local.addons import coredns_manifests, local_path_manifests, render
from restoredrill.cluster.local.config import (
    CGROUP_ROOT_NAME,
    OWNER_MARKER,
    PROCESS_ORDER,
    SYSCTLS,
    Layout,
    LocalClusterConfig,
)
from restoredrill.cluster.local.configfiles import (
    audit_policy,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
    process_commands,
)
from restoredrill.cluster.local.footprint import Footprint
from restoredrill.cluster.local.host import Host
from restoredrill.cluster.local.ledger import HostLedger, Kind, Resource
from restoredrill.cluster.local.pki import Pki, cluster_cert_requests, kubeconfig
from restoredrill.cluster.local.processes import Processes
from restoredrill.errors import NotOursError, RestoreDrillError
from restoredrill.images import LocalImageBuilder, image_set, import_archives
from restoredrill.timeouts import timeout
from restoredrill.toolchain.gobuild import GoToolchain
from restoredrill.waits import wait_until


def _say(line: str) -> None:
    print(f"[cluster] {line}", flush=True)


class LocalCluster(ClusterProvider):
    """install (`up`) / wait-until-ready / client / uninstall (`down`) of the local cluster."""

    name = "local"

    def __init__(self, config: LocalClusterConfig | None = None, *, toolchain: GoToolchain | None = None,
                 host: Host | None = None, out: Callable[[str], None] = _say) -> None:
        self.config = config or LocalClusterConfig()
        self.layout = Layout(self.config)
        self.host = host or Host()
        self.ledger = HostLedger(self.layout.ledger)
        self.footprint = Footprint(config=self.config, layout=self.layout, host=self.host, ledger=self.ledger,
                                   out=out)
        self.processes = Processes(layout=self.layout, host=self.host, ledger=self.ledger)
        self._toolchain = toolchain
        self.out = out
        # Seconds from the start of `up` to each milestone, and of the last `down` (for bench/).
        self.timings: dict[str, float] = {}

    @property
    def toolchain(self) -> GoToolchain:
        if self._toolchain is None:
            self._toolchain = GoToolchain()
        return self._toolchain

    # ---- public API ------------------------------------------------------------------------
    def handle(self) -> ClusterHandle:
        return ClusterHandle(provider=self.name, name=self.config.name, kubeconfig=self.layout.kubeconfig,
                             context=self.config.name, created_by_us=True, log_dir=self.layout.logs, offline=True)

    def up(self) -> ClusterHandle:
        """Start the cluster (or reuse a kept, healthy one) and return once the node is Ready.

        Order matters for the host: preflight (nothing touched yet), then the clean-up of what an
        earlier cluster here left (only what it recorded), then the check that our ports are free.
        """
        self._require_root()
        if self.ledger.exists() and self.healthy():
            self.out(f"reusing the running cluster in {self.layout.root}")
            return self.handle()
        self.footprint.observe()
        preflight.check_programs(self.toolchain, self.footprint)
        preflight.check_host(self.footprint)
        if self.ledger.exists() or self.leftovers():
            self.out("an earlier cluster here left things behind: removing what it recorded first")
            self.down(keep=self.recorded_keep())
        preflight.check_ports(self.footprint)
        started = time.monotonic()
        try:
            self._up(started)
        except BaseException:
            if self.config.keep_on_failure:
                self.out(f"up failed; the cluster is left for inspection, logs in {self.layout.logs} "
                         "(`restoredrill cluster down` removes it)")
            else:
                self.out(f"up failed; tearing the half-started cluster down, keeping its logs in {self.layout.logs}")
                with contextlib.suppress(Exception):
                    self.down(keep=[*self.recorded_keep(), self.layout.logs])
            raise
        return self.handle()

    def down(self, *, keep: Iterable[Path] = ()) -> None:
        """Remove what `up` recorded, and what lives under our marked directories, except
        `config.keep` and `keep` (paths under the cluster dir)."""
        self._require_root()
        root = self.layout.root
        if root.exists() and any(root.iterdir()) and not self.footprint.cluster_dir_is_ours():
            raise NotOursError(f"{root} was not created by restoredrill's local provider (no {OWNER_MARKER})",
                               remedy="pass a --cluster-dir that restoredrill created")
        started = time.monotonic()
        footprint = self.footprint
        footprint.observe()
        netns = self._pod_netns_paths()
        # kubelet first so it stops restarting containers; containerd after the pods are killed.
        self.processes.stop(("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager", "kube-apiserver"))
        footprint.kill_cgroup_processes()
        self.processes.stop(("containerd", "etcd"))
        self.processes.kill_strays()
        footprint.observe()  # what kube-proxy made between the first look and its exit
        footprint.unmount(extra=netns)
        footprint.remove_interfaces()
        footprint.remove_iptables_chains()
        footprint.remove_cgroups()
        footprint.restore_sysctls()
        footprint.remove_host_files()
        footprint.remove_dirs()
        footprint.remove_cluster_dir(keep=[*self.config.keep, *keep])
        self.timings["down"] = time.monotonic() - started
        self.out(f"down in {self.timings['down']:.1f}s")

    def status(self) -> str:
        lines = [f"local cluster {self.config.name} in {self.layout.root}"]
        if not self.ledger.exists():
            return lines[0] + f": not running (no {self.layout.ledger.name})"
        for name in PROCESS_ORDER:
            pid = self.processes.live_pid(name)
            lines.append(f"  {name:24} {'running pid ' + str(pid) if pid else 'NOT running'}  "
                         f"log {self.layout.log(name)}")
        ready, seen = self._node_ready()
        lines.append(f"  node {self.config.name}: {'Ready' if ready else 'not Ready'} ({seen})")
        lines.append(f"  kubeconfig: {self.layout.kubeconfig}")
        lines.append(f"  host resources: {len(self.ledger.resources())} recorded in {self.layout.ledger}")
        return "\n".join(lines)

    def load_images(self, images: dict[str, Path]) -> None:
        import_archives(images, containerd_address=self.layout.containerd_socket)

    def client(self) -> Any:
        """A kubernetes.client.ApiClient for this cluster."""
        from restoredrill.kube import load_api_client

        return load_api_client(self.layout.kubeconfig, self.config.name)

    def process_rss(self) -> dict[str, int]:
        """Resident memory in bytes of each running host process of ours (VmRSS from /proc)."""
        return self.processes.rss(PROCESS_ORDER)

    def healthy(self) -> bool:
        if not all(self.processes.live_pid(name) for name in PROCESS_ORDER):
            return False
        ready, _ = self._node_ready()
        return ready

    def recorded_keep(self) -> list[Path]:
        """The directories the last `down` kept (listed in the owner marker), for the next `up`."""
        marker = self.layout.marker
        if not marker.exists():
            return []
        return [Path(line[len("keep "):]) for line in marker.read_text().splitlines() if line.startswith("keep ")]

    def leftovers(self) -> list[str]:
        """Anything of ours still on the host: what `down` must have removed (kept data aside)."""
        footprint = self.footprint
        found = footprint.recorded_still_present()
        found += [f"process {pid}: {' '.join(argv)[:160]}" for pid, argv in self.processes.provably_ours()]
        found += [f"mount {point}" for point in footprint.our_mounts()]
        found += [f"log link {link}" for link in footprint.our_log_links()]
        kubelet_root = self.config.kubelet_root
        if kubelet_root.exists() and footprint.kubelet_root_is_ours():
            found.append(f"kubelet root {kubelet_root}")
        root = self.layout.root
        if root.is_dir() and footprint.cluster_dir_is_ours():
            keep = {Path(p).resolve() for p in (*self.config.keep, *self.recorded_keep())}
            for child in root.iterdir():
                if child.name == OWNER_MARKER or any(k.is_relative_to(child.resolve()) for k in keep):
                    continue
                found.append(f"file {child}")
        return found

    # ---- up, step by step ------------------------------------------------------------------
    def _up(self, started: float) -> None:
        self._prepare_dirs()
        self.ledger.set_facts(started_at=time.time(), config={k: str(v) for k, v in asdict(self.config).items()})
        self._write_pki_and_configs()
        self._set_sysctls()
        self._create_bridge()
        self._prepare_cgroups()
        commands = process_commands(config=self.config, layout=self.layout, toolchain=self.toolchain)
        self.processes.start("etcd", commands["etcd"])
        self.processes.start("containerd", commands["containerd"])
        self._wait_http("etcd healthy", f"http://127.0.0.1:{self.config.etcd_client_port}/health",
                        process="etcd", expect='"health":"true"')
        self.processes.start("kube-apiserver", commands["kube-apiserver"])
        self._wait_containerd()
        images = LocalImageBuilder(toolchain=self.toolchain).build()
        self.load_images(images)
        self.out(f"imported {len(images)} images into containerd")
        self._wait_http("kube-apiserver ready", f"{self.config.server}/readyz", process="kube-apiserver",
                        expect="ok")
        for name in ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
            self.processes.start(name, commands[name])
        self._wait_node_ready()
        self.footprint.observe()
        self.timings["node_ready"] = time.monotonic() - started
        self.out(f"node {self.config.name} Ready {self.timings['node_ready']:.1f}s after `up` started")
        self._install_addons()
        self._wait_addons()
        self.footprint.observe()
        self.timings["addons_ready"] = time.monotonic() - started
        self.out(f"cluster up in {time.monotonic() - started:.1f}s; kubeconfig {self.layout.kubeconfig}")

    def _require_root(self) -> None:
        if os.geteuid() != 0:
            raise RestoreDrillError("the local provider runs kubelet and containerd, which need root",
                                    remedy="run as root, or use --cluster-provider kind/existing")

    def _prepare_dirs(self) -> None:
        """The cluster dir (marked, holding the ledger), the snapshot of the shared host state before
        anything starts, then the kubelet root, recorded before it is made."""
        layout, ledger = self.layout, self.ledger
        created_root = not layout.root.exists()
        layout.root.mkdir(parents=True, exist_ok=True)
        if not layout.marker.exists():
            layout.marker.write_text("created by restoredrill's local provider\n")
        if created_root:
            ledger.record(Resource(Kind.DIR, str(layout.root)))
        ledger.set_snapshot(self.footprint.snapshot())
        for directory in (layout.logs, layout.run, layout.etc, layout.etcd_data, layout.containerd,
                          layout.cni_conf, layout.cni_ipam, layout.pod_logs, self.config.storage_dir):
            directory.mkdir(parents=True, exist_ok=True)
        layout.etcd_data.chmod(0o700)
        kubelet_root = self.config.kubelet_root
        ledger.record(Resource(Kind.DIR, str(kubelet_root), {"existed": "yes"} if kubelet_root.exists() else {}))
        kubelet_root.mkdir(parents=True, exist_ok=True)
        (kubelet_root / OWNER_MARKER).write_text(str(layout.root) + "\n")

    def _write_pki_and_configs(self) -> None:
        config, layout = self.config, self.layout
        pki = Pki(layout.pki)
        pki.ensure(cluster_cert_requests(node_name=config.name, node_ip=config.node_ip,
                                         api_service_ip=config.api_service_ip))
        users = {"admin": ("admin", "kubernetes-admin"),
                 "controller-manager": ("controller-manager", "system:kube-controller-manager"),
                 "scheduler": ("scheduler", "system:kube-scheduler"),
                 "kubelet": ("kubelet", f"system:node:{config.name}"),
                 "kube-proxy": ("kube-proxy", "system:kube-proxy")}
        for component, (stem, user) in users.items():
            text = kubeconfig(server=config.server, ca=pki.ca, cert=pki.path(stem, "crt"),
                              key=pki.path(stem, "key"), user=user, cluster=config.name)
            target = layout.kubeconfig if component == "admin" else layout.component_kubeconfig(component)
            target.write_text(text)
            target.chmod(0o600)
        pause = image_set("local")["pause"]
        (layout.etc / "containerd.toml").write_text(containerd_config(layout=layout, pause_image=pause))
        (layout.cni_conf / "10-restoredrill.conflist").write_text(
            json.dumps(cni_config(config=config, layout=layout), indent=2))
        (layout.etc / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(config=config, layout=layout)))
        (layout.etc / "audit-policy.yaml").write_text(yaml.safe_dump(audit_policy()))
        (layout.etc / "kube-proxy.yaml").write_text(
            yaml.safe_dump(kube_proxy_config(config=config, layout=layout)))
        # Pods with dnsPolicy Default (CoreDNS) get this; it names no outside resolver on purpose.
        (layout.etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions ndots:1\n")

    def _set_sysctls(self) -> None:
        for key, value in SYSCTLS.items():
            path = self.host.sysctl_path(key)
            old = path.read_text().strip()
            if old != value:
                self.ledger.record(Resource(Kind.SYSCTL, key, {"old": old, "new": value}))
                path.write_text(value)

    def _create_bridge(self) -> None:
        prefix = ipaddress.ip_network(self.config.node_pod_cidr).prefixlen
        # The preflight refused a bridge of this name that the ledger does not hold: this one is ours.
        self.ledger.record(Resource(Kind.INTERFACE, self.config.bridge))
        self.host.add_bridge(self.config.bridge, f"{self.config.node_ip}/{prefix}")

    def _prepare_cgroups(self) -> None:
        # kubelet requires its --cgroup-root to exist in every v1 hierarchy.
        for hierarchy in self.host.cgroup_hierarchies():
            directory = hierarchy / CGROUP_ROOT_NAME
            if not directory.exists():
                self.ledger.record(Resource(Kind.CGROUP, str(directory)))
                directory.mkdir()
            if hierarchy.name == "cpuset":
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    if not (directory / knob).read_text().strip():
                        (directory / knob).write_text((hierarchy / knob).read_text().strip())

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.layout.pki / "ca.crt"))
        context.load_cert_chain(str(self.layout.pki / "admin.crt"), str(self.layout.pki / "admin.key"))
        return context

    def _get(self, url: str) -> tuple[int, str]:
        context = self._ssl_context() if url.startswith("https") else None
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def _wait_http(self, what: str, url: str, *, process: str, expect: str) -> None:
        def probe() -> tuple[bool | None, str]:
            if self.processes.live_pid(process) is None:
                raise RestoreDrillError(f"{process} exited while waiting for {what}:\n{self._log_tail(process)}",
                                        remedy=f"see {self.layout.log(process)}")
            try:
                status, body = self._get(url)
            except (OSError, ssl.SSLError) as error:
                return None, f"{url}: {error}"
            return (True if status == 200 and expect in body else None), f"{url}: HTTP {status} {body[:80]!r}"

        wait_until(what, probe, timeout=timeout("cluster_up"), interval=0.25,
                   remedy=f"see {self.layout.log(process)}")

    def _log_tail(self, name: str, lines: int = 25) -> str:
        try:
            return "\n".join(self.layout.log(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait_containerd(self) -> None:
        def probe() -> tuple[bool | None, str]:
            if self.processes.live_pid("containerd") is None:
                raise RestoreDrillError(f"containerd exited:\n{self._log_tail('containerd')}",
                                        remedy=f"see {self.layout.log('containerd')}")
            result = self.host.run(["ctr", "--address", str(self.layout.containerd_socket), "version"],
                                   check=False, timeout=10)
            return (True if result.returncode == 0 else None), (result.stderr or result.stdout).strip()[:120]

        wait_until("containerd answering on its socket", probe, timeout=timeout("command"),
                   interval=0.25, remedy=f"see {self.layout.log('containerd')}")

    def _node_ready(self) -> tuple[bool, str]:
        try:
            status, body = self._get(f"{self.config.server}/api/v1/nodes/{self.config.name}")
        except (OSError, ssl.SSLError) as error:
            return False, str(error)
        if status != 200:
            return False, f"HTTP {status}"
        conditions = {c["type"]: c for c in json.loads(body).get("status", {}).get("conditions", [])}
        ready = conditions.get("Ready", {})
        return ready.get("status") == "True", f"Ready={ready.get('status')} {ready.get('message', '')[:100]}"

    def _wait_node_ready(self) -> None:
        def probe() -> tuple[bool | None, str]:
            for name in ("kubelet", "containerd", "kube-apiserver"):
                if self.processes.live_pid(name) is None:
                    raise RestoreDrillError(f"{name} exited before the node was Ready:\n{self._log_tail(name)}",
                                            remedy=f"see {self.layout.log(name)}")
            ready, seen = self._node_ready()
            return (True if ready else None), seen

        wait_until(f"node {self.config.name} Ready", probe, timeout=timeout("node_ready"),
                   interval=0.5, remedy=f"see {self.layout.log('kubelet')}")

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        command = [str(self.toolchain.binary("kubectl")), "--kubeconfig", str(self.layout.kubeconfig), *args]
        return self.host.run(command, input=input, timeout=timeout).stdout

    def _install_addons(self) -> None:
        images = image_set("local")
        documents = coredns_manifests(image=images["coredns"], dns_ip=self.config.dns_ip)
        documents += local_path_manifests(image=images["local-path-provisioner"], helper_image=images["busybox"],
                                          storage_dir=str(self.config.storage_dir))
        manifest = render(documents)
        (self.layout.etc / "addons.yaml").write_text(manifest)
        self.kubectl("apply", "-f", "-", input=manifest, timeout=120)

    def _wait_addons(self) -> None:
        for namespace, deployment in (("kube-system", "coredns"), ("local-path-storage", "local-path-provisioner")):
            def probe(namespace: str = namespace, deployment: str = deployment) -> tuple[bool | None, str]:
                status, body = self._get(
                    f"{self.config.server}/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}")
                if status != 200:
                    return None, f"HTTP {status}"
                observed = json.loads(body).get("status", {})
                ready = observed.get("readyReplicas", 0)
                return (True if ready >= 1 else None), f"readyReplicas={ready}"

            wait_until(f"deployment {namespace}/{deployment} ready", probe, timeout=timeout("pod_ready"),
                       interval=0.5, remedy=f"kubectl --kubeconfig {self.layout.kubeconfig} -n {namespace} "
                       "describe pods")

    # ---- down, step by step ----------------------------------------------------------------
    def _pod_netns_paths(self) -> list[str]:
        """Network namespaces of our pod sandboxes, asked of containerd while it still runs."""
        if self.processes.live_pid("containerd") is None:
            return []
        address = str(self.layout.containerd_socket)
        listing = self.host.run(["ctr", "--address", address, "-n", "k8s.io", "containers", "ls", "-q"],
                                check=False, timeout=30)
        paths = []
        for container in listing.stdout.split():
            info = self.host.run(["ctr", "--address", address, "-n", "k8s.io", "containers", "info", container],
                                 check=False, timeout=30)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                spec = json.loads(info.stdout)["Spec"]
                for namespace in spec["linux"]["namespaces"]:
                    if namespace.get("type") == "network" and namespace.get("path"):
                        paths.append(namespace["path"])
        return paths
