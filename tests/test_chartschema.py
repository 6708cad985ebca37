"""A chart whose values schema loads its library's schemas from the internet (as app-template 3.x
loads bjw-s common's) is validated offline from its own copy of that library, and validated as
strictly as online: on a chart written here in that shape."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from restoredrill.drill.charts import read_charts_dir
from restoredrill.drill.chartschema import LocalSchema, bundle_schemas, match_url
from restoredrill.errors import ConfigError
from restoredrill.rendering import binary_renderer, chart_render_binary

LIBRARY_URL = "https://schemas.example.org/helm-charts/lib-1.2.0/charts/library/lib/values.schema.json"
TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}, namespace: {{ .Release.Namespace }}}
spec:
  replicas: {{ .Values.pod.replicas }}
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec: {containers: [{name: app, image: ghcr.io/example/app:1.0}]}
"""


def app_shaped_chart(root: Path, *, url: str = LIBRARY_URL) -> Path:
    """`shape` 3.0.0: its values.schema.json is one remote $ref to its subchart `lib` 1.2.0's schema,
    whose $id is that URL and whose relative ref (schemas/pod.json) is remote too."""
    chart = root / "shape"
    files = {
        "Chart.yaml": "apiVersion: v2\nname: shape\nversion: 3.0.0\n"
                      "dependencies: [{name: lib, version: 1.2.0, repository: https://charts.example.org}]\n",
        "values.yaml": "pod: {replicas: 1}\n",
        "values.schema.json": json.dumps({"$ref": url}),
        "templates/deployment.yaml": TEMPLATE,
        "charts/lib/Chart.yaml": "apiVersion: v2\nname: lib\nversion: 1.2.0\ntype: library\n",
        "charts/lib/values.schema.json": json.dumps({
            "$schema": "http://json-schema.org/draft-07/schema", "$id": url, "type": "object",
            "properties": {"pod": {"$ref": "schemas/pod.json#/options"}}}),
        "charts/lib/schemas/pod.json": json.dumps({
            "$schema": "http://json-schema.org/draft-07/schema",
            "options": {"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 0}},
                        "additionalProperties": False}}),
    }
    for relative, text in files.items():
        (chart / relative).parent.mkdir(parents=True, exist_ok=True)
        (chart / relative).write_text(text)
    return root


def archive_member(data: bytes, name: str) -> Any:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None
        return json.loads(extracted.read())


def test_remote_refs_are_embedded_from_the_charts_own_library_and_disclosed(tmp_path: Path) -> None:
    [package] = read_charts_dir(app_shaped_chart(tmp_path))
    pod_url = LIBRARY_URL.rsplit("/", 1)[0] + "/schemas/pod.json"
    root = archive_member(package.data, "shape/values.schema.json")
    assert root["allOf"] == [{"$ref": LIBRARY_URL}]  # the original, unchanged, under allOf
    assert {r["$id"] for r in root["$defs"].values()} == {LIBRARY_URL, pod_url}
    library = archive_member(package.data, "shape/charts/lib/values.schema.json")
    assert [r["$id"] for r in library["definitions"].values()] == [pod_url]  # draft-07: definitions
    [note] = package.notes
    assert "chart shape 3.0.0: 2 JSON schemas" in note and "cannot fetch them" in note


def test_a_url_is_served_only_from_the_chart_version_it_names() -> None:
    lib = LocalSchema(member="shape/charts/lib/values.schema.json", within="lib/values.schema.json",
                      version="1.2.0", document={})
    assert match_url(LIBRARY_URL, [lib]) is lib
    assert match_url(LIBRARY_URL.replace("lib-1.2.0", "main"), [lib]) is None  # a branch is no version
    assert match_url(LIBRARY_URL.replace("lib-1.2.0", "lib-1.3.0"), [lib]) is None


def test_a_chart_with_no_remote_refs_is_served_byte_for_byte(tmp_path: Path) -> None:
    chart = app_shaped_chart(tmp_path)
    (chart / "shape" / "values.schema.json").write_text(json.dumps({"type": "object"}))
    (chart / "shape" / "charts" / "lib" / "values.schema.json").write_text(json.dumps({"type": "object"}))
    [package] = read_charts_dir(chart)
    assert package.notes == ()
    assert bundle_schemas(package.data).data == package.data


@pytest.fixture(scope="module")
def renderer() -> Any:
    return binary_renderer(chart_render_binary())


def request(package_path: Path, values: dict[str, Any]) -> dict[str, Any]:
    return {"chart": str(package_path), "name": "shape", "namespace": "apps", "values": values,
            "kubeVersion": "1.33.0", "skipSchemaValidation": False}


def test_offline_the_chart_renders_and_its_library_schema_still_refuses_bad_values(
        tmp_path: Path, renderer: Any) -> None:
    [package] = read_charts_dir(app_shaped_chart(tmp_path / "charts"))
    chart = tmp_path / package.file_name
    chart.write_bytes(package.data)
    [deployment] = renderer(request(chart, {"pod": {"replicas": 2}}))["manifests"]
    assert "replicas: 2" in deployment["content"]
    with pytest.raises(ConfigError) as refused:  # the embedded pod.json is what refuses it
        renderer(request(chart, {"pod": {"replicas": -1}}))
    assert "replicas" in str(refused.value) and "minimum" in str(refused.value)
    with pytest.raises(ConfigError) as unknown:
        renderer(request(chart, {"pod": {"replicaz": 1}}))
    assert "replicaz" in str(unknown.value)


def test_a_remote_schema_no_chart_file_holds_is_named_with_the_fix(tmp_path: Path, renderer: Any) -> None:
    branch = LIBRARY_URL.replace("lib-1.2.0", "main")
    [package] = read_charts_dir(app_shaped_chart(tmp_path / "charts", url=branch))
    assert package.notes == ()
    chart = tmp_path / package.file_name
    chart.write_bytes(package.data)
    with pytest.raises(ConfigError) as error:
        renderer(request(chart, {"pod": {"replicas": 1}}))
    message = str(error.value)
    assert branch in message and "disableSchemaValidation" in message
