"""Pure logic of the toolchain, images and local provider: no cluster, no root needed."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from restoredrill.cluster.local import (
    Layout,
    LocalClusterConfig,
    cni_config,
    containerd_config,
    kube_proxy_config,
    kubelet_config,
)
from restoredrill.cluster.local.addons import COREFILE, local_path_manifests
from restoredrill.cluster.local.pki import CertRequest, Pki, extension_config, kubeconfig, san_entry
from restoredrill.errors import ConfigError, MissingToolError
from restoredrill.images.oci import (
    NAME_ANNOTATION,
    DirEntry,
    FileEntry,
    ImageSpec,
    SymlinkEntry,
    write_oci_archive,
)
from restoredrill.toolchain.apt import ensure_packages, missing_packages
from restoredrill.toolchain.gobuild import GoToolchain
from restoredrill.toolchain.recipes import DebianPackage, GoBuild, load_debian_packages, load_recipes

# ---- pins and recipes -------------------------------------------------------------------------

def test_pins_name_every_binary_the_local_provider_runs() -> None:
    recipes = load_recipes()
    binaries = {binary for recipe in recipes.values() for binary in recipe.binaries}
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
            "kubectl", "coredns", "local-path-provisioner", "pause"} <= binaries
    kubernetes = recipes["kubernetes"]
    assert kubernetes.version.startswith(("v1.33.", "v1.34.")), "kubelet on cgroup v1 needs <= 1.34"
    assert kubernetes.local_replace_version == "v0." + kubernetes.version[3:]
    assert recipes["etcd"].version.startswith(("v3.5.", "v3.6."))


def test_debian_pins_cover_runtime_packages() -> None:
    names = {package.name for package in load_debian_packages()}
    assert {"containerd", "runc", "containernetworking-plugins", "iptables"} <= names
    assert DebianPackage("containerd", "1.6.*").install_spec() == "containerd=1.6.*"
    assert DebianPackage("iptables", "*").install_spec() == "iptables"


def test_kubernetes_ldflags_carry_the_version() -> None:
    flags = load_recipes()["kubernetes"].expanded_ldflags()
    version = load_recipes()["kubernetes"].version
    assert f"-X k8s.io/component-base/version.gitVersion={version}" in flags
    assert f"-X k8s.io/component-base/version.gitMinor={version.split('.')[1]}" in flags


def test_coredns_main_imports_only_the_listed_plugins() -> None:
    main = load_recipes()["coredns"].generated_main() or ""
    assert '"github.com/coredns/coredns/coremain"' in main
    assert '_ "github.com/coredns/coredns/plugin/kubernetes"' in main
    assert "core/plugin" not in main, "importing core/plugin would build every plugin"
    assert "coremain.Run()" in main


def _recipe(**overrides: object) -> GoBuild:
    fields: dict[str, object] = {"name": "demo", "version": "v1.2.3", "module": "example.com/demo",
                                 "binaries": {"demo": "example.com/demo/cmd/demo"}}
    fields.update(overrides)
    return GoBuild(**fields)  # type: ignore[arg-type]


def test_wrapper_go_mod_repeats_staging_replaces_as_published_versions(tmp_path: Path) -> None:
    toolchain = GoToolchain(cache=tmp_path, recipes={})
    upstream = [
        {"Old": {"Path": "k8s.io/api"}, "New": {"Path": "./staging/src/k8s.io/api"}},
        {"Old": {"Path": "github.com/kopia/kopia"},
         "New": {"Path": "github.com/project-velero/kopia", "Version": "v0.0.0-1"}},
    ]
    with_version = toolchain.wrapper_go_mod(_recipe(local_replace_version="v0.2.3"),
                                            upstream_replaces=upstream, go_directive="1.24.0")
    assert "\tk8s.io/api => k8s.io/api v0.2.3" in with_version
    assert "\tgithub.com/kopia/kopia => github.com/project-velero/kopia v0.0.0-1" in with_version
    assert "\texample.com/demo v1.2.3" in with_version
    without = toolchain.wrapper_go_mod(_recipe(), upstream_replaces=upstream, go_directive="1.24.0")
    assert "k8s.io/api" not in without, "a path replace into upstream's tree cannot be repeated"


def test_stamp_key_changes_with_flags_and_go_version() -> None:
    base = _recipe()
    assert base.stamp_key(go_version="go1.24") == _recipe().stamp_key(go_version="go1.24")
    assert base.stamp_key(go_version="go1.24") != base.stamp_key(go_version="go1.25")
    assert base.stamp_key(go_version="go1.24") != _recipe(ldflags=("-X a.b=c",)).stamp_key(go_version="go1.24")


def test_stamp_marks_built_only_with_matching_key_and_binaries(tmp_path: Path) -> None:
    recipe = _recipe()
    toolchain = GoToolchain(cache=tmp_path, recipes={"demo": recipe})
    assert not toolchain.is_built(recipe, go_version="go1")
    toolchain.bin_dir(recipe).mkdir(parents=True)
    (toolchain.bin_dir(recipe) / "demo").write_text("binary")
    toolchain.stamp_path(recipe).parent.mkdir(parents=True)
    toolchain.stamp_path(recipe).write_text(json.dumps({"key": recipe.stamp_key(go_version="go1")}))
    assert toolchain.is_built(recipe, go_version="go1")
    assert not toolchain.is_built(recipe, go_version="go2")
    (toolchain.bin_dir(recipe) / "demo").unlink()
    assert not toolchain.is_built(recipe, go_version="go1")


def test_missing_binary_says_how_to_build_it(tmp_path: Path) -> None:
    toolchain = GoToolchain(cache=tmp_path, recipes={"demo": _recipe()})
    with pytest.raises(MissingToolError, match="restoredrill toolchain --only demo"):
        toolchain.binary("demo")
    with pytest.raises(ConfigError, match="unknown toolchain component"):
        toolchain.ensure(["nope"])


def test_missing_go_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError, match="'go'"):
        GoToolchain(cache=tmp_path, recipes={}).go()


@pytest.mark.skipif(shutil.which("go") is None, reason="needs Go")
def test_go_build_is_idempotent_and_produces_a_static_binary(tmp_path: Path) -> None:
    recipe = load_recipes()["pause"]
    toolchain = GoToolchain(cache=tmp_path, recipes={"pause": recipe}, out=lambda line: None)
    first = toolchain.ensure(["pause"])
    second = toolchain.ensure(["pause"])
    assert first[0].built and not second[0].built
    binary = toolchain.binary("pause")
    assert binary.read_bytes()[:4] == b"\x7fELF"
    file_info = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30)
    assert "not a dynamic executable" in file_info.stdout + file_info.stderr


def test_missing_apt_get_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian system")
    dpkg_query = tmp_path / "dpkg-query"
    dpkg_query.symlink_to(str(shutil.which("dpkg-query")))
    monkeypatch.setenv("PATH", str(tmp_path))  # dpkg-query still answers; apt-get is gone
    with pytest.raises(MissingToolError, match="'apt-get'") as raised:
        ensure_packages([DebianPackage("restoredrill-no-such-package", "*")], out=lambda line: None)
    assert "restoredrill-no-such-package" in str(raised.value)


def test_apt_check_sees_installed_and_mismatched_versions() -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian system")
    assert missing_packages([DebianPackage("dpkg", "*")]) == []
    assert missing_packages([DebianPackage("dpkg", "0.0.*")]) == [DebianPackage("dpkg", "0.0.*")]
    assert missing_packages([DebianPackage("restoredrill-no-such-package", "*")])


# ---- OCI archives -----------------------------------------------------------------------------

def _archive(tmp_path: Path, name: str = "img.tar") -> Path:
    spec = ImageSpec(
        reference="registry.example/demo/app:v1",
        entries=(FileEntry("/usr/bin/app", data=b"#!/bin/sh\necho hi\n"), SymlinkEntry("/bin/app", "/usr/bin/app"),
                 DirEntry("/tmp", mode=0o1777)),
        entrypoint=("/usr/bin/app",),
    )
    archive = tmp_path / name
    write_oci_archive(spec, archive)
    return archive


def test_oci_archive_is_a_valid_layout_named_for_containerd(tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert {"oci-layout", "index.json"} <= names

        def blob(digest: str) -> bytes:
            member = tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            assert member is not None
            data = member.read()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
            return data

        index_member = tar.extractfile("index.json")
        assert index_member is not None
        index = json.loads(index_member.read())
        [descriptor] = index["manifests"]
        assert descriptor["annotations"][NAME_ANNOTATION] == "registry.example/demo/app:v1"
        manifest = json.loads(blob(descriptor["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        layer = blob(manifest["layers"][0]["digest"])
        assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
        assert config["config"]["Entrypoint"] == ["/usr/bin/app"]
        with tarfile.open(fileobj=io.BytesIO(layer)) as layer_tar:
            members = {m.name: m for m in layer_tar.getmembers()}
    assert members["usr"].isdir() and members["usr/bin"].isdir()
    assert members["usr/bin/app"].mode == 0o755
    assert members["bin/app"].issym() and members["bin/app"].linkname == "/usr/bin/app"


def test_oci_archive_is_reproducible(tmp_path: Path) -> None:
    assert _archive(tmp_path, "a.tar").read_bytes() == _archive(tmp_path, "b.tar").read_bytes()


# ---- local provider configuration ------------------------------------------------------------

def test_cluster_addresses_come_from_the_cidrs() -> None:
    config = LocalClusterConfig(cluster_dir=Path("/x"))
    assert (config.node_ip, config.api_service_ip, config.dns_ip) == ("10.244.0.1", "10.96.0.1", "10.96.0.10")
    assert config.server == "https://10.244.0.1:6443"


def test_kubelet_config_matches_containerd_16_on_cgroup_v1() -> None:
    config = LocalClusterConfig(cluster_dir=Path("/c"))
    kubelet = kubelet_config(config=config, layout=Layout(config))
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["failSwapOn"] is False and kubelet["failCgroupV1"] is False
    assert kubelet["containerRuntimeEndpoint"] == "unix:///c/run/containerd.sock"
    assert kubelet["clusterDNS"] == ["10.96.0.10"]
    assert kubelet["imageGCHighThresholdPercent"] == 100, "imported images cannot be pulled back"
    assert kubelet["authorization"]["mode"] == "Webhook"
    assert kube_proxy_config(config=config, layout=Layout(config))["mode"] == "iptables"


def test_containerd_config_keeps_all_state_under_the_cluster_dir() -> None:
    config = LocalClusterConfig(cluster_dir=Path("/c"))
    parsed = tomllib.loads(containerd_config(layout=Layout(config), pause_image="registry.k8s.io/pause:3.10"))
    assert parsed["root"].startswith("/c/") and parsed["state"].startswith("/c/")
    assert parsed["grpc"]["address"] == "/c/run/containerd.sock"
    cri = parsed["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.10"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"
    assert cri["netns_mounts_under_state_dir"] is True
    # containerd 2.x's (and kind's) default: a non-root app may bind :80 in its own network namespace.
    assert cri["enable_unprivileged_ports"] is True and cri["enable_unprivileged_icmp"] is True


def test_cni_bridge_uses_the_node_subnet_and_our_ipam_dir() -> None:
    config = LocalClusterConfig(cluster_dir=Path("/c"))
    [bridge] = cni_config(config=config, layout=Layout(config))["plugins"]
    assert bridge["bridge"] == "rdbr0" and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.0.0/24", "gateway": "10.244.0.1"}]]
    assert bridge["ipam"]["dataDir"] == "/c/cni-ipam"


def test_storage_class_is_default_and_asks_for_local_pvs() -> None:
    documents = local_path_manifests(image="i", helper_image="busybox:1", storage_dir="/s")
    [storage_class] = [d for d in documents if d["kind"] == "StorageClass"]
    annotations = storage_class["metadata"]["annotations"]
    assert annotations["storageclass.kubernetes.io/is-default-class"] == "true"
    assert annotations["defaultVolumeType"] == "local", "Velero fs-backup skips hostPath PVs"
    [config_map] = [d for d in documents if d["kind"] == "ConfigMap"]
    assert json.loads(config_map["data"]["config.json"])["nodePathMap"][0]["paths"] == ["/s"]
    assert "busybox:1" in config_map["data"]["helperPod.yaml"]


def test_corefile_sends_nothing_off_the_host() -> None:
    assert "forward" not in COREFILE
    assert "kubernetes cluster.local" in COREFILE


def test_certificate_extensions_and_kubeconfig() -> None:
    assert san_entry("10.0.0.1") == "IP:10.0.0.1" and san_entry("kubernetes") == "DNS:kubernetes"
    ext = extension_config(CertRequest("x", "x", server=True, client=True, sans=("a", "127.0.0.1")))
    assert "extendedKeyUsage=serverAuth,clientAuth" in ext
    assert "subjectAltName=DNS:a,IP:127.0.0.1" in ext
    document = yaml.safe_load(kubeconfig(server="https://h:1", ca=Path("/ca"), cert=Path("/c"), key=Path("/k"),
                                         user="u", cluster="demo"))
    assert document["current-context"] == "demo"
    assert document["clusters"][0]["cluster"]["server"] == "https://h:1"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_pki_issues_certificates_the_ca_verifies(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.ensure([CertRequest("apiserver", "kube-apiserver", server=True, sans=("kubernetes", "10.96.0.1")),
                CertRequest("admin", "kubernetes-admin", "system:masters", client=True)])
    for stem in ("apiserver", "admin"):
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(pki.ca), str(pki.path(stem, "crt"))],
                                capture_output=True, text=True, timeout=30)
        assert verify.returncode == 0, verify.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(pki.path("apiserver", "crt"))],
                          capture_output=True, text=True, timeout=30).stdout
    assert "IP Address:10.96.0.1" in text and "DNS:kubernetes" in text
    subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", str(pki.path("admin", "crt"))],
                             capture_output=True, text=True, timeout=30).stdout
    assert "O = system:masters" in subject
    assert pki.path("sa", "pub").read_text().startswith("-----BEGIN PUBLIC KEY")


def test_unknown_build_keys_are_rejected(tmp_path: Path) -> None:
    from restoredrill.pins import load_pins

    pins = tmp_path / "pins.toml"
    pins.write_text('[modules.demo]\nmodule = "example.com/demo"\nversion = "v1.0.0"\n'
                    '[modules.demo.build]\nbinaries = { demo = "example.com/demo" }\nbinary = "typo"\n')
    load_pins.cache_clear()
    with pytest.raises(ConfigError, match="unknown key"):
        load_recipes(pins)
    load_pins.cache_clear()


def test_wrapper_go_sum_merges_upstream_checksums(tmp_path: Path) -> None:
    ours, upstream = tmp_path / "go.sum", tmp_path / "upstream.sum"
    ours.write_text("a v1 h1:x\n")
    upstream.write_text("b v2 h1:y\na v1 h1:x\n")
    GoToolchain._merge_go_sum(ours, upstream)
    assert ours.read_text() == "a v1 h1:x\nb v2 h1:y\n"
