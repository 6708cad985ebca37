"""Each restore verifier fails on the fault it exists to catch, and passes on a faithful restore."""

from typing import cast

import pytest

from restoredrill.verify import (
    Entry,
    PodVolumeRecord,
    compare_pod_volumes,
    compare_uids,
    compare_volume,
    fs_backup_volumes,
    parse_inventory,
    unexpected_warnings,
)

INVENTORY = (
    "d\t0\t-\tnested\n"
    "f\t0\te3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\tempty\n"
    "f\t52428801\tab" + "0" * 62 + "\tnested/big.bin\n"
    "l\t0\tnested/big.bin\tlink to big\n"
    "f\t3\tcd" + "0" * 62 + "\twith\\ttab\n"
)


@pytest.fixture
def backed_up() -> dict[str, Entry]:
    return parse_inventory(INVENTORY)


def test_inventory_parses_every_kind(backed_up: dict[str, Entry]) -> None:
    assert backed_up["nested"].kind == "dir"
    assert backed_up["empty"].size == 0
    assert backed_up["nested/big.bin"].size == 52428801
    assert backed_up["link to big"] == Entry(path="link to big", kind="symlink", target="nested/big.bin")
    assert "with\ttab" in backed_up


def test_a_bad_inventory_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="inventory line 2"):
        parse_inventory("d\t0\t-\ta\nnonsense\n")


def test_a_faithful_restore_passes(backed_up: dict[str, Entry]) -> None:
    assert compare_volume(volume="pelican-data", expected=backed_up, actual=dict(backed_up), sentinel="SENTINEL") == []


def test_a_changed_byte_fails(backed_up: dict[str, Entry]) -> None:
    restored = dict(backed_up)
    restored["nested/big.bin"] = Entry(path="nested/big.bin", kind="file", size=52428801, sha256="ff" * 32)
    (problem,) = compare_volume(volume="pelican-data", expected=backed_up, actual=restored)
    assert problem.startswith("pelican-data: file 'nested/big.bin' differs")


def test_the_sentinel_present_fails(backed_up: dict[str, Entry]) -> None:
    restored = {**backed_up, "SENTINEL": Entry(path="SENTINEL", kind="file", size=1, sha256="00" * 32)}
    (problem,) = compare_volume(volume="v", expected=backed_up, actual=restored, sentinel="SENTINEL")
    assert "written after the backup, is present" in problem


def test_missing_extra_retyped_and_relinked_entries_fail(backed_up: dict[str, Entry]) -> None:
    restored = dict(backed_up)
    del restored["empty"]
    restored["stray"] = Entry(path="stray", kind="dir")
    restored["nested"] = Entry(path="nested", kind="file", size=0, sha256="x")
    restored["link to big"] = Entry(path="link to big", kind="symlink", target="elsewhere")
    problems = compare_volume(volume="v", expected=backed_up, actual=restored)
    assert problems == [
        "v: file 'empty' is missing after the restore",
        "v: dir 'stray' was not there at backup time",
        "v: symlink 'link to big' pointed to 'nested/big.bin', now to 'elsewhere'",
        "v: 'nested' was a dir and is now a file",
    ]


EXPECTED = [("pelican/pelican-panel-1", "data"), ("pelican/pelican-panel-1", "logs")]


def test_pod_volumes_one_for_one_completed_pass() -> None:
    records = [PodVolumeRecord("b-1", "pelican/pelican-panel-1", "data", "Completed"),
               PodVolumeRecord("b-2", "pelican/pelican-panel-1", "logs", "Completed")]
    assert compare_pod_volumes(operation="backup", expected=EXPECTED, records=records) == []


def test_a_volume_velero_skipped_silently_fails() -> None:
    records = [PodVolumeRecord("b-1", "pelican/pelican-panel-1", "data", "Completed")]
    (problem,) = compare_pod_volumes(operation="backup", expected=EXPECTED, records=records)
    assert problem.startswith("no PodVolumeBackup for volume 'logs' of pod pelican/pelican-panel-1")
    assert "hostPath" in problem


def test_a_failed_pod_volume_restore_fails_with_its_message() -> None:
    records = [PodVolumeRecord("r-1", "pelican/pelican-panel-1", "data", "Completed"),
               PodVolumeRecord("r-2", "pelican/pelican-panel-1", "logs", "Failed", "error restoring: no space left")]
    (problem,) = compare_pod_volumes(operation="restore", expected=EXPECTED, records=records)
    assert problem == ("PodVolumeRestore r-2 (pod pelican/pelican-panel-1, volume 'logs') is Failed: "
                       "error restoring: no space left")


def test_duplicate_and_unexpected_records_fail() -> None:
    records = [PodVolumeRecord("b-1", "pelican/pelican-panel-1", "data", "Completed"),
               PodVolumeRecord("b-9", "pelican/pelican-panel-1", "data", "Completed"),
               PodVolumeRecord("b-2", "pelican/pelican-panel-1", "logs", "Completed"),
               PodVolumeRecord("b-3", "pelican/other", "cache", "Completed")]
    problems = compare_pod_volumes(operation="backup", expected=EXPECTED, records=records)
    assert problems == ["unexpected PodVolumeBackup b-3 for volume 'cache' of pod pelican/other",
                        "2 PodVolumeBackups for volume 'data' of pod pelican/pelican-panel-1: b-1, b-9"]


def test_objects_recreated_by_flux_fail() -> None:
    before = {"Deployment/pelican/pelican-panel": "u1", "Service/pelican/pelican-panel": "u2"}
    assert compare_uids(before=before, after=dict(before)) == []
    problems = compare_uids(before=before, after={"Deployment/pelican/pelican-panel": "u9"})
    assert problems == ["Deployment/pelican/pelican-panel was recreated by Flux (uid u1 -> u9), not adopted",
                        "Service/pelican/pelican-panel is gone after Flux reconciled"]


def test_restore_warnings_outside_the_allow_list_fail() -> None:
    warnings = {"namespaces": {"pelican": ["could not restore, ConfigMap kube-root-ca.crt already exists"]},
                "velero": ["Cannot find restore helper image"]}
    flat = {"pelican": cast(dict[str, list[str]], warnings["namespaces"])["pelican"],
            "velero": cast(list[str], warnings["velero"])}
    assert unexpected_warnings(flat, allowed=["kube-root-ca.crt already exists"]) == [
        "velero: Cannot find restore helper image"]


def pod_with(volumes: list[dict[str, object]], annotations: dict[str, str] | None = None) -> dict[str, object]:
    return {"metadata": {"name": "immich-server-1", "namespace": "immich", "annotations": annotations or {}},
            "spec": {"containers": [{"name": "app"}], "volumes": volumes}}


POD_VOLUMES: list[dict[str, object]] = [
    {"name": "data", "persistentVolumeClaim": {"claimName": "immich-data"}},
    {"name": "library", "persistentVolumeClaim": {"claimName": "immich-library"}},
    {"name": "cache", "emptyDir": {}},
    {"name": "host", "hostPath": {"path": "/srv"}},
    {"name": "secrets", "secret": {"secretName": "s"}},
    {"name": "config", "configMap": {"name": "c"}},
    {"name": "token", "projected": {"sources": []}},
    {"name": "podinfo", "downwardAPI": {"items": []}},
    {"name": "default-token-abcde", "emptyDir": {}},
]


def test_opt_out_copies_claims_and_empty_dirs_only() -> None:
    pod = pod_with(POD_VOLUMES)
    assert fs_backup_volumes(pod, default_volumes_to_fs_backup=True) == ["data", "library", "cache"]


def test_opt_out_honours_the_excludes_annotation() -> None:
    pod = pod_with(POD_VOLUMES, {"backup.velero.io/backup-volumes-excludes": "library, cache"})
    assert fs_backup_volumes(pod, default_volumes_to_fs_backup=True) == ["data"]


def test_opt_in_copies_only_the_annotated_volumes() -> None:
    assert fs_backup_volumes(pod_with(POD_VOLUMES), default_volumes_to_fs_backup=False) == []
    pod = pod_with(POD_VOLUMES, {"backup.velero.io/backup-volumes": "cache,data",
                                 "backup.velero.io/backup-volumes-excludes": "data"})
    assert fs_backup_volumes(pod, default_volumes_to_fs_backup=False) == ["data", "cache"]


def test_a_claim_is_expected_whatever_its_volume_is() -> None:
    """The pod only names a claim; that its PV is hostPath (which Velero skips silently) is not visible here, so
    the claim stays expected and a missing PodVolumeBackup for it fails the drill."""
    pod = pod_with([{"name": "library", "persistentVolumeClaim": {"claimName": "immich-library"}}])
    assert fs_backup_volumes(pod, default_volumes_to_fs_backup=True) == ["library"]


def test_a_pod_without_volumes_or_metadata() -> None:
    assert fs_backup_volumes({}, default_volumes_to_fs_backup=True) == []
    assert fs_backup_volumes({"spec": {"volumes": None}}, default_volumes_to_fs_backup=False) == []
