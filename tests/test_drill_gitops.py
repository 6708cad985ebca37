"""The repo is published to the drill cluster as written, but for NFS volumes, which become host folders."""

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from restoredrill.drill.gitops import STANDIN_LABEL, nfs_host_path, publishable_tree, rewrite_nfs_volumes
from restoredrill.errors import ConfigError
from restoredrill.yamlio import iter_yaml_files
from tests.conftest import RepoCopy

LIBRARY_PV = "kubernetes/apps/immich/immich/app/library-pv.yaml"
SEAWEEDFS_PV = "kubernetes/apps/seaweedfs/seaweedfs/app/storage.yaml"


def nfs_pv(name: str = "photos", *, server: str = "10.127.0.5", path: str = "/data/photos") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "immich"}},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                     "persistentVolumeReclaimPolicy": "Retain", "nfs": {"server": server, "path": path}}}


def test_an_nfs_volume_becomes_a_host_folder(tmp_path: Path) -> None:
    pv = nfs_pv()
    (note,) = rewrite_nfs_volumes([pv], root=tmp_path)
    host = tmp_path / "10.127.0.5" / "data" / "photos"
    assert pv["spec"]["hostPath"] == {"path": str(host), "type": "DirectoryOrCreate"}
    assert "nfs" not in pv["spec"]
    assert pv["spec"]["capacity"] == {"storage": "1Gi"} and pv["spec"]["storageClassName"] == ""
    assert pv["metadata"]["labels"] == {"app.kubernetes.io/name": "immich", STANDIN_LABEL: "nfs"}
    assert "PersistentVolume photos" in note
    assert "10.127.0.5:/data/photos" in note
    assert str(host) in note


def test_an_nfs_volumes_mount_options_go_with_its_nfs_source(tmp_path: Path) -> None:
    # cypr0/k8s-cluster's paperless-consume-pv: kubelet refused the hostPath stand-in ("mount options
    # are not supported for this volume type") and paperless never started.
    pv = nfs_pv()
    pv["spec"]["mountOptions"] = ["hard", "nfsvers=4.2"]
    pv["metadata"]["annotations"] = {"volume.beta.kubernetes.io/mount-options": "noatime"}
    (note,) = rewrite_nfs_volumes([pv], root=tmp_path)
    assert "mountOptions" not in pv["spec"] and pv["metadata"]["annotations"] == {}
    assert note.endswith("without its NFS mount options (hard, nfsvers=4.2, noatime)")


def test_a_volume_without_labels_gets_the_standin_label(tmp_path: Path) -> None:
    pv = nfs_pv()
    del pv["metadata"]["labels"]
    rewrite_nfs_volumes([pv], root=tmp_path)
    assert pv["metadata"]["labels"] == {STANDIN_LABEL: "nfs"}


def test_other_documents_are_left_alone(tmp_path: Path) -> None:
    documents: list[Any] = [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "local"},
         "spec": {"hostPath": {"path": "/srv/data"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
         "spec": {"nfs": {"server": "s", "path": "/p"}}},  # not a PV: not touched, whatever it holds
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nfs"}, "data": {"nfs:": "x"}},
        None,
        "a string",
    ]
    before = copy.deepcopy(documents)
    assert rewrite_nfs_volumes(documents, root=tmp_path) == []
    assert documents == before


def test_every_nfs_volume_of_a_file_is_rewritten(tmp_path: Path) -> None:
    documents: list[Any] = [nfs_pv("a", server="nas", path="/export/a"), {"kind": "Service"},
                            nfs_pv("b", server="nas2", path="/b/")]
    notes = rewrite_nfs_volumes(documents, root=tmp_path)
    assert len(notes) == 2
    assert documents[0]["spec"]["hostPath"]["path"] == str(tmp_path / "nas" / "export" / "a")
    assert documents[2]["spec"]["hostPath"]["path"] == str(tmp_path / "nas2" / "b")
    assert nfs_host_path("nas2", "/b/", root=tmp_path) == tmp_path / "nas2" / "b"


def test_the_published_tree_has_the_nfs_standin_and_nothing_else_changed(example_repo: RepoCopy,
                                                                          tmp_path: Path) -> None:
    repo, target, nfs = example_repo.root, tmp_path / "published", tmp_path / "nfs"
    notes = publishable_tree(repo, target, nfs=nfs)
    assert notes[0] == f"{repo} is not a git checkout: every file under it is published to the drill's git server"
    notes = notes[1:]
    assert len(notes) == 2
    assert notes[0].startswith(f"{LIBRARY_PV}: PersistentVolume immich-library: NFS 10.127.0.5:/data/photos")
    assert notes[1].startswith(f"{SEAWEEDFS_PV}: PersistentVolume seaweedfs-data: NFS 10.127.0.5:/data/seaweedfs")
    documents = list(yaml.safe_load_all((target / LIBRARY_PV).read_text()))
    (pv,) = [d for d in documents if d and d["kind"] == "PersistentVolume"]
    assert pv["spec"]["hostPath"]["path"] == str(nfs / "10.127.0.5" / "data" / "photos")
    assert pv["metadata"]["labels"][STANDIN_LABEL] == "nfs"
    (claim,) = [d for d in documents if d and d["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["volumeName"] == "immich-library"  # still bound to it by name
    # Every other file, SOPS-encrypted ones above all (their MAC covers the bytes), is copied unchanged.
    sops = sorted(repo.rglob("*.sops.yaml"))
    assert sops
    for path in sops:
        assert (target / path.relative_to(repo)).read_bytes() == path.read_bytes()
    originals = {p.relative_to(repo) for p in repo.rglob("*") if p.is_file() and p.suffix != ".agekey"}
    assert originals == {p.relative_to(target) for p in target.rglob("*") if p.is_file()}
    assert not list(target.rglob("*.agekey"))  # the private key never reaches the git server
    changed = {str(p) for p in originals if (target / p).read_bytes() != (repo / p).read_bytes()}
    assert changed == {LIBRARY_PV, SEAWEEDFS_PV}
    assert not nfs.exists()  # the host folder is made by the kubelet (DirectoryOrCreate), not here


def test_a_tree_without_nfs_is_copied_as_is(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "apps").mkdir(parents=True)
    (repo / "apps" / "pv.yaml").write_text("# hostPath, no NFS\nkind: PersistentVolume\nspec:\n  hostPath: {}\n")
    (repo / ".git").mkdir()
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    assert [n for n in publishable_tree(repo, tmp_path / "out", nfs=tmp_path / "nfs")
            if "not a git checkout" not in n] == []
    assert (tmp_path / "out" / "apps" / "pv.yaml").read_text() == (repo / "apps" / "pv.yaml").read_text()
    assert not (tmp_path / "out" / ".git").exists()  # the git server gets a fresh history
    assert [p.name for p in iter_yaml_files(tmp_path / "out")] == ["pv.yaml"]


def test_cnpg_clusters_get_the_drill_clusters_postgresql_and_say_so(example_repo: RepoCopy, tmp_path: Path) -> None:
    notes = publishable_tree(example_repo.root, tmp_path / "published", nfs=tmp_path / "nfs", cnpg_image="local:15")
    (note,) = [n for n in notes if "CNPG Cluster immich-postgres" in n]
    assert "ghcr.io/cloudnative-pg/postgresql:16.9 replaced by local:15" in note and "major version" in note
    path = tmp_path / "published/kubernetes/apps/immich/immich/app/cluster.yaml"
    (cluster,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert cluster["spec"]["imageName"] == "local:15"


def test_a_rewritten_file_keeps_what_kustomize_reads_as_strings(example_repo: RepoCopy, tmp_path: Path) -> None:
    # cypr0/k8s-cluster's paperless: `huge_pages: off` is a string to kustomize (YAML 1.2); read and
    # written back with YAML 1.1 it became `false`, and the API server refused the Cluster.
    cluster_file = "kubernetes/apps/immich/immich/app/cluster.yaml"
    example_repo.replace(cluster_file, "spec:\n", "spec:\n  postgresql:\n    parameters:\n      huge_pages: off\n"
                         "      log_connections: yes\n", count=1)
    publishable_tree(example_repo.root, tmp_path / "published", nfs=tmp_path / "nfs", cnpg_image="local:15")
    text = (tmp_path / "published" / cluster_file).read_text()
    assert "huge_pages: 'off'" in text and "log_connections: 'yes'" in text, text


def test_an_nfs_volume_named_by_flux_variables_gets_a_folder_of_its_own(tmp_path: Path) -> None:
    # cypr0/k8s-cluster's paperless: `server: ${SECRET_NAS_SERVER}`, substituted in the cluster
    pv = nfs_pv(server="${SECRET_NAS_SERVER}", path="/mnt/hdd/shr/pls")
    (note,) = rewrite_nfs_volumes([pv], root=tmp_path)
    assert pv["spec"]["hostPath"]["path"] == str(tmp_path / "var-secret-nas-server" / "mnt" / "hdd" / "shr" / "pls")
    assert "${SECRET_NAS_SERVER}:/mnt/hdd/shr/pls" in note
    assert "${" not in pv["spec"]["hostPath"]["path"]  # nothing left for Flux to substitute
    assert nfs_host_path("nas", "${NFS_ROOT:=/srv}/media", root=tmp_path) == tmp_path / "nas" / "var-nfs-root" / "media"
    with pytest.raises(ConfigError):
        nfs_host_path("${NAS}", "/data/${SUB}/../../..", root=tmp_path)


@pytest.mark.parametrize(("server", "path", "field"), [
    ("..", "/etc", "spec.nfs.server"),
    ("/", "/root/.ssh", "spec.nfs.server"),
    ("nas/../..", "/x", "spec.nfs.server"),
    ("", "/data", "spec.nfs.server"),
    ("nas", "/data/../../../etc", "spec.nfs.path"),
    ("nas", "data", "spec.nfs.path"),
])
def test_an_nfs_volume_cannot_reach_outside_the_standin_root(tmp_path: Path, server: str, path: str,
                                                            field: str) -> None:
    pv = nfs_pv(server=server, path=path)
    with pytest.raises(ConfigError) as raised:
        rewrite_nfs_volumes([pv], root=tmp_path / "nfs", source="apps/x/pv.yaml")
    assert f"apps/x/pv.yaml: PersistentVolume photos: {field}" in str(raised.value)
    assert "nfs" in pv["spec"]  # nothing rewritten


def test_an_nfs_folder_symlinked_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "nfs"
    (root / "nas").mkdir(parents=True)
    (root / "nas" / "data").symlink_to("/etc")
    with pytest.raises(ConfigError, match="outside the NFS stand-in root"):
        nfs_host_path("nas", "/data/passwd", root=root)
    assert nfs_host_path("[fd00::5]", "/data", root=root) == root / "fd00::5" / "data"


def _git_repo(repo: Path, files: dict[str, str], *, tracked: list[str]) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", *tracked], check=True)


def test_only_what_git_tracks_is_published(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _git_repo(repo, {"apps/a.yaml": "kind: ConfigMap\n", "kubeconfig": "apiVersion: v1\nkind: Config\n",
                     "talosconfig": "context: x\n", "age-key.txt": "AGE-SECRET-KEY-1QQQ\n"},
              tracked=["apps/a.yaml"])
    notes = publishable_tree(repo, tmp_path / "out", nfs=tmp_path / "nfs")
    assert notes == []
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "apps/a.yaml"]


@pytest.mark.parametrize(("text", "what"), [
    ("# created: 2026\nAGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQS\n", "an age secret key"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n", "a private key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n", "an SSH private key"),
])
def test_a_tracked_secret_key_is_refused_naming_the_file(tmp_path: Path, text: str, what: str) -> None:
    repo = tmp_path / "repo"
    _git_repo(repo, {"apps/a.yaml": "kind: ConfigMap\n", "keys/key.txt": text}, tracked=["apps", "keys"])
    with pytest.raises(ConfigError) as raised:
        publishable_tree(repo, tmp_path / "out", nfs=tmp_path / "nfs")
    assert f"{repo / 'keys/key.txt'} holds {what}" in str(raised.value)
    assert "remove keys/key.txt" in str(raised.value)


def test_the_drills_own_age_key_is_withheld_not_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _git_repo(repo, {"apps/a.yaml": "kind: ConfigMap\n", "secrets/drill.key": "AGE-SECRET-KEY-1QQQ\n",
                     "age.agekey": "AGE-SECRET-KEY-1QQQ\n"}, tracked=["."])
    publishable_tree(repo, tmp_path / "out", nfs=tmp_path / "nfs", withheld=[repo / "secrets/drill.key"])
    assert not (tmp_path / "out" / "secrets").exists() and not (tmp_path / "out" / "age.agekey").exists()


def test_cnpg_backups_to_the_repos_real_destination_are_disarmed() -> None:
    """A drill cluster must never archive WAL or take base backups into production's bucket."""
    from restoredrill.drill.gitops import disarm_cnpg_backups

    documents: list[Any] = [
        {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "immich-postgres"},
         "spec": {"instances": 1, "backup": {"barmanObjectStore": {"destinationPath": "s3://cnpg/"}},
                  "plugins": [{"name": "barman-cloud.cloudnative-pg.io"}]}},
        {"apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup", "metadata": {"name": "nightly"},
         "spec": {"schedule": "0 0 3 * * *", "cluster": {"name": "immich-postgres"}}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}, "data": {"backup": "x"}},
    ]
    changed = disarm_cnpg_backups(documents)
    assert documents[0]["spec"] == {"instances": 1}
    assert documents[1]["spec"]["suspend"] is True and documents[2]["data"] == {"backup": "x"}
    assert [c.split(":")[0] for c in changed] == ["CNPG Cluster immich-postgres", "CNPG ScheduledBackup nightly"]
    assert disarm_cnpg_backups(documents) == []


class _LeftoverContext:
    """A cluster restoredrill made, holding a Kustomization an earlier (`--keep-cluster`) run left."""

    def __init__(self, run_id: str) -> None:
        from types import SimpleNamespace

        from restoredrill.cluster.namespaces import CREATED_BY_LABEL, CREATED_BY_VALUE, RUN_ID_LABEL

        self.cluster = SimpleNamespace(created_by_us=True)
        self.deleted: list[dict[str, Any]] = []
        self.applied: list[dict[str, Any]] = []
        labels = {CREATED_BY_LABEL: CREATED_BY_VALUE, RUN_ID_LABEL: run_id}
        self.core = SimpleNamespace(read_namespace=lambda name: SimpleNamespace(
            metadata=SimpleNamespace(labels=labels, uid="u")))

    def delete(self, bodies: list[dict[str, Any]], wait: bool = False) -> None:
        self.deleted += bodies


@pytest.mark.parametrize(("left_by", "sole", "dropped"), [("earlier-run", True, True), ("this-run", True, False),
                                                          ("earlier-run", False, False)])
def test_a_dependency_an_earlier_run_left_is_removed_to_be_stood_in(left_by: str, sole: bool, dropped: bool) -> None:
    # cypr0's paperless-ai dependsOn paperless: a kept cluster still held paperless, failed, from the
    # run before, and paperless-ai's drill waited on it instead of standing it in.
    from typing import cast

    from restoredrill.catalogue import Catalogue
    from restoredrill.drill.gitops import GitOpsDeployment
    from restoredrill.platform import Flux
    from restoredrill.platform.base import PlatformContext

    ctx = _LeftoverContext(left_by)
    deployment = GitOpsDeployment(ctx=cast(PlatformContext, ctx), flux=cast(Flux, None),
                                  catalogue=cast(Catalogue, None), run_id="this-run", worker_id="gw0",
                                  sops_age_key=None, sole_user=lambda: sole, out=lambda line: None)
    found = {"metadata": {"name": "paperless", "namespace": "flux-system"}, "spec": {"targetNamespace": "productivity"}}
    assert deployment._drop_left_dependency(found) is dropped
    assert [d["metadata"]["name"] for d in ctx.deleted] == (["paperless"] if dropped else [])
    # A dependency with no namespace of its own to judge by is the cluster's: left alone.
    assert deployment._drop_left_dependency({"metadata": {"name": "cert-manager"}, "spec": {}}) is False
