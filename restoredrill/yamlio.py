"""Reading manifests with the line of every field, so every finding can point into the file.

YAML is read as kustomize reads it (go-yaml v3, the YAML 1.2 core schema): only `true`/`false`
are booleans (`on`, `off`, `yes` are strings), there are no timestamps or sexagesimal numbers, an
anchor may be redefined (an alias names the latest definition), `<<` merge keys work, and a local
tag such as `!env_var` keeps its plain value.

A file that does not parse becomes a `ManifestError` naming the file and line; the caller keeps
going with the other files, so one bad file never hides the findings in the rest of the repo.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import yaml.constructor
import yaml.resolver

from restoredrill.errors import ManifestError, SourceLocation

FieldPath = tuple[str | int, ...]

REDACTED = "<redacted>"

# The YAML 1.2 core schema's implicit types, as go-yaml v3 resolves plain scalars.
_CORE_RESOLVERS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), "tTfF"),
    ("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), "-+0123456789"),
    ("tag:yaml.org,2002:float", re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
     "-+0123456789."),
    ("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), "~nN"),
    ("tag:yaml.org,2002:merge", re.compile(r"^<<$"), "<"),
)


def _core_resolvers() -> dict[str | None, list[tuple[str, re.Pattern[str]]]]:
    resolvers: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {}
    for tag, pattern, first in _CORE_RESOLVERS:
        for char in first:
            resolvers.setdefault(char, []).append((tag, pattern))
    resolvers.setdefault(None, []).append(("tag:yaml.org,2002:null", _CORE_RESOLVERS[3][1]))
    return resolvers


def _construct_core_int(loader: yaml.constructor.SafeConstructor, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


def _construct_untagged(loader: yaml.constructor.SafeConstructor, suffix: str, node: yaml.Node) -> Any:
    """A local tag (`!env_var X`) keeps its plain value: the file is data to kustomize, not code."""
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


def _go_yaml_v3(base: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    loader: type[yaml.SafeLoader] = type(f"GoYamlV3{base.__name__}", (base,), {})
    loader.yaml_implicit_resolvers = _core_resolvers()
    loader.yaml_constructors = dict(base.yaml_constructors)
    loader.yaml_multi_constructors = dict(base.yaml_multi_constructors)
    loader.add_constructor("tag:yaml.org,2002:int", _construct_core_int)  # type: ignore[type-var]
    loader.add_constructor("tag:yaml.org,2002:timestamp",  # type: ignore[type-var]
                           yaml.constructor.SafeConstructor.construct_yaml_str)
    loader.add_multi_constructor("!", _construct_untagged)
    loader.add_multi_constructor("tag:", _construct_untagged)
    return loader


class _AnchorRedefiningSafeLoader(yaml.SafeLoader):
    """PyYAML refuses a second `&name`; go-yaml v3 lets an anchor be redefined, later aliases
    naming the latest definition."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if not self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor  # type: ignore[no-untyped-call]
            if anchor is not None:
                self.anchors.pop(anchor, None)
        return super().compose_node(parent, index)


# libyaml when present: several times faster on large CRDs and repos; the pure-Python loader
# only for files that redefine an anchor, which libyaml's composer refuses.
_Loader = _go_yaml_v3(getattr(yaml, "CSafeLoader", yaml.SafeLoader))
_RedefiningLoader = _go_yaml_v3(_AnchorRedefiningSafeLoader)


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
    try:
        return _documents(relative, text, _Loader)
    except yaml.composer.ComposerError as error:
        if "duplicate anchor" not in str(error):
            raise _parse_error(relative, error) from None
    except yaml.YAMLError as error:
        raise _parse_error(relative, error) from None
    try:
        return _documents(relative, text, _RedefiningLoader)
    except yaml.YAMLError as error:
        raise _parse_error(relative, error) from None


def _documents(relative: Path, text: str, loader_class: type[yaml.SafeLoader]) -> list[Document]:
    documents: list[Document] = []
    loader = loader_class(text)
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
    finally:
        loader.dispose()
    return documents


def _parse_error(relative: Path, error: yaml.YAMLError) -> ManifestError:
    if not isinstance(error, yaml.MarkedYAMLError):
        return ManifestError(f"YAML does not parse: {error}", location=SourceLocation(str(relative)))
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark is not None else None
    problem = " ".join(part for part in (error.context, error.problem) if part)
    return ManifestError(
        f"YAML does not parse: {problem}",
        location=SourceLocation(str(relative), line),
        remedy="fix the YAML syntax at that line (indentation, a missing ':' or an unclosed quote)",
    )


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


def load_all(text: str) -> list[Any]:
    """Every document of a YAML text as kustomize reads it (YAML 1.2 core schema: `off` stays a
    string), for code that rewrites a repo's files: PyYAML's own loader would turn `off` into false,
    and the rewritten file would then say something the repo does not."""
    try:
        return list(yaml.load_all(text, Loader=_Loader))
    except yaml.composer.ComposerError:
        return list(yaml.load_all(text, Loader=_RedefiningLoader))


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
