"""A chart's values schemas made whole offline: remote `$ref`s served from the chart's own files.

Helm validates the values against every `values.schema.json` of a chart and its subcharts
(chartutil.ValidateAgainstSchema, helm v3.19), and it loads a `$ref` to an `http(s)` URL from the
network (jsonschema.go: an HTTPURLLoader for http and https). Charts of the bjw-s common library
do exactly that: app-template 3.x's schema is one `$ref` to
`https://raw.githubusercontent.com/bjw-s-labs/helm-charts/common-3.7.3/charts/library/common/values.schema.json`,
whose `$id` makes its relative refs (`schemas/pod.json#/options`) remote too. In a drill cluster
without egress, helm-controller's install then fails on a DNS lookup, and so does our renderer.

The files those URLs name are in the chart already: its `charts/common/` subchart at the version
the URL names. So each schema that refers out is rewritten as a compound schema document (JSON
Schema's bundling, draft-07 and later): the original under `allOf`, and every remote resource it
reaches embedded under `definitions` with its URL as `$id`, so a validator resolves every ref
locally and validates exactly as it would online. A URL is served from a chart file only when the
file's path within its (sub)chart ends the URL's path and the URL names that (sub)chart's version;
a URL no file matches leaves the chart as it is (Helm's own error then names the URL).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import yaml

SCHEMA_FILE = "values.schema.json"
# Where embedded resources go: `$defs` from draft 2019-09 on (the default of Helm's validator,
# santhosh-tekuri/jsonschema v6, when a schema names no `$schema`), `definitions` before it.
_OLD_DRAFTS = ("draft-03", "draft-04", "draft-06", "draft-07")
BUNDLE_PREFIX = "restoredrill-offline-"


@dataclass(frozen=True)
class LocalSchema:
    """A JSON file of the chart that a remote URL may name."""

    member: str  # path in the archive, e.g. app-template/charts/common/schemas/pod.json
    within: str  # its path within its (sub)chart, prefixed by the chart's name: common/schemas/pod.json
    version: str  # that (sub)chart's version
    document: Any


@dataclass(frozen=True)
class Bundled:
    """What rewriting a chart's schemas did."""

    data: bytes  # the chart archive, rewritten (or the same bytes when nothing changed)
    served: tuple[str, ...]  # remote URLs now embedded
    unresolved: tuple[str, ...]  # remote URLs no chart file matches (left to Helm)

    def note(self, chart: str) -> str | None:
        if not self.served:
            return None
        bases = sorted({url.rsplit("/", 1)[0] for url in self.served})
        return (f"chart {chart}: {len(self.served)} JSON schemas its values.schema.json loads from the internet "
                f"({', '.join(bases)}) are served from the chart's own copies of them (embedded by $id), "
                "as the drill cluster cannot fetch them; validation is otherwise unchanged")


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        files = {}
        for member in tar.getmembers():
            if member.isfile():
                extracted = tar.extractfile(member)
                files[member.name] = extracted.read() if extracted else b""
        return files


def _chart_roots(files: Mapping[str, bytes]) -> dict[str, tuple[str, str]]:
    """Every (sub)chart folder of the archive: folder -> (chart name, version)."""
    roots = {}
    for name, content in files.items():
        path = PurePosixPath(name)
        if path.name != "Chart.yaml":
            continue
        try:
            metadata = yaml.safe_load(content) or {}
        except yaml.YAMLError:
            continue
        if isinstance(metadata, dict) and metadata.get("name"):
            roots[str(path.parent)] = (str(metadata["name"]), str(metadata.get("version", "")))
    return roots


def _local_schemas(files: Mapping[str, bytes]) -> list[LocalSchema]:
    roots = _chart_roots(files)
    schemas = []
    for name, content in files.items():
        if not name.endswith(".json"):
            continue
        path = PurePosixPath(name)
        folder = next((str(p) for p in path.parents if str(p) in roots), None)
        if folder is None:
            continue
        try:
            document = json.loads(content)
        except ValueError:
            continue
        chart, version = roots[folder]
        schemas.append(LocalSchema(member=name, within=f"{chart}/{path.relative_to(folder)}", version=version,
                                   document=document))
    return schemas


def _refs(node: Any, base: str) -> Iterator[str]:
    """Every `$ref` under `node`, made absolute against the `$id`s that enclose it."""
    if isinstance(node, dict):
        here = urljoin(base, node["$id"]) if isinstance(node.get("$id"), str) else base
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield urldefrag(urljoin(here, ref))[0]
        for key, value in node.items():
            if key not in ("enum", "const", "default", "examples"):
                yield from _refs(value, here)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value, base)


def _ids(node: Any, base: str) -> Iterator[str]:
    if isinstance(node, dict):
        here = urljoin(base, node["$id"]) if isinstance(node.get("$id"), str) else base
        if isinstance(node.get("$id"), str):
            yield urldefrag(here)[0]
        for key, value in node.items():
            if key not in ("enum", "const", "default", "examples"):
                yield from _ids(value, here)
    elif isinstance(node, list):
        for value in node:
            yield from _ids(value, base)


def _remote(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


def match_url(url: str, schemas: list[LocalSchema]) -> LocalSchema | None:
    """The chart file a remote schema URL names: its path ends with the file's path within its chart,
    and the URL names that chart's version (a branch name such as `main` matches nothing)."""
    parts = urlsplit(url)
    candidates = [s for s in schemas if parts.path.endswith("/" + s.within) and s.version
                  and s.version in parts.path.removesuffix("/" + s.within)]
    # The longest match is the most specific (app-template/values.schema.json over values.schema.json).
    return max(candidates, key=lambda s: len(s.within), default=None)


def bundle_schemas(data: bytes) -> Bundled:
    """The chart archive `data` with each values schema that loads remote URLs made self-contained."""
    try:
        files = _members(data)
    except (OSError, tarfile.TarError, EOFError):
        return Bundled(data, (), ())
    schemas = _local_schemas(files)
    changed: dict[str, bytes] = {}
    served: dict[str, None] = {}
    unresolved: dict[str, None] = {}
    for schema in schemas:
        if PurePosixPath(schema.member).name != SCHEMA_FILE or not isinstance(schema.document, dict):
            continue
        base = "file:///values.schema.json"  # where Helm adds the schema before compiling it
        known = set(_ids(schema.document, base))
        pending = [u for u in dict.fromkeys(_refs(schema.document, base)) if _remote(u) and u not in known]
        embedded: dict[str, Any] = {}
        missing = False
        while pending:
            url = pending.pop(0)
            if url in embedded or url in known:
                continue
            local = match_url(url, schemas)
            if local is None or not isinstance(local.document, dict):
                unresolved[url] = None
                missing = True
                continue
            resource = dict(local.document)
            resource["$id"] = url
            embedded[url] = resource
            known |= set(_ids(resource, url))
            pending += [u for u in _refs(resource, url) if _remote(u) and u not in known and u not in embedded]
        if not embedded or missing:
            continue
        original = dict(schema.document)
        dialect = original.pop("$schema", None)
        wrapper: dict[str, Any] = {"$schema": dialect} if dialect else {}
        wrapper["allOf"] = [original]
        key = "definitions" if any(d in str(dialect or "") for d in _OLD_DRAFTS) else "$defs"
        wrapper[key] = {f"{BUNDLE_PREFIX}{n}": r for n, r in enumerate(embedded.values())}
        changed[schema.member] = json.dumps(wrapper, indent=1).encode()
        served.update(dict.fromkeys(embedded))
    if not changed:
        return Bundled(data, (), tuple(unresolved))
    return Bundled(_repack(data, changed), tuple(served), tuple(unresolved))


def _repack(data: bytes, changed: Mapping[str, bytes]) -> bytes:
    """The archive with `changed` members replaced, everything else byte for byte, reproducibly."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as source, \
            gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, \
            tarfile.open(fileobj=zipped, mode="w") as target:
        for member in source.getmembers():
            content = None
            if member.isfile():
                extracted = source.extractfile(member)
                content = changed.get(member.name, extracted.read() if extracted else b"")
                member = copy_member(member, len(content))
            target.addfile(member, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def copy_member(member: tarfile.TarInfo, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.name)
    info.size, info.mode, info.mtime, info.type = size, member.mode, member.mtime, member.type
    return info
