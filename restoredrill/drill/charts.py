"""Helm charts for the repo's HelmReleases, served inside the drill cluster (`--charts-dir`).

A HelmRelease names its chart through a source: `spec.chart.spec.sourceRef` (a HelmRepository,
plain HTTP or `type: oci`; a GitRepository or Bucket holds the chart itself) or `spec.chartRef`
(an OCIRepository). Where the cluster cannot reach those registries (no egress, this machine),
the user gives the packaged charts (`helm pull` writes `NAME-VERSION.tgz`) and the drill serves
them from its chart server (restoredrill.images.chartserver) as the same kinds of source:
- every HelmRepository of `type: default` points at the chart server's Helm repository
  (`/helm/index.yaml`, made here from the charts' own Chart.yaml, as `helm repo index` does);
- every HelmRepository of `type: oci` and every OCIRepository points at its OCI registry, at
  `charts/CHART` (a chart's OCI repository is named after the chart: the last path element),
  with the tag its version (`+` written `_`, as Helm pushes it) and the manifest Helm pushes
  (config `application/vnd.cncf.helm.config.v1+json`, one layer
  `application/vnd.cncf.helm.chart.content.v1.tar+gzip`).
Credentials, TLS settings, cloud providers and signature verification of the real registries are
dropped (the chart server needs none and signs nothing), and a digest pin is replaced by the tag
when there is one. Every such change is disclosed.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from restoredrill.drill.chartschema import bundle_schemas
from restoredrill.errors import ConfigError

SOURCE_GROUP = "source.toolkit.fluxcd.io"
HELM_GROUP = "helm.toolkit.fluxcd.io"
CHART_SERVER = "chart-server"
OCI_NAMESPACE = "charts"
HELM_CONFIG_MEDIA_TYPE = "application/vnd.cncf.helm.config.v1+json"
HELM_LAYER_MEDIA_TYPE = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
# What a chart source may carry that points at the real registry's credentials, TLS or signatures.
_DROPPED_SOURCE_FIELDS = ("secretRef", "certSecretRef", "proxySecretRef", "provider", "verify", "passCredentials",
                          "serviceAccountName")
_SEMVER = re.compile(r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def chart_server_host(namespace: str = "flux-system") -> str:
    return f"{CHART_SERVER}.{namespace}.svc.cluster.local"


@dataclass(frozen=True)
class ChartPackage:
    """One packaged chart of `--charts-dir`."""

    name: str
    version: str
    path: Path
    metadata: Mapping[str, Any]  # its Chart.yaml
    data: bytes
    # What the drill changed in it to serve it offline (restoredrill.drill.chartschema), disclosed.
    notes: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}.tgz"


def read_chart_package(path: Path) -> ChartPackage:
    """The chart in `path` (a `.tgz` as `helm package`/`helm pull` write it); ConfigError naming the
    file and the fix when it is no chart."""
    remedy = (f"put packaged charts in the charts folder: `helm pull REPO/CHART --version V -d {path.parent}` or "
              f"`helm package CHART_DIR -d {path.parent}` (a .tgz holding CHART/Chart.yaml)")
    try:
        data = path.read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and len(PurePosixPath(m.name).parts) == 2
                       and PurePosixPath(m.name).name == "Chart.yaml"]
            if not members:
                raise ConfigError(f"{path}: no CHART/Chart.yaml in it, so it is no packaged Helm chart", remedy=remedy)
            extracted = tar.extractfile(members[0])
            metadata = yaml.safe_load(extracted.read() if extracted else b"") or {}
    except (OSError, tarfile.TarError, gzip.BadGzipFile, EOFError) as error:
        raise ConfigError(f"{path}: not a gzipped tar ({error})", remedy=remedy) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: its Chart.yaml is not YAML ({error})", remedy=remedy) from None
    if not isinstance(metadata, dict) or not metadata.get("name") or not metadata.get("version"):
        raise ConfigError(f"{path}: its Chart.yaml has no name or no version", remedy=remedy)
    return _offline(ChartPackage(name=str(metadata["name"]), version=str(metadata["version"]), path=path,
                                 metadata=metadata, data=data))


def _offline(package: ChartPackage) -> ChartPackage:
    """The package with its values schemas' remote refs served from its own files (disclosed)."""
    bundled = bundle_schemas(package.data)
    note = bundled.note(f"{package.name} {package.version}")
    if note is None:
        return package
    return dataclasses.replace(package, data=bundled.data, notes=(*package.notes, note))


def package_chart(folder: Path) -> bytes:
    """`helm package` of a chart folder, reproducibly: a gzipped tar of CHART/... (files sorted,
    times zero); `.helmignore` is not read."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, tarfile.open(fileobj=zipped, mode="w") as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(f"{folder.name}/{path.relative_to(folder).as_posix()}")
            data = path.read_bytes()
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_chart_folder(folder: Path) -> ChartPackage:
    """An unpackaged chart (a folder holding Chart.yaml), packaged as `helm package` would."""
    try:
        metadata = yaml.safe_load((folder / "Chart.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{folder / 'Chart.yaml'}: not readable as YAML ({error})",
                          remedy="fix the chart's Chart.yaml (helm lint)") from None
    if not isinstance(metadata, dict) or not metadata.get("name") or not metadata.get("version"):
        raise ConfigError(f"{folder / 'Chart.yaml'} has no name or no version", remedy="add both (helm lint)")
    if metadata["name"] != folder.name:
        raise ConfigError(f"{folder}: the chart's Chart.yaml names it {metadata['name']!r}, not its folder's name",
                          remedy=f"rename the folder to {metadata['name']} (helm package requires it)")
    return _offline(ChartPackage(name=str(metadata["name"]), version=str(metadata["version"]), path=folder,
                                 metadata=metadata, data=package_chart(folder)))


def read_charts_dir(folder: Path) -> list[ChartPackage]:
    """The charts of `folder`: packaged ones (`*.tgz`) and chart folders (`*/Chart.yaml`)."""
    if not folder.is_dir():
        raise ConfigError(f"the charts folder {folder} (charts_dir) does not exist",
                          remedy="pass a folder of packaged charts (.tgz) with --charts-dir")
    packages = [read_chart_package(path) for path in sorted(folder.glob("*.tgz"))]
    packages += [read_chart_folder(path.parent) for path in sorted(folder.glob("*/Chart.yaml"))]
    if not packages:
        raise ConfigError(f"the charts folder {folder} (charts_dir) holds no .tgz",
                          remedy=f"`helm pull REPO/CHART --version V -d {folder}` for each chart the HelmReleases use")
    seen: dict[tuple[str, str], Path] = {}
    for package in packages:
        earlier = seen.setdefault((package.name, package.version), package.path)
        if earlier != package.path:
            raise ConfigError(f"{folder}: chart {package.name} {package.version} is in both {earlier.name} and "
                              f"{package.path.name}", remedy="keep one of them")
    return packages


def oci_tag(version: str) -> str:
    """The OCI tag Helm pushes a chart version as (`+` is not allowed in tags)."""
    return version.replace("+", "_")


def helm_index(packages: Sequence[ChartPackage], *, created: str) -> dict[str, Any]:
    """A Helm repository index (`helm repo index`'s fields) of `packages`, their URLs relative."""
    entries: dict[str, list[dict[str, Any]]] = {}
    for package in packages:
        entry = {key: value for key, value in package.metadata.items()}
        entry.update({"apiVersion": package.metadata.get("apiVersion", "v1"), "name": package.name,
                      "version": package.version, "urls": [package.file_name],
                      "digest": package.digest.removeprefix("sha256:"), "created": created})
        entries.setdefault(package.name, []).append(entry)
    return {"apiVersion": "v1", "entries": entries, "generated": created}


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def oci_manifest(package: ChartPackage, *, created: str) -> tuple[bytes, dict[str, bytes]]:
    """The manifest Helm pushes for `package`, and its blobs by digest."""
    config_digest, config = _blob(json.dumps(dict(package.metadata), sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": HELM_CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": HELM_LAYER_MEDIA_TYPE, "digest": package.digest, "size": len(package.data)}],
        "annotations": {"org.opencontainers.image.title": package.name,
                        "org.opencontainers.image.version": package.version,
                        "org.opencontainers.image.created": created},
    }
    return json.dumps(manifest, sort_keys=True).encode(), {config_digest: config, package.digest: package.data}


def chart_layout_tar(packages: Sequence[ChartPackage], *, created: str = "1970-01-01T00:00:00Z") -> bytes:
    """The chart server's folder (`http/`, `oci/`) holding `packages`, as a tar to stream in."""
    files: dict[str, bytes] = {"http/index.yaml": yaml.safe_dump(helm_index(packages, created=created),
                                                                 sort_keys=False).encode()}
    for package in packages:
        files[f"http/{package.file_name}"] = package.data
        manifest, blobs = oci_manifest(package, created=created)
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        folder = f"oci/{OCI_NAMESPACE}/{package.name}/manifests"
        files[f"{folder}/{oci_tag(package.version)}"] = manifest
        files[f"{folder}/{digest}"] = manifest
        files.update({f"oci/blobs/{d}": data for d, data in blobs.items()})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(files[name]), 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue()


# ---- what the HelmReleases need -----------------------------------------------------------------
@dataclass(frozen=True)
class ChartNeed:
    """The chart one HelmRelease installs, and the source it names."""

    release: str  # "HelmRelease NS/NAME"
    chart: str
    version: str  # a version or a constraint as written ("*" when none is)
    source_kind: str
    source: str  # "NS/NAME"
    url: str | None  # the source's URL as the repo writes it, when the repo has the source
    where: str  # the HelmRelease's file

    @property
    def pull_command(self) -> str:
        version = "" if self.version in ("", "*") else f" --version '{self.version}'"
        if self.url and self.url.startswith("oci://"):
            base = self.url if self.source_kind == "OCIRepository" else f"{self.url.rstrip('/')}/{self.chart}"
            return f"helm pull {base}{version}"
        return f"helm pull {self.chart} --repo {self.url or 'URL'}{version}"

    def satisfied_by(self, packages: Iterable[ChartPackage]) -> bool:
        """Whether a package of this chart is there; an exact version must be there itself (a
        constraint is left to source-controller, which reports what it lacks)."""
        versions = [p.version for p in packages if p.name == self.chart]
        if _SEMVER.match(self.version.strip()):
            return self.version.strip().lstrip("v") in [v.lstrip("v") for v in versions]
        return bool(versions)


def _obj(manifest: Any) -> Mapping[str, Any]:
    obj = manifest.obj if hasattr(manifest, "obj") else manifest
    return obj if isinstance(obj, Mapping) else {}


def _sources(manifests: Iterable[Any]) -> dict[tuple[str, str, str], Any]:
    found = {}
    for manifest in manifests:
        obj = _obj(manifest)
        if str(obj.get("apiVersion", "")).startswith(f"{SOURCE_GROUP}/") and obj.get("kind") in (
                "HelmRepository", "OCIRepository", "GitRepository", "Bucket"):
            metadata = obj.get("metadata") or {}
            namespace = getattr(manifest, "namespace", None) or metadata.get("namespace") or "flux-system"
            found[(str(obj["kind"]), str(namespace), str(metadata.get("name")))] = manifest
    return found


def release_source(release: Mapping[str, Any], *, namespace: str) -> tuple[str, str, str] | None:
    """(kind, namespace, name) of the source a HelmRelease's chart comes from."""
    spec = release.get("spec") or {}
    ref = spec.get("chartRef") or ((spec.get("chart") or {}).get("spec") or {}).get("sourceRef")
    if not isinstance(ref, dict) or not ref.get("name"):
        return None
    return str(ref.get("kind") or "HelmRepository"), str(ref.get("namespace") or namespace), str(ref["name"])


def chart_needs(manifests: Sequence[Any]) -> list[ChartNeed]:
    """What every HelmRelease among `manifests` (catalogue Manifests or plain objects) installs from a
    HelmRepository or an OCIRepository (charts held in a GitRepository or Bucket need no serving)."""
    sources = _sources(manifests)
    needs = []
    for manifest in manifests:
        release = _obj(manifest)
        is_release = release.get("kind") == "HelmRelease"
        if not (is_release and str(release.get("apiVersion", "")).startswith(f"{HELM_GROUP}/")):
            continue
        metadata = release.get("metadata") or {}
        namespace = str(getattr(manifest, "namespace", None) or metadata.get("namespace") or "default")
        ref = release_source(release, namespace=namespace)
        if ref is None or ref[0] not in ("HelmRepository", "OCIRepository"):
            continue
        source = sources.get(ref)
        source_obj = _obj(source) if source is not None else {}
        url = (source_obj.get("spec") or {}).get("url")
        spec = release.get("spec") or {}
        if ref[0] == "OCIRepository":
            chart = PurePosixPath(str(url or ref[2])).name
            source_ref = (source_obj.get("spec") or {}).get("ref") or {}
            version = str(source_ref.get("tag") or source_ref.get("semver") or "*")
        else:
            chart_spec = (spec.get("chart") or {}).get("spec") or {}
            chart, version = str(chart_spec.get("chart", "")), str(chart_spec.get("version") or "*")
        path = getattr(manifest, "path", None)
        needs.append(ChartNeed(release=f"HelmRelease {namespace}/{metadata.get('name')}", chart=chart,
                               version=version, source_kind=ref[0], source=f"{ref[1]}/{ref[2]}",
                               url=str(url) if url else None, where=str(path) if path else "(applied object)"))
    return needs


def missing_charts_error(needs: Sequence[ChartNeed], packages: Sequence[ChartPackage], *,
                         charts_dir: Path | None, offline: bool) -> ConfigError | None:
    """The error to stop a drill with when its HelmReleases need charts the drill cannot serve and the
    cluster cannot fetch; None when nothing is missing."""
    if charts_dir is None and not offline:
        return None
    missing = [need for need in needs if not need.satisfied_by(packages)]
    if not missing:
        return None
    folder = charts_dir or Path("CHARTS_DIR")
    lines = [f"{need.release} ({need.where}) installs chart {need.chart} {need.version} from {need.source_kind} "
             f"{need.source}" + (f" ({need.url})" if need.url else " (not in the repo)") for need in missing]
    why = (f"the charts folder {charts_dir} does not hold them" if charts_dir is not None else
           "this drill cluster reaches no registry (offline) and no charts folder was given (--charts-dir)")
    commands = sorted({f"{need.pull_command} -d {folder}" for need in missing})
    return ConfigError("; ".join(lines) + f": {why}",
                       remedy="fetch the packaged charts on a machine with internet and pass the folder with "
                              "--charts-dir (or charts_dir in the drill config): " + "; ".join(commands))


# ---- pointing the sources at the chart server ----------------------------------------------------
def serve_chart_sources(documents: list[Any], *, host: str) -> list[str]:
    """Point the HelmRepository and OCIRepository objects in `documents` at the chart server `host`
    (in place); what was changed. HelmReleases lose signature verification of their chart."""
    changed = []
    for doc in documents:
        if not isinstance(doc, dict) or not str(doc.get("apiVersion", "")).startswith(
                (f"{SOURCE_GROUP}/", f"{HELM_GROUP}/")):
            continue
        kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
        spec = doc.get("spec")
        if not isinstance(spec, dict):
            continue
        if kind == "HelmRelease":
            chart_spec = (spec.get("chart") or {}).get("spec")
            if isinstance(chart_spec, dict) and chart_spec.pop("verify", None) is not None:
                changed.append(f"HelmRelease {name}: spec.chart.spec.verify removed (the drill's chart server serves "
                               "unsigned charts)")
            continue
        if kind not in ("HelmRepository", "OCIRepository"):
            continue
        before = str(spec.get("url", ""))
        dropped = [key for key in _DROPPED_SOURCE_FIELDS if spec.pop(key, None) is not None]
        if kind == "HelmRepository" and spec.get("type") != "oci":
            spec["url"] = f"http://{host}/helm/"
        elif kind == "HelmRepository":
            spec["url"], spec["insecure"] = f"oci://{host}/{OCI_NAMESPACE}", True
        else:
            spec["url"], spec["insecure"] = f"oci://{host}/{OCI_NAMESPACE}/{PurePosixPath(before).name}", True
            ref = spec.get("ref")
            if isinstance(ref, dict) and ref.get("digest"):
                if not (ref.get("tag") or ref.get("semver")):
                    raise ConfigError(f"OCIRepository {name}: spec.ref pins digest {ref['digest']} only; the drill's "
                                      "chart server serves charts by version, and the digest of a chart it "
                                      "repackages differs", remedy="add spec.ref.tag with the chart's version")
                dropped.append(f"ref.digest {ref.pop('digest')}")
        disclosed = f"; {', '.join(dropped)} dropped" if dropped else ""
        changed.append(f"{kind} {name}: {before} served by the drill's chart server as {spec['url']} (the charts "
                       f"of --charts-dir){disclosed}")
    return changed


def served_source(manifest: Any, *, host: str) -> tuple[dict[str, Any], list[str]]:
    """A copy of one source object pointed at the chart server, and what was changed."""
    body = copy.deepcopy(dict(_obj(manifest)))
    return body, serve_chart_sources([body], host=host)


def chart_server_manifests(image: str, *, namespace: str = "flux-system", root: str = "/srv/charts"
                           ) -> list[dict[str, Any]]:
    pod_labels = {"app.kubernetes.io/name": CHART_SERVER, "app.kubernetes.io/part-of": "restoredrill"}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": CHART_SERVER, "namespace": namespace, "labels": pod_labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": CHART_SERVER}},
                  "template": {"metadata": {"labels": pod_labels}, "spec": {
                      "containers": [{"name": CHART_SERVER, "image": image, "imagePullPolicy": "IfNotPresent",
                                      "ports": [{"name": "http", "containerPort": 8080}],
                                      "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                                                         "periodSeconds": 2},
                                      "volumeMounts": [{"name": "charts", "mountPath": root}]}],
                      "volumes": [{"name": "charts", "emptyDir": {}}],
                      "terminationGracePeriodSeconds": 1}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": CHART_SERVER, "namespace": namespace, "labels": pod_labels},
         "spec": {"selector": {"app.kubernetes.io/name": CHART_SERVER},
                  "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
    ]
