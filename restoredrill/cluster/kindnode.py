"""A kind node image assembled here, for machines that cannot pull `kindest/node` (no registry).

kind's own `kind build node-image` starts from `kindest/base`, which it pulls, and pulls the
control-plane images; neither works offline. This builds the same image from local parts, at the
paths and names kind v0.30.0 looks for (its `images/base/Dockerfile` and `pkg/build/nodeimage`,
read from the Go module cache):

- a Debian bookworm root filesystem (debootstrap) with systemd and the packages kind's base image
  installs, plus Debian's containerd, runc and CNI plugins (kind builds containerd 2.1 itself;
  Debian's 1.6 reads the same version-2 config file);
- kind's base files (entrypoint, containerd config, kubelet and containerd units, helper scripts),
  copied from the kind module, and `cri-base.json` made the way its Dockerfile makes it;
- kubeadm, kubelet and kubectl from the pinned Kubernetes build at /usr/bin, and /kind/version;
- the images kubeadm and kind need, imported into the node's containerd: the control plane and
  kube-proxy from the same build, etcd, CoreDNS, pause, local-path-provisioner, all built here.

Two differences from upstream's image, which `OFFLINE_NODE_NOTES` states wherever the image is
used: the cluster needs `networking.disableDefaultCNI` (kindnetd is not built; the image carries a
single-node bridge network in /etc/cni/net.d instead), and kubeadm is told the etcd and CoreDNS tags
built here (`kubeadm_patches`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock

from restoredrill.errors import CommandError, MissingToolError
from restoredrill.images import LocalImageBuilder, image_set, static_binary_image
from restoredrill.images.oci import FileEntry, ImageSpec, TreeEntry, write_oci_archive
from restoredrill.pins import cache_dir, load_pins
from restoredrill.platform.images import debootstrap_rootfs, rootfs_dir, trim_rootfs
from restoredrill.toolchain.gobuild import GoToolchain

NODE_REPOSITORY = "restoredrill.local/kind-node"
# What kind's base image installs (images/base/Dockerfile), less nfs-common and open-iscsi (no
# drill uses them) and curl; plus the container runtime and CNI plugins kind builds itself.
NODE_PACKAGES = (
    "systemd", "conntrack", "iptables", "nftables", "iproute2", "ethtool", "util-linux", "mount", "kmod",
    "libseccomp2", "pigz", "fuse-overlayfs", "bash", "ca-certificates", "jq", "procps",
    "containerd", "runc", "containernetworking-plugins",
)
# The toolchain builds the node needs (binaries and the images made from them).
NODE_BUILDS = ("kubernetes", "etcd", "coredns", "local-path-provisioner", "pause", "cri-tools")
KUBE_PROXY_PACKAGES = ("iptables", "conntrack", "nftables", "ipset")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap", "ptp")
# The node's pod network when the default CNI (kindnetd) is off: one bridge on one node, masquerading
# traffic that leaves it. kind's default pod subnet; the node's podCIDR is a /24 of it.
POD_SUBNET = "10.244.0.0/16"
CNI_CONFIG = {
    "cniVersion": "0.4.0",
    "name": "restoredrill-kind",
    "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}
# Lowering a process's oom_score_adj needs CAP_SYS_RESOURCE. Where the node container lacks it (a
# host whose root has none, as on this project's CI machines), containerd must clamp pods' scores to
# its own, as kind's entrypoint already makes it do in a user namespace; elsewhere nothing changes.
OOM_SCORE_SCRIPT = """#!/bin/sh
# restoredrill: without CAP_SYS_RESOURCE in the bounding set, clamp pods' oom_score_adj to containerd's.
bnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
if [ $(( 0x$bnd >> 24 & 1 )) -eq 0 ]; then
  sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml
fi
"""
CONTAINERD_DROP_IN = "[Service]\nExecStartPre=/kind/bin/restoredrill-oom-score.sh\n"
# containerd 2.x (kind's) lets containers bind ports below 1024 and ping without capabilities in
# their own network namespace by default; 1.6, which this image carries, needs it said.
UNPRIVILEGED_SETTINGS = "  enable_unprivileged_ports = true\n  enable_unprivileged_icmp = true\n"
OFFLINE_NODE_NOTES = (
    "kind node image assembled locally from the pinned builds (Debian containerd 1.6 instead of kind's 2.1)",
    "kind's default CNI (kindnetd) replaced by a single-node bridge network in the node image",
    "containerd 1.6 told to allow unprivileged ports and ping (enable_unprivileged_ports/icmp), as kind's "
    "containerd 2.1 does by default",
)
ETCD_IMAGE_TAG_SUFFIX = "-0"


def kind_module_dir() -> Path:
    """kind's module source (its base-image files), from Go's module cache (`go mod download`)."""
    from restoredrill.process import download_go_module

    version = str(load_pins()["modules"]["kind"]["version"])
    folder = Path(download_go_module("sigs.k8s.io/kind", version)["Dir"])
    if not (folder / "images/base/files").is_dir():
        raise MissingToolError(str(folder / "images/base/files"),
                               remedy=f"`go clean -modcache` and fetch sigs.k8s.io/kind@{version} again")
    return folder


def _versions() -> dict[str, str]:
    modules = load_pins()["modules"]
    return {name: str(modules[name]["version"]) for name in ("kubernetes", "etcd", "coredns", "kind")}


def control_plane_references() -> dict[str, str]:
    """Logical name -> the reference kubeadm (with `kubeadm_patches`) and kind look for."""
    versions = _versions()
    kube = versions["kubernetes"]
    references = {name: f"registry.k8s.io/{name}:{kube}"
                  for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")}
    references["etcd"] = f"registry.k8s.io/etcd:{versions['etcd'].lstrip('v')}{ETCD_IMAGE_TAG_SUFFIX}"
    return references


def kubeadm_patches() -> list[str]:
    """kind `kubeadmConfigPatches` pointing kubeadm at the etcd and CoreDNS tags built here."""
    versions = _versions()
    return ["kind: ClusterConfiguration\n"
            f"etcd:\n  local:\n    imageTag: \"{versions['etcd'].lstrip('v')}{ETCD_IMAGE_TAG_SUFFIX}\"\n"
            f"dns:\n  imageTag: \"{versions['coredns']}\"\n"]


class NodeImageBuilder:
    """Builds `restoredrill.local/kind-node:<kubernetes>-<digest>` into the local Docker engine."""

    def __init__(self, *, toolchain: GoToolchain | None = None, cache: Path | None = None,
                 docker: str | None = None, out: Callable[[str], None] = print) -> None:
        self.toolchain = toolchain or GoToolchain()
        self.cache = cache or cache_dir()
        self.out = out
        found = docker or shutil.which("docker")
        if found is None:
            raise MissingToolError("docker", remedy="install Docker (the kind provider runs its nodes in Docker)")
        self.docker = found

    # ---- images the node carries ----
    def image_archives(self) -> list[Path]:
        """OCI archives of every image the node must hold before kubeadm runs."""
        builder = LocalImageBuilder(toolchain=self.toolchain, cache=self.cache)
        archives = list(builder.build(["pause", "coredns", "local-path-provisioner", "busybox"]).values())
        proxy_root = debootstrap_rootfs(rootfs_dir("kube-proxy", cache=self.cache), packages=KUBE_PROXY_PACKAGES,
                                        out=self.out)
        trim_rootfs(proxy_root)
        for name, reference in control_plane_references().items():
            binary = self.toolchain.binary(name)
            if name == "kube-proxy":
                spec = ImageSpec(reference=reference, entries=(TreeEntry(proxy_root),
                                                               FileEntry("/usr/local/bin/kube-proxy", source=binary)),
                                 entrypoint=("/usr/local/bin/kube-proxy",))
            else:
                spec = static_binary_image(reference, binary, path=f"/usr/local/bin/{name}")
            dest = self.cache / "images" / f"kind-{name}.tar"
            key = dest.with_suffix(".key")
            wanted = json.dumps([reference, str(binary), binary.stat().st_mtime, binary.stat().st_size,
                                 KUBE_PROXY_PACKAGES if name == "kube-proxy" else ()])
            if not dest.is_file() or not key.is_file() or key.read_text() != wanted:
                self.out(f"[kind-node] writing image {reference}")
                write_oci_archive(spec, dest)
                key.write_text(wanted)
            archives.append(dest)
        return archives

    # ---- the root filesystem ----
    def rootfs(self) -> Path:
        root = debootstrap_rootfs(rootfs_dir("kind-node", cache=self.cache), packages=NODE_PACKAGES, out=self.out)
        files = kind_module_dir() / "images/base/files"
        for source in sorted(files.rglob("*")):
            relative = source.relative_to(files)
            if source.is_dir() or relative.parts[0] == "LICENSES":
                continue
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            executable = relative.parts[:2] in (("usr", "local"), ("kind", "bin"))
            target.chmod(0o755 if executable else 0o644)
        (root / "kind/bin").chmod(0o755)
        for folder in ("etc/kubernetes/manifests", "opt/cni/bin", "etc/cni/net.d", "kind/manifests"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        for plugin in CNI_PLUGINS:
            link = root / "opt/cni/bin" / plugin
            if not link.is_symlink():
                link.symlink_to(f"/usr/lib/cni/{plugin}")
        for name in ("containerd", "containerd-shim-runc-v2", "ctr"):
            link = root / "usr/local/bin" / name
            if not link.is_symlink():
                link.symlink_to(f"/usr/bin/{name}")
        config = root / "etc/containerd/config.toml"
        text = config.read_text()
        if "enable_unprivileged_ports" not in text:
            anchor = "  restrict_oom_score_adj = false\n"
            if anchor not in text:
                raise RuntimeError(f"{config}: kind's containerd config no longer has {anchor.strip()!r}")
            config.write_text(text.replace(anchor, anchor + UNPRIVILEGED_SETTINGS))
        drop_in = root / "etc/systemd/system/containerd.service.d/10-restoredrill-oom-score.conf"
        drop_in.parent.mkdir(parents=True, exist_ok=True)
        drop_in.write_text(CONTAINERD_DROP_IN)
        script = root / "kind/bin/restoredrill-oom-score.sh"
        script.write_text(OOM_SCORE_SCRIPT)
        script.chmod(0o755)
        (root / "etc/cni/net.d/10-restoredrill-bridge.conflist").write_text(json.dumps(CNI_CONFIG, indent=2) + "\n")
        self._base_runtime_spec(root)
        for name in ("kubeadm", "kubelet", "kubectl"):
            shutil.copyfile(self.toolchain.binary(name), root / "usr/bin" / name)
            (root / "usr/bin" / name).chmod(0o755)
        # kind's `export logs` runs crictl in the node.
        shutil.copyfile(self.toolchain.binary("crictl"), root / "usr/local/bin/crictl")
        (root / "usr/local/bin/crictl").chmod(0o755)
        (root / "kind/version").write_text(_versions()["kubernetes"])
        (root / "kind/manifests/default-storage.yaml").write_text(self._storage_manifest())
        self._systemd_units(root)
        trim_rootfs(root)
        return root

    def _base_runtime_spec(self, root: Path) -> None:
        # images/base/Dockerfile: `ctr oci spec`, plus the product-files hook, less rlimits.
        done = subprocess.run(["chroot", str(root), "/usr/bin/ctr", "oci", "spec"], check=True,
                              capture_output=True, text=True, timeout=60)
        spec = json.loads(done.stdout)
        hooks = spec.setdefault("hooks", {}).setdefault("createContainer", [])
        hooks.append({"path": "/kind/bin/mount-product-files.sh"})
        spec.get("process", {}).pop("rlimits", None)
        (root / "etc/containerd/cri-base.json").write_text(json.dumps(spec, indent=2) + "\n")

    def _storage_manifest(self) -> str:
        from restoredrill.cluster.local.addons import local_path_manifests, render

        images = image_set("kind")
        return render(local_path_manifests(image=images["local-path-provisioner"], helper_image=images["busybox"],
                                           storage_dir="/var/local-path-provisioner"))

    def _systemd_units(self, root: Path) -> None:
        # images/base/Dockerfile: drop the units a container must not run, enable kind's.
        for pattern in ("lib/systemd/system/multi-user.target.wants/*", "etc/systemd/system/*.wants/*",
                        "lib/systemd/system/local-fs.target.wants/*", "lib/systemd/system/sockets.target.wants/*udev*",
                        "lib/systemd/system/sockets.target.wants/*initctl*", "lib/systemd/system/basic.target.wants/*",
                        "lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service"):
            for path in root.glob(pattern):
                path.unlink()
        journald = root / "etc/systemd/journald.conf"
        if "ReadKMsg=no" not in journald.read_text():
            journald.write_text(journald.read_text() + "ReadKMsg=no\n")
        for unit in ("kubelet.service", "containerd.service", "undo-mount-hacks.service"):
            subprocess.run(["chroot", str(root), "systemctl", "enable", unit], check=True, capture_output=True,
                           timeout=60)
        subprocess.run(["chroot", str(root), "systemctl", "mask", "systemd-binfmt.service"], check=True,
                       capture_output=True, timeout=60)
        init = root / "sbin/init"
        if not init.exists() and not init.is_symlink():
            init.symlink_to("/lib/systemd/systemd")

    # ---- the image ----
    def reference(self, root: Path, archives: list[Path]) -> str:
        digest = hashlib.sha256()
        for archive in archives:
            digest.update(archive.name.encode())
            digest.update(str(archive.stat().st_size).encode())
            digest.update(str(int(archive.stat().st_mtime)).encode())
        for name in ("kubeadm", "kubelet", "kubectl", "crictl"):
            digest.update(str(self.toolchain.binary(name).stat().st_mtime).encode())
        # What shapes the root filesystem: this module's code (the files it writes, the units it
        # enables), kind's base files, the storage manifest and the package lists.
        digest.update(Path(__file__).read_bytes())
        files = kind_module_dir() / "images/base/files"
        for path in sorted(files.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(files)).encode() + path.read_bytes())
        digest.update(self._storage_manifest().encode())
        digest.update(" ".join((*NODE_PACKAGES, *KUBE_PROXY_PACKAGES)).encode())
        digest.update((root / ".restoredrill-rootfs").read_bytes())
        return f"{NODE_REPOSITORY}:{_versions()['kubernetes']}-{digest.hexdigest()[:12]}"

    def exists(self, reference: str) -> bool:
        return subprocess.run([self.docker, "image", "inspect", reference], capture_output=True,
                              timeout=60).returncode == 0

    def build(self) -> str:
        """The node image's reference, built unless Docker already has it (one builder at a time: xdist
        workers each make a cluster from it)."""
        self.cache.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.cache / "kind-node-image.lock")):
            return self._build()

    def _build(self) -> str:
        wanted = [name for name in NODE_BUILDS if name in self.toolchain.recipes]
        self.toolchain.ensure(wanted)
        archives = self.image_archives()
        root = self.rootfs()
        reference = self.reference(root, archives)
        if self.exists(reference):
            self.out(f"[kind-node] {reference} is up to date")
            return reference
        started = time.monotonic()
        base = f"{NODE_REPOSITORY}:base-{reference.rsplit('-', 1)[1]}"
        self.out(f"[kind-node] importing the root filesystem into Docker as {base}")
        tar = subprocess.Popen(["tar", "-C", str(root), "--numeric-owner", "--exclude=./.restoredrill-rootfs",
                                "-c", "."], stdout=subprocess.PIPE)
        self._docker(["import", "--change", 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
                      "--change", "ENV container=docker", "-", base],
                     stdin=tar.stdout, timeout=900)
        if tar.wait() != 0:
            subprocess.run([self.docker, "rmi", base], capture_output=True, timeout=120)
            raise CommandError(["tar", "-C", str(root), "-c", "."], returncode=tar.returncode,
                               output="the root filesystem could not be read whole; nothing was kept",
                               remedy=f"check {root} (or remove it to rebuild it)")
        container = f"restoredrill-kind-build-{os.getpid()}"
        self._docker(["run", "-d", "--privileged", "--entrypoint=sleep", f"--name={container}", base, "infinity"])
        try:
            self._docker(["exec", container, "bash", "-c", "nohup containerd >/tmp/containerd.log 2>&1 &"])
            self._wait_containerd(container)
            for archive in archives:
                self.out(f"[kind-node] importing {archive.name} into the node's containerd")
                with archive.open("rb") as stream:
                    self._docker(["exec", "-i", container, "ctr", "--namespace=k8s.io", "images", "import",
                                  "--all-platforms", "--no-unpack", "--digests", "-"], stdin=stream, timeout=900)
            self._docker(["exec", container, "pkill", "containerd"])
            time.sleep(1)
            self._docker(["commit", "--change", 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
                          container, reference], timeout=900)
        finally:
            subprocess.run([self.docker, "rm", "-f", "-v", container], capture_output=True, timeout=120)
            subprocess.run([self.docker, "rmi", base], capture_output=True, timeout=120)
        self.out(f"[kind-node] built {reference} in {time.monotonic() - started:.0f}s")
        self._remove_older(reference)
        return reference

    def _age_s(self, image: str) -> float:
        done = subprocess.run([self.docker, "image", "inspect", image, "--format", "{{.Created}}"],
                              capture_output=True, text=True, timeout=60)
        try:  # "2026-12-02T03:20:11.123456789Z": seconds are enough
            created = datetime.strptime(done.stdout.strip()[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            return 0.0
        return (datetime.now(UTC) - created).total_seconds()

    def _remove_older(self, keep: str) -> None:
        """Drop earlier builds of our node image (about 1 GB each), an hour old or more (another
        session may be about to start a cluster from a fresh one); one a container runs stays."""
        listed = subprocess.run([self.docker, "images", NODE_REPOSITORY, "--format", "{{.Repository}}:{{.Tag}}"],
                                capture_output=True, text=True, timeout=60)
        for image in listed.stdout.split():
            if image != keep and image.startswith(f"{NODE_REPOSITORY}:") and self._age_s(image) > 3600:
                removed = subprocess.run([self.docker, "rmi", image], capture_output=True, text=True, timeout=120)
                if removed.returncode == 0:
                    self.out(f"[kind-node] removed the earlier build {image}")

    def _wait_containerd(self, container: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = subprocess.run([self.docker, "exec", container, "ctr", "version"], capture_output=True, timeout=30)
            if done.returncode == 0:
                return
            time.sleep(0.5)
        raise CommandError([self.docker, "exec", container, "ctr", "version"], returncode=1,
                           output="containerd did not start in the build container within 60 s",
                           remedy=f"docker exec {container} cat /tmp/containerd.log")

    def _docker(self, args: list[str], *, stdin: object = None, timeout: float = 300) -> str:
        command = [self.docker, *args]
        done = subprocess.run(command, stdin=stdin, capture_output=True, text=False, timeout=timeout)  # type: ignore[call-overload]
        if done.returncode != 0:
            raise CommandError(command, returncode=done.returncode,
                               output=(done.stdout + done.stderr).decode(errors="replace"))
        return str(done.stdout.decode(errors="replace"))

