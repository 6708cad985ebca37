"""Manifests are read with the line of every field; bad YAML names the file and line."""

from pathlib import Path
from typing import Any

import pytest

from restoredrill.errors import ManifestError
from restoredrill.yamlio import REDACTED, dump, load_documents, redacted


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app" / "manifest.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_multi_document_files_keep_lines_per_field(tmp_path: Path) -> None:
    path = write(tmp_path, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# comment\n"
                           "apiVersion: v1\nkind: Service\nmetadata:\n  name: b\nspec:\n  ports:\n    - port: 80\n")
    first, second = load_documents(path, root=tmp_path)
    assert first.data["kind"] == "ConfigMap" and second.data["kind"] == "Service"
    assert str(first.path) == "app/manifest.yaml"
    assert second.line_of(("spec", "ports", 0, "port")) == 14
    assert second.line_of(("metadata", "name")) == 11
    # A field that is not in the file points at its nearest ancestor.
    assert second.line_of(("spec", "clusterIP")) == 12
    assert str(second.location(("spec",))) == "app/manifest.yaml:12"


def test_empty_documents_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n")
    assert [d.data["kind"] for d in load_documents(path, root=tmp_path)] == ["Namespace"]


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n   labels: {}\n")
    with pytest.raises(ManifestError) as raised:
        load_documents(path, root=tmp_path)
    assert raised.value.location.path == "app/manifest.yaml"
    assert raised.value.location.line == 5
    assert "app/manifest.yaml:5" in str(raised.value)
    assert "fix:" in str(raised.value)


def test_non_utf8_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"kind: \xff\xfe\n")
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_documents(path, root=tmp_path)


def test_secret_values_never_reach_reports() -> None:
    secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "data": {"password": "aHVudGVyMg=="}, "stringData": {"token": "hunter2"}}
    text = dump(secret)
    assert "hunter2" not in text and "aHVudGVyMg==" not in text
    assert redacted(secret)["data"] == {"password": REDACTED}
    assert secret["stringData"]["token"] == "hunter2"  # the original is untouched
