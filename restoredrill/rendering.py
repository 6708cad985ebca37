"""What a HelmRelease deploys, rendered from its chart, so any chart's pods and claims are known.

Without the chart, the catalogue can read a HelmRelease's workloads and claims only where its
values spell them out (bjw-s app-template: `controllers`, `persistence`). Every other chart
(pocket-id's, home-assistant's, an operator's) keeps its StatefulSets, images, ports and
volumeClaimTemplates in its templates. Given the chart (`--charts-dir`), the release is rendered
as helm-controller v1.4.3 would install it, with the Helm library it links (helm.sh/helm/v3
v3.19.0, through restoredrill's Go program `chart-render`):
- release name `spec.releaseName`, else `TARGETNAMESPACE-NAME` when `spec.targetNamespace` is
  set, else the HelmRelease's name, shortened past 53 characters as `release.ShortenName` does;
  namespace `spec.targetNamespace`, else the HelmRelease's own (`GetReleaseName`,
  `GetReleaseNamespace`);
- values: every `spec.valuesFrom` the repo holds in clear (a ConfigMap, or a Secret that is not
  SOPS-encrypted), in order, then `spec.values` merged over them, as fluxcd/pkg's
  `chartutil.ChartValuesFromReferences` does (`MergeMaps`: maps merge, lists and scalars replace,
  YAML read as sigs.k8s.io/yaml reads it), a `targetPath` reference's text set at its path as
  `helm --set` sets it (`ReplacePathValue`); a reference it cannot read (an encrypted or external
  Secret, a missing key, a value with a comma at a `targetPath`) is left out and named;
- the install's hooks (unless `spec.install.disableHooks`) and its schema validation (unless
  `spec.install.disableSchemaValidation`);
- the chart's own defaults, its dependencies' conditions, its values.schema.json and kubeVersion,
  all applied by the Helm library itself; `lookup` sees no cluster, as in `helm template`.
The rendered workloads and claims replace what the values alone suggested for that release;
`spec.chart.spec.valuesFiles` replace the chart's default values as source-controller does;
`spec.postRenderers` are not applied (named when a release has them), and
`.Capabilities.APIVersions` is Helm's default set (a template gated on a CRD's API takes its
other branch).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import posixpath
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from restoredrill.catalogue import (
    HELM_GROUP,
    Catalogue,
    Manifest,
    VolumeClaim,
    Workload,
    _volume_claims,
    _workloads,
)
from restoredrill.drill.charts import ChartPackage, chart_needs, read_chart_folder
from restoredrill.errors import CommandError, ConfigError
from restoredrill.pins import cache_dir, module_pins
from restoredrill.process import run
from restoredrill.timeouts import timeout
from restoredrill.yamlio import Document

GO_DIR = Path(__file__).parent / "images" / "go" / "chartrender"
HELM_LIBRARY = "helm.sh/helm/v3 v3.19.0"  # what helm-controller v1.4.3's go.mod requires
MAX_RELEASE_NAME = 53


def release_name(release: Mapping[str, Any]) -> str:
    """helm-controller's `GetReleaseName` then `release.ShortenName`."""
    metadata, spec = release.get("metadata") or {}, release.get("spec") or {}
    name = str(spec.get("releaseName") or "")
    if not name:
        target = spec.get("targetNamespace")
        name = f"{target}-{metadata.get('name')}" if target else str(metadata.get("name"))
    if len(name) <= MAX_RELEASE_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()
    return name[:MAX_RELEASE_NAME - 13] + "-" + digest[:12]


def release_namespace(release: Mapping[str, Any], *, namespace: str) -> str:
    return str((release.get("spec") or {}).get("targetNamespace") or namespace)


def merge_values(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's `MergeMaps`: maps merge key by key, anything else in `overlay` replaces; a copy that
    shares nothing with either side."""
    return copy.deepcopy(_merge_maps_sharing(dict(base), overlay))


def _merge_maps_sharing(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """fluxcd/pkg `transform.MergeMaps` as Go runs it: a new map at each level both sides hold a map,
    every other value of `overlay` taken as the same object, not a copy. That sharing decides which
    side a `targetPath` wins against: where the inline values' own map or list is taken into the
    values and `ReplacePathValue` changes it in place, the inline values merged last carry the change."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_maps_sharing(out[key], value)
        else:
            out[key] = value
    return out


def release_values(release: Manifest, manifests: Iterable[Manifest]) -> tuple[dict[str, Any], list[str]]:
    """The values helm-controller would compose, and what of them could not be read here."""
    namespace = release.namespace or "default"
    by_ref = {(m.kind, m.namespace, m.name): m for m in manifests
              if m.group == "" and m.kind in ("ConfigMap", "Secret")}
    # helm-controller passes a fresh copy of spec.values (GetValues) that the composition may change.
    inline_spec = release.get("spec", "values")
    inline: dict[str, Any] = copy.deepcopy(inline_spec) if isinstance(inline_spec, dict) else {}
    values: dict[str, Any] = {}
    missing: list[str] = []
    for ref in release.get("spec", "valuesFrom") or []:
        if not isinstance(ref, dict):
            continue
        kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
        key = str(ref.get("valuesKey") or "values.yaml")
        source = by_ref.get((kind, namespace, name))
        label = f"{kind} {namespace}/{name} key {key}"
        if source is None or source.encrypted:
            why = "encrypted in the repo" if source is not None else "not in the repo"
            missing.append(f"valuesFrom {label} left out ({why}{', optional' if ref.get('optional') else ''})")
            continue
        text = _secret_or_config_value(source, key)
        if text is None:
            why = "optional" if ref.get("optional") else "helm-controller fails the release without it"
            missing.append(f"valuesFrom {label} left out (no such key; {why})")
            continue
        if ref.get("targetPath"):
            # fluxcd/pkg chartutil v1.15.0 ChartValuesFromReferences: the inline values are merged in
            # first, then the key's text is set at the path as `helm --set` would (ReplacePathValue).
            values = _merge_maps_sharing(values, inline)
            problem = replace_path_value(values, str(ref["targetPath"]), str(text))
            if problem:
                missing.append(f"valuesFrom {label} left out (targetPath {ref['targetPath']}: {problem})")
            continue
        parsed = _load_values(text)
        if not isinstance(parsed, dict):
            missing.append(f"valuesFrom {label} left out (not a YAML map: helm-controller fails the release)")
            continue
        values = _merge_maps_sharing(values, parsed)
    return copy.deepcopy(_merge_maps_sharing(values, inline)), missing


def _typed(value: str) -> Any:
    """helm v3 strvals typedVal: what `--set` makes of a value."""
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if value == "0":
        return 0
    if value and value[0] != "0" and re.fullmatch(r"[+-]?[0-9]+", value):
        number = int(value)
        if -(2 ** 63) <= number < 2 ** 63:
            return number
    return value


class _SetRefused(Exception):
    """What helm's strvals parser fails on (helm-controller then fails the release)."""


_MAX_INDEX = 65536  # strvals MaxIndex


def _unescape(text: str) -> str:
    """strvals runesUntil: a backslash takes the next character as it is."""
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def _set_path(path: str) -> list[str | int]:
    """A `--set` key (`a.b`, `list[0].c`, `a\\.b`) as names and list indices."""
    parts: list[str | int] = []
    for key in re.split(r"(?<!\\)\.", path):
        match = re.fullmatch(r"((?:[^\[\]\\]|\\.)*)((?:\[[0-9]+\])*)", key, flags=re.DOTALL)
        if match is None or not match.group(1):
            raise ValueError(f"path {path!r} is not a --set path this renders")
        parts.append(_unescape(match.group(1)))
        parts += [int(i) for i in re.findall(r"\[([0-9]+)\]", match.group(2))]
    return parts


def _set_index(items: list[Any], index: int, value: Any) -> list[Any]:
    """strvals setIndex: in place within the list, else a new list padded with nulls."""
    if index > _MAX_INDEX:
        raise _SetRefused(f"index of {index} is greater than maximum supported index of {_MAX_INDEX}")
    if len(items) <= index:
        items = items + [None] * (index + 1 - len(items))
    items[index] = value
    return items


def _set_key(data: dict[str, Any], parts: list[str | int], leaf: Any) -> None:
    """strvals parser.key for one assignment: walk and create maps and lists as `--set` does."""
    name, rest = str(parts[0]), parts[1:]
    if not rest:
        data[name] = leaf
    elif isinstance(rest[0], int):
        if name in data and not isinstance(data[name], list):
            raise _SetRefused(f"{name!r} is not a list here")
        data[name] = _set_list_item(data.get(name, []), rest[0], rest[1:], leaf)
    else:
        if name in data and not isinstance(data[name], dict):
            raise _SetRefused(f"{name!r} is not a map here")
        inner = data.get(name, {})  # the map itself, changed in place as strvals changes it
        _set_key(inner, rest, leaf)
        data[name] = inner


def _set_list_item(items: list[Any], index: int, rest: list[str | int], leaf: Any) -> list[Any]:
    """strvals parser.listItem."""
    if not rest:
        return _set_index(items, index, leaf)
    if isinstance(rest[0], int):
        current = items[index] if len(items) > index else None
        if current is not None and not isinstance(current, list):
            raise _SetRefused(f"entry {index} is not a list here")
        return _set_index(items, index, _set_list_item(current or [], rest[0], rest[1:], leaf))
    inner: dict[str, Any] = {}
    if len(items) > index:
        if not isinstance(items[index], dict):  # strvals replaces an entry that is not a map
            items[index] = {}
        inner = items[index]
    _set_key(inner, rest, leaf)
    return _set_index(items, index, inner)


def replace_path_value(values: dict[str, Any], path: str, value: str) -> str | None:
    """Set `value` at `path` in `values`, in place, as fluxcd/pkg chartutil v1.15.0 ReplacePathValue
    does through helm v3.19.0's strvals parser (`--set path=value`): a value in quotes is a string,
    any other is typed as `--set` types it, `{a,b}` is a list, a backslash escapes the next
    character, a list is padded with nulls up to the index. None when set, else why it is not:
    what helm's parser refuses (helm-controller then fails the release), or a value with an
    unescaped comma, which `--set` splits into further assignments and is not rendered here."""
    as_string = bool(value) and value[0] in "'\"" and value.endswith(value[0])
    if as_string:
        value = value.strip("'\"")
    try:
        parts = _set_path(path)
    except ValueError as err:
        return str(err)
    items = re.fullmatch(r"\{((?:[^{}\\]|\\.)*)\}", value, flags=re.DOTALL)
    body = items.group(1) if items else value
    pieces = re.split(r"(?<!\\),", body)
    if not items and len(pieces) > 1:
        return "a value with a comma is split by helm's --set parser; not rendered here"
    typed = [_unescape(p) if as_string else _typed(_unescape(p)) for p in pieces]
    try:
        _set_key(values, parts, typed if items else typed[0])
    except _SetRefused as err:
        return f"helm's --set parser refuses it ({err}); helm-controller fails the release"
    return None


def values_files_defaults(release: Manifest, package: ChartPackage, *, root: Path,
                          from_repo: bool) -> tuple[dict[str, Any], list[str]]:
    """The chart's default values as source-controller rewrites them for `spec.chart.spec.valuesFiles`
    (and what could not be read): each file in order merged over the ones before (`MergeMaps`), read
    from the chart archive (`values.yaml` is the chart's own; builder_remote.go mergeChartValues) or,
    for a chart of this repo's GitRepository, relative to the repo's root (builder_local.go
    mergeFileValues). An empty result leaves the chart's values.yaml as it is."""
    paths = release.get("spec", "chart", "spec", "valuesFiles") or []
    if not isinstance(paths, list) or not paths:
        return {}, []
    ignore_missing = bool(release.get("spec", "chart", "spec", "ignoreMissingValuesFiles"))
    files = {} if from_repo else _archive_files(package.data)
    merged: dict[str, Any] = {}
    notes: list[str] = []
    for path in map(str, paths):
        clean = posixpath.normpath(path)
        if from_repo:
            file = (root / clean).resolve()
            text = file.read_text(errors="replace") if root.resolve() in file.parents and file.is_file() else None
        else:
            text = files.get(clean)
        if text is None:
            if not ignore_missing:
                notes.append(f"spec.chart.spec.valuesFiles {path} not found in the "
                             f"{'repo' if from_repo else 'chart'}: source-controller fails the chart without it")
            continue
        try:
            parsed = _load_values(text)
        except yaml.YAMLError as error:
            notes.append(f"spec.chart.spec.valuesFiles {path} left out (not YAML: source-controller fails the chart: "
                         f"{str(error).splitlines()[0]})")
            continue
        if not isinstance(parsed, dict):
            notes.append(f"spec.chart.spec.valuesFiles {path} left out (not a YAML map: source-controller fails "
                         "the chart)")
            continue
        merged = merge_values(merged, parsed)
    return merged, notes


def _archive_files(data: bytes) -> dict[str, str]:
    """A packaged chart's files by their path in the chart (the archive's top folder dropped)."""
    found: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            parts = member.name.split("/", 1)
            stream = archive.extractfile(member) if member.isfile() and len(parts) == 2 else None
            if stream is not None:
                found[posixpath.normpath(parts[1])] = stream.read().decode(errors="replace")
    return found


def _secret_or_config_value(source: Manifest, key: str) -> str | None:
    """A key of a ConfigMap's data, or of a Secret as the API server stores it (stringData over data)."""
    for field_name in ("stringData", "data") if source.kind == "Secret" else ("data",):
        data = source.get(field_name)
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str):
            return base64.b64decode(value).decode(errors="replace") if field_name == "data" and source.kind == \
                "Secret" else value
    return None


class _ValuesLoader(yaml.SafeLoader):
    """YAML as sigs.k8s.io/yaml reads values: timestamps stay strings."""


def _timestamp_as_string(loader: _ValuesLoader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


_ValuesLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_string)


def _load_values(text: str) -> Any:
    """chartutil.ReadValues: empty text is an empty map."""
    parsed = yaml.load(text, Loader=_ValuesLoader)  # a SafeLoader subclass
    return {} if parsed is None else parsed


@dataclass(frozen=True)
class RenderedRelease:
    release: Manifest
    package: ChartPackage
    manifests: tuple[Manifest, ...]  # the rendered objects, located at the HelmRelease's file
    notes: tuple[str, ...]  # what the rendering left out

    @property
    def label(self) -> str:
        return f"HelmRelease {self.release.namespace}/{self.release.name} ({self.package.name} {self.package.version})"


Renderer = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def chart_render_binary(*, out: Callable[[str], None] = print) -> Path:
    """restoredrill's chart-render program, built once from the Go module proxy."""
    from restoredrill.images.standins import go_program_binary, program_digest

    sources = {p.name: p.read_text() for p in sorted(GO_DIR.iterdir()) if p.is_file()}
    built = cache_dir() / "bin" / f"chart-render-{program_digest(sources)}" / "chart-render"
    if not built.is_file():
        out(f"[charts] building chart-render ({HELM_LIBRARY}, the library helm-controller links) from the Go "
            "module proxy: once, a few minutes on 2 cores when Go's caches are cold")
    return go_program_binary(sources, name="chart-render", binary="chart-render")


# Helm's schema loader failing on a remote $ref (helm v3.19 chartutil/jsonschema.go HTTPURLLoader).
REMOTE_SCHEMA = re.compile(r'failing loading "(https?://[^"]+)"')


def binary_renderer(binary: Path | Callable[[], Path]) -> Renderer:
    """Render with the chart-render program; given a callable, the program is built on first use."""
    def render(request: Mapping[str, Any]) -> Mapping[str, Any]:
        program = binary if isinstance(binary, Path) else binary()
        try:
            stdout = run([str(program)], input=json.dumps(request), timeout=timeout("image_build"))
        except CommandError as error:
            output = error.output.strip()
            remedy = ("fix the HelmRelease's values (or the chart) so `helm template` renders them, or leave the "
                      "chart out of --charts-dir")
            remote = REMOTE_SCHEMA.search(output)
            if remote:
                remedy = (f"the chart's values.schema.json loads {remote.group(1)} from the internet and no file "
                          "of the chart at the version it names holds it: vendor that chart version in the "
                          "chart's charts/ folder, or set spec.install.disableSchemaValidation (and "
                          "spec.upgrade's) on the HelmRelease")
            raise ConfigError(f"the chart {Path(str(request['chart'])).name} does not render for release "
                              f"{request['namespace']}/{request['name']}: {output}", remedy=remedy) from None
        parsed: Mapping[str, Any] = json.loads(stdout)
        return parsed
    return render


def _kube_version() -> str:
    return module_pins()["kubernetes"].version


def repo_sources(catalogue: Catalogue) -> frozenset[str]:
    """Names of the GitRepositories that are this repo: those the repo's own Kustomizations build from."""
    return frozenset(k.source[0] for k in catalogue.flux_kustomizations
                     if k.local_source and k.source_kind == "GitRepository")


def git_chart(catalogue: Catalogue, release: Manifest) -> ChartPackage | None:
    """The chart of a HelmRelease whose `chart.spec.sourceRef` is this repo's GitRepository: the
    folder `chart.spec.chart` names, packaged as source-controller packages it."""
    spec = release.get("spec", "chart", "spec") or {}
    ref = spec.get("sourceRef") if isinstance(spec, dict) else None
    if not isinstance(ref, dict) or ref.get("kind") != "GitRepository":
        return None
    if ref.get("name") not in repo_sources(catalogue):
        return None
    folder = (catalogue.root / str(spec.get("chart", ""))).resolve()
    if catalogue.root.resolve() not in folder.parents or not (folder / "Chart.yaml").is_file():
        return None
    try:
        return read_chart_folder(folder)
    except ConfigError:
        return None  # the folder's name differs from the chart's: helm-controller's own error, not ours


def _package_for(release: Manifest, manifests: Sequence[Manifest],
                 packages: Sequence[ChartPackage]) -> ChartPackage | None:
    needs = chart_needs([release, *manifests])
    if not needs:
        return None
    need = needs[0]
    versions = [p for p in packages if p.name == need.chart]
    exact = [p for p in versions if p.version.lstrip("v") == need.version.strip().lstrip("v")]
    if exact:
        return exact[0]
    return None


def render_releases(catalogue: Catalogue, packages: Sequence[ChartPackage], render: Renderer,
                    *, namespaces: Iterable[str] | None = None) -> list[RenderedRelease]:
    """Every deployed HelmRelease (of `namespaces`, when given) whose chart is among `packages`, rendered."""
    wanted = None if namespaces is None else set(namespaces)
    sources = [m for m in catalogue.manifests if m.group.startswith("source.toolkit.fluxcd.io")]
    rendered = []
    with tempfile.TemporaryDirectory(prefix="restoredrill-render-") as scratch:
        for release in catalogue.deployed():
            if release.group != HELM_GROUP or release.kind != "HelmRelease":
                continue
            namespace = release_namespace(release.obj, namespace=release.namespace or "default")
            if wanted is not None and namespace not in wanted:
                continue
            package, from_repo = _package_for(release, sources, packages), False
            if package is None:
                package, from_repo = git_chart(catalogue, release), True
            if package is None:
                continue
            chart = Path(scratch) / package.file_name
            if not chart.exists():
                chart.write_bytes(package.data)
            values, notes = release_values(release, catalogue.manifests)
            request = {"chart": str(chart), "name": release_name(release.obj), "namespace": namespace,
                       "values": values, "kubeVersion": _kube_version(),
                       "skipSchemaValidation": bool(release.get("spec", "install", "disableSchemaValidation"))}
            defaults, missing = values_files_defaults(release, package, root=catalogue.root,
                                                      from_repo=from_repo)
            notes += missing
            if defaults:
                request["defaultValues"] = defaults
            answer = render(request)
            # An install creates its hooks' objects too (pre-install Jobs, their claims), unless disableHooks.
            items = list(answer.get("manifests") or [])
            if not release.get("spec", "install", "disableHooks"):
                items += list(answer.get("hooks") or [])
            if release.get("spec", "postRenderers"):
                notes.append("spec.postRenderers not applied to the rendering")
            objects = []
            for item in items:
                for data in yaml.safe_load_all(str(item.get("content", ""))):
                    if not isinstance(data, dict) or not data.get("kind"):
                        continue
                    metadata = data.setdefault("metadata", {})
                    object_namespace = metadata.get("namespace") or namespace
                    objects.append(Manifest(
                        document=Document(path=release.path, index=release.document.index, line=release.document.line,
                                          data=data),
                        namespace=object_namespace, deployed_by=release.deployed_by))
            rendered.append(RenderedRelease(release=release, package=package, manifests=tuple(objects),
                                            notes=tuple(notes)))
    return rendered


def with_rendered_releases(catalogue: Catalogue, rendered: Sequence[RenderedRelease]) -> Catalogue:
    """The catalogue with each rendered release's workloads and claims in place of what its values suggested."""
    if not rendered:
        return catalogue
    releases = {id(r.release.document) for r in rendered}

    def from_release(item: Workload | VolumeClaim) -> bool:
        return id(item.manifest.document) in releases and item.manifest.kind == "HelmRelease"

    objects = [m for r in rendered for m in r.manifests]
    return replace(
        catalogue,
        workloads=tuple(w for w in catalogue.workloads if not from_release(w)) + tuple(
            w for m in objects for w in _workloads(m)),
        volume_claims=tuple(c for c in catalogue.volume_claims if not from_release(c)) + tuple(_volume_claims(objects)),
    )
