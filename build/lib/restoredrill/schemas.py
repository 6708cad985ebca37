"""CRD OpenAPI schemas from the pinned upstream modules, and a validator that finds what the
API server would silently drop.

A field the schema does not know (a typo, `defaultVolumesToFSBackup` for
`defaultVolumesToFsBackup`) is pruned by the API server without a word, which can turn a backup
feature off. The schemas are the CRDs shipped in the pinned Velero, CloudNativePG, Flux and
Gateway API modules, fetched once from the Go module proxy into the cache.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from restoredrill.errors import RestoreDrillError
from restoredrill.pins import ModulePin, cache_dir, module_pins
from restoredrill.process import download_go_module
from restoredrill.timeouts import timeout

_STAMP = ".complete"
_DIGEST = "schemas.json"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SchemasUnavailable(RestoreDrillError):
    """The CRD schemas are not in the cache and could not be fetched."""


@dataclass(frozen=True)
class SchemaProblem:
    path: tuple[str | int, ...]
    message: str

    @property
    def dotted(self) -> str:
        return _dotted(self.path)


def _dotted(path: Iterable[str | int]) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else str(step))
    return text or "(document)"


@dataclass(frozen=True)
class CrdSchemas:
    """OpenAPI v3 schemas by (group, version, kind), plus which groups we hold CRDs for."""

    schemas: Mapping[tuple[str, str, str], dict[str, Any]]
    sources: Mapping[str, str]  # group -> "module@version"

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(group for group, _, _ in self.schemas)

    def versions_of(self, group: str, kind: str) -> list[str]:
        return sorted(v for g, v, k in self.schemas if g == group and k == kind)

    def kinds_of(self, group: str) -> list[str]:
        return sorted({k for g, _, k in self.schemas if g == group})

    def lookup(self, group: str, version: str, kind: str) -> dict[str, Any] | None:
        return self.schemas.get((group, version, kind))


def crd_cache_dir(pin: ModulePin) -> Path:
    return cache_dir() / "crds" / f"{pin.key}@{pin.version}"


def fetch_crds(*, progress: Any = print, pins: Mapping[str, ModulePin] | None = None) -> list[Path]:
    """Copy every pinned module's CRDs into the cache (idempotent); return the folders."""
    folders = []
    cache_dir().mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir() / "crds.lock")):
        for pin in (pins or module_pins()).values():
            folders.extend(_fetch_module_crds(pin, progress=progress))
    return folders


def _fetch_module_crds(pin: ModulePin, *, progress: Any) -> list[Path]:
    """The module's CRD folder in the cache, fetched first if missing. Written to a `.partial`
    folder and renamed, so an interrupted fetch is redone rather than half-used."""
    if not pin.crds:
        return []
    target = crd_cache_dir(pin)
    if (target / _STAMP).exists():
        return [target]
    progress(f"[schemas] fetching CRDs of {pin.module}@{pin.version} from the Go module proxy")
    module_dir = Path(download_go_module(pin.module, pin.version, timeout=timeout("module_download"))["Dir"])
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for folder in pin.crds:
        for source in sorted((module_dir / folder).glob("*.yaml")):
            shutil.copyfile(source, partial / source.name)
    (partial / _DIGEST).write_text(json.dumps(_digest_crds(partial)))
    (partial / _STAMP).write_text(f"{pin.module}@{pin.version}\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return [target]


def load_schemas(folders: Iterable[Path]) -> CrdSchemas:
    """Read every CRD in `folders` into a CrdSchemas (from the JSON digest `fetch_crds` writes)."""
    schemas: dict[tuple[str, str, str], dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for folder in folders:
        digest = folder / _DIGEST
        entries = json.loads(digest.read_text()) if digest.exists() else _digest_crds(folder)
        origin = (folder / _STAMP).read_text().strip() if (folder / _STAMP).exists() else str(folder)
        for entry in entries:
            schemas[(entry["group"], entry["version"], entry["kind"])] = entry["schema"]
            sources[entry["group"]] = origin
    return CrdSchemas(schemas=schemas, sources=sources)


def _digest_crds(folder: Path) -> list[dict[str, Any]]:
    """The served versions' schemas of every CRD file in `folder`."""
    entries = []
    for path in sorted(folder.glob("*.yaml")):
        for crd in yaml.load_all(path.read_text(encoding="utf-8"), Loader=_Loader):
            if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec.get("versions", []):
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema is not None and version.get("served", True):
                    entries.append({"group": spec["group"], "version": version["name"],
                                    "kind": spec["names"]["kind"], "schema": schema})
    return entries


def cached_schemas(*, fetch: bool, progress: Any = print) -> CrdSchemas:
    """The pinned schemas, fetched first when `fetch` is true and they are missing."""
    pins = module_pins()
    folders = [crd_cache_dir(pin) for pin in pins.values() if pin.crds]
    missing = [f for f in folders if not (f / _STAMP).exists()]
    if missing and fetch:
        try:
            folders = fetch_crds(progress=progress, pins=pins)
        except RestoreDrillError as error:
            raise SchemasUnavailable(
                f"the pinned CRD schemas are not cached and could not be fetched: {error.message}",
                remedy=f"{error.remedy or ''}; or run `restoredrill schemas` on a machine with Go and the module "
                       f"proxy, then copy {cache_dir() / 'crds'} here".lstrip("; "),
            ) from None
    elif missing:
        raise SchemasUnavailable(
            f"the pinned CRD schemas are not in {cache_dir() / 'crds'} ({', '.join(f.name for f in missing)})",
            remedy="run `restoredrill schemas` (needs Go and the Go module proxy)")
    return load_schemas(folders)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

_ROOT_FIELDS = frozenset({"apiVersion", "kind", "metadata"})
_UNRESOLVED = re.compile(r"\$\{[^}]+\}")


def validate(obj: Any, schema: Mapping[str, Any]) -> list[SchemaProblem]:
    """Problems the API server would have with `obj`: unknown fields, wrong types, bad enums,
    missing required fields. Values still holding a Flux `${VAR}` count as any scalar."""
    return list(_validate(obj, schema, (), root=True))


def _validate(value: Any, schema: Mapping[str, Any], path: tuple[str | int, ...], *, root: bool = False
              ) -> Iterator[SchemaProblem]:
    if value is None:
        return  # null is dropped by the API server for optional fields; required is checked by the parent
    if isinstance(value, str) and _UNRESOLVED.search(value) and schema.get("type") != "string":
        return  # a Flux substitution the repo does not resolve; its type is known only at apply time
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, int | str) or isinstance(value, bool):
            yield SchemaProblem(path, f"must be an integer or a string, not {_type_name(value)}")
        return
    expected = schema.get("type")
    if expected == "object" or (expected is None and "properties" in schema):
        if not isinstance(value, dict):
            yield SchemaProblem(path, f"must be an object, not {_type_name(value)}")
            return
        yield from _validate_object(value, schema, path, root=root)
    elif expected == "array":
        if not isinstance(value, list):
            yield SchemaProblem(path, f"must be a list, not {_type_name(value)}")
            return
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                yield from _validate(item, items, (*path, index))
    elif expected is not None:
        yield from _validate_scalar(value, schema, expected, path)


def _validate_object(value: dict[str, Any], schema: Mapping[str, Any], path: tuple[str | int, ...], *, root: bool
                     ) -> Iterator[SchemaProblem]:
    properties: Mapping[str, Any] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    embedded = bool(schema.get("x-kubernetes-embedded-resource"))
    for key, item in value.items():
        if key in properties:
            if (root or embedded) and key == "metadata":
                continue  # ObjectMeta is validated by the API server itself, not by the CRD
            yield from _validate(item, properties[key], (*path, key))
        elif isinstance(additional, dict):
            yield from _validate(item, additional, (*path, key))
        elif (((root or embedded) and key in _ROOT_FIELDS) or preserve or additional is True
              or (not properties and additional is None)):
            continue
        else:
            yield SchemaProblem((*path, key), _unknown_field_message(str(key), properties))
    for required in schema.get("required") or []:
        if value.get(required) is None:
            yield SchemaProblem((*path, required), "is required but missing")


def _unknown_field_message(key: str, properties: Mapping[str, Any]) -> str:
    message = "is not a field of this object; the API server drops it silently"
    same_but_case = [name for name in properties if name.lower() == key.lower()]
    close = same_but_case or difflib.get_close_matches(key, list(properties), n=1, cutoff=0.75)
    if close:
        return f"{message} (did you mean `{close[0]}`?)"
    known = ", ".join(sorted(properties)[:12])
    return f"{message} (known fields: {known}{', ...' if len(properties) > 12 else ''})"


def _validate_scalar(value: Any, schema: Mapping[str, Any], expected: str, path: tuple[str | int, ...]
                     ) -> Iterator[SchemaProblem]:
    checks = {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
    }
    if not checks.get(expected, True):
        yield SchemaProblem(path, f"must be a {expected}, not {_type_name(value)} ({value!r})")
        return
    if isinstance(value, str) and _UNRESOLVED.search(value):
        return  # `auth.${SECRET_DOMAIN}`: its final text, and so its pattern, enum and length, is known at apply time
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        yield SchemaProblem(path, f"must be one of {', '.join(map(str, enum))}, not {value!r}")
    pattern = schema.get("pattern")
    if pattern and isinstance(value, str):
        try:
            if re.search(pattern, value) is None:
                yield SchemaProblem(path, f"{value!r} does not match the pattern {pattern}")
        except re.error:
            pass  # a Go RE2 construct Python does not read; the API server will still check it
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is not None and schema.get("minimum") is not None and number < schema["minimum"]:
        yield SchemaProblem(path, f"must be at least {schema['minimum']}, not {number}")
    if number is not None and schema.get("maximum") is not None and number > schema["maximum"]:
        yield SchemaProblem(path, f"must be at most {schema['maximum']}, not {number}")
    if isinstance(value, str) and schema.get("minLength") is not None and len(value) < schema["minLength"]:
        yield SchemaProblem(path, f"must be at least {schema['minLength']} characters long")
    if isinstance(value, str) and schema.get("maxLength") is not None and len(value) > schema["maxLength"]:
        yield SchemaProblem(path, f"must be at most {schema['maxLength']} characters long")


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def _command(args: Any) -> int:
    for folder in fetch_crds():
        print(f"{folder}  ({(folder / _STAMP).read_text().strip()})")
    return 0


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "schemas", help="fetch the pinned CRD schemas into the cache",
        description="Fetch the CRDs of the modules pinned in restoredrill/pins.toml (Velero, CloudNativePG, Flux, "
                    "Gateway API) from the Go module proxy into the cache, for the static suite's crd-schema rule.")
    parser.set_defaults(func=_command)
