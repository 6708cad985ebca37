"""Reading manifests with the line of every field, so every finding can point into the file.

A file that does not parse becomes a `ManifestError` naming the file and line; the caller keeps
going with the other files, so one bad file never hides the findings in the rest of the repo.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from restoredrill.errors import ManifestError, SourceLocation

FieldPath = tuple[str | int, ...]

REDACTED = "<redacted>"
# libyaml when present: several times faster on large CRDs and repos.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Document:
    """One YAML document of a file: its data and the line of each field in it."""

    path: Path  # relative to the repo root
    index: int  # position in a multi-document file, from 0
    line: int  # first line of the document, from 1
    data: Any
    lines: Mapping[FieldPath, int] = field(default_factory=dict, repr=False, compare=False)

    def line_of(self, path: FieldPath) -> int:
        """The line of `path`, or of its nearest ancestor present in the file."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.line

    def location(self, path: FieldPath = ()) -> SourceLocation:
        return SourceLocation(str(self.path), self.line_of(path))


def load_documents(path: Path, *, root: Path, text: str | None = None) -> list[Document]:
    """Every non-empty document of `path` (absolute), named relative to `root`.

    Raises ManifestError with the file and line for YAML that does not parse.
    """
    relative = path.relative_to(root)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ManifestError(
                f"not UTF-8 text ({error.reason} at byte {error.start})",
                location=SourceLocation(str(relative)),
                remedy="save the file as UTF-8",
            ) from None
    documents: list[Document] = []
    loader = _Loader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is not None:
                lines: dict[FieldPath, int] = {}
                _index_lines(node, (), lines)
                documents.append(
                    Document(path=relative, index=index, line=node.start_mark.line + 1, data=data, lines=lines)
                )
            index += 1
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(part for part in (error.context, error.problem) if part)
        raise ManifestError(
            f"YAML does not parse: {problem}",
            location=SourceLocation(str(relative), line),
            remedy="fix the YAML syntax at that line (indentation, a missing ':' or an unclosed quote)",
        ) from None
    except yaml.YAMLError as error:
        raise ManifestError(f"YAML does not parse: {error}", location=SourceLocation(str(relative))) from None
    finally:
        loader.dispose()
    return documents


def _index_lines(node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.start_mark)
            child = (*path, key)
            _index_lines(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            _index_lines(item, (*path, position), lines)


def iter_yaml_files(root: Path) -> Iterator[Path]:
    """YAML files under `root` in a stable order, skipping hidden folders such as `.git`."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts[:-1]):
            continue
        if path.suffix in (".yaml", ".yml") and path.is_file():
            yield path


def redacted(obj: Any) -> Any:
    """A copy of a manifest safe to print or attach: a Secret's values are replaced."""
    if not isinstance(obj, dict):
        return obj
    copy = dict(obj)
    if copy.get("kind") == "Secret":
        for key in ("data", "stringData"):
            if isinstance(copy.get(key), dict):
                copy[key] = {name: REDACTED for name in copy[key]}
    if "sops" in copy:
        copy["sops"] = REDACTED
    return copy


def dump(obj: Any) -> str:
    """YAML text of a manifest for reports, with secret values redacted."""
    return yaml.safe_dump(redacted(obj), sort_keys=False, default_flow_style=False)
