"""The CRD validator finds what the API server would drop or reject."""

from typing import Any

import pytest

from restoredrill.schemas import CrdSchemas, cached_schemas, validate

SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["schedule"],
            "properties": {
                "schedule": {"type": "string"},
                "paused": {"type": "boolean"},
                "replicas": {"type": "integer", "minimum": 1},
                "port": {"x-kubernetes-int-or-string": True},
                "mode": {"type": "string", "enum": ["Fail", "Continue"]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "values": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}},
            },
        },
    },
}


def problems(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p.dotted, p.message) for p in validate({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"},
                                                     "spec": spec}, SCHEMA)}


def test_a_valid_object_has_no_problems() -> None:
    assert problems({"schedule": "x", "paused": False, "replicas": 2, "port": "http", "mode": "Fail",
                     "labels": {"a": "b"}, "values": {"anything": {"goes": 1}}, "items": [{"name": "a"}],
                     "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"x": 1},
                                  "spec": {"a": "b"}}}) == set()


def test_unknown_field_with_wrong_case_suggests_the_real_name() -> None:
    (path, message), = problems({"schedule": "x", "Paused": True})
    assert path == "spec.Paused"
    assert "drops it silently" in message and "did you mean `paused`" in message


def test_unknown_field_in_a_list_item_is_found() -> None:
    (path, _), = problems({"schedule": "x", "items": [{"name": "a"}, {"nmae": "b"}]})
    assert path == "spec.items[1].nmae"


def test_types_enums_bounds_and_required() -> None:
    found = dict(problems({"paused": "yes", "replicas": 0, "mode": "Maybe", "port": 1.5, "labels": {"a": 1}}))
    assert found["spec.paused"].startswith("must be a boolean")
    assert found["spec.replicas"] == "must be at least 1, not 0"
    assert found["spec.mode"].startswith("must be one of Fail, Continue")
    assert found["spec.port"].startswith("must be an integer or a string")
    assert found["spec.labels.a"].startswith("must be a string")
    assert found["spec.schedule"] == "is required but missing"


def test_unresolved_flux_substitution_matches_any_scalar() -> None:
    assert problems({"schedule": "x", "replicas": "${REPLICAS}", "paused": "${PAUSED:=false}"}) == set()


@pytest.fixture(scope="module")
def pinned() -> CrdSchemas:
    return cached_schemas(fetch=True)


def test_pinned_schemas_cover_velero_cnpg_flux_and_gateway(pinned: CrdSchemas) -> None:
    for key in [("velero.io", "v1", "Schedule"), ("velero.io", "v1", "BackupStorageLocation"),
                ("postgresql.cnpg.io", "v1", "Cluster"), ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
                ("source.toolkit.fluxcd.io", "v1", "GitRepository"), ("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
                ("gateway.networking.k8s.io", "v1", "HTTPRoute")]:
        assert pinned.lookup(*key) is not None, key
    assert "v1.16.2" in pinned.sources["velero.io"]


def test_the_runbooks_silent_killer_is_caught_by_the_real_velero_schema(pinned: CrdSchemas) -> None:
    schedule = {"apiVersion": "velero.io/v1", "kind": "Schedule", "metadata": {"name": "s"},
                "spec": {"schedule": "0 2 * * *", "template": {"defaultVolumesToFSBackup": True}}}
    schema = pinned.lookup("velero.io", "v1", "Schedule")
    assert schema is not None
    (problem,) = validate(schedule, schema)
    assert problem.dotted == "spec.template.defaultVolumesToFSBackup"
    assert "did you mean `defaultVolumesToFsBackup`" in problem.message
