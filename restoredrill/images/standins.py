"""Stand-ins for the apps' own images on the local provider, where nothing can be pulled.

An app's image is replaced, under its own reference, by a small image that keeps what a restore
drill touches: the pod starts, its probes pass on every port the manifests declare (an HTTP 200 on
any path, which also satisfies tcpSocket probes), and it has a shell (busybox) for `kubectl exec`.
The app's data is what the drill seeds into its volumes; the stand-in never writes to them, so
checksums taken while it runs are stable. Databases are not stood in when the container names
the platform's own image (MariaDB `docker.io/library/mariadb:11.4.5`): that one is real, built
by the platform. Only that exact image counts: `ghcr.io/someone/mariadb:11` or `mariadb:10.6` is
the app's own image, and gets a stand-in whose report line says that no database runs in it.

Which images, and which ports, are read from the catalogue: any repo's apps get stand-ins, not
only the bundled example's. `AppImageLoader` loads an app's images the first time a drill of
that app is made, so a session that drills one app of forty builds one app's images.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from restoredrill.catalogue import App, Catalogue, Workload, dig
from restoredrill.errors import MissingToolError
from restoredrill.images import busybox_tree
from restoredrill.images.oci import FileEntry, ImageSpec, write_oci_archive
from restoredrill.pins import cache_dir
from restoredrill.process import run
from restoredrill.timeouts import timeout
from restoredrill.velero_semantics import database_engine, runs_database_server

STANDIN_PATH = "/usr/local/bin/restoredrill-standin"
# Ports an image listens on when its manifests declare none.
DEFAULT_PORTS = (8080,)

STANDIN_MAIN_GO = """\
// restoredrill app stand-in: answers HTTP 200 on every path of every port in STANDIN_PORTS.
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	image := os.Getenv("STANDIN_IMAGE")
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "restoredrill stand-in for %s: %s %s\\n", image, r.Method, r.URL.Path)
	})
	for _, port := range strings.Split(os.Getenv("STANDIN_PORTS"), ",") {
		if port = strings.TrimSpace(port); port == "" {
			continue
		}
		go func(addr string) {
			if err := http.ListenAndServe(addr, handler); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}(":" + port)
	}
	fmt.Printf("restoredrill stand-in for %s listening on %s\\n", image, os.Getenv("STANDIN_PORTS"))
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
"""


@dataclass(frozen=True)
class StandIn:
    """One image to stand in for: its reference and the ports its containers declare."""

    reference: str
    ports: tuple[int, ...]


def _app_template_service_ports(workload: Workload) -> set[int]:
    """Ports of the Services an app-template HelmRelease defines for this controller: the chart's
    default probes are TCP checks of the primary one (`targetPort`, else `port`); a service names
    its controller with `controller:` (optional when there is one controller)."""
    values = dig(workload.manifest.obj, ("spec", "values")) or {}
    services = values.get("service") if isinstance(values, dict) else None
    controllers = values.get("controllers") if isinstance(values, dict) else None
    controller = str(workload.pod_template_path[-1])
    ports: set[int] = set()
    if not isinstance(services, dict):
        return ports
    for service in services.values():
        if not isinstance(service, dict) or service.get("enabled") is False:
            continue
        target = service.get("controller")
        if target is not None and str(target) != controller:
            continue
        if target is None and isinstance(controllers, dict) and len(controllers) > 1:
            continue
        for port in (service.get("ports") or {}).values():
            if isinstance(port, dict):
                value = port.get("targetPort", port.get("port"))
                if isinstance(value, int):
                    ports.add(value)
    return ports


def _container_ports(workload: Workload, container_path: tuple[str | int, ...]) -> set[int]:
    container = dig(workload.manifest.obj, container_path)
    ports: set[int] = set()
    if not isinstance(container, dict):
        return ports
    if workload.manifest.kind == "HelmRelease":
        ports |= _app_template_service_ports(workload)
        for probe in ("liveness", "readiness", "startup"):  # app-template's `probes:` values
            for path in (("probes", probe, "port"), ("probes", probe, "spec", "httpGet", "port"),
                         ("probes", probe, "spec", "tcpSocket", "port")):
                value = dig(container, path)
                if isinstance(value, int):
                    ports.add(value)
    for port in container.get("ports") or []:
        if isinstance(port, dict) and isinstance(port.get("containerPort"), int):
            ports.add(port["containerPort"])
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        for kind in ("httpGet", "tcpSocket"):
            value = dig(container, (probe, kind, "port"))
            if isinstance(value, int):
                ports.add(value)
    return ports


DOCKER_HUB = "docker.io"


def canonical_reference(image: str) -> str:
    """The name containerd keeps `image` under, which is the one the kubelet looks up: Docker Hub
    and `library/` filled in, `:latest` when neither tag nor digest is given. `mariadb:11.4.5` and
    `docker.io/library/mariadb:11.4.5` are one image; `ghcr.io/someone/mariadb:11.4.5` is another; `app:1@sha256:D`
    is `docker.io/library/app@sha256:D`."""
    name, at, digest = image.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = (DOCKER_HUB if first == "index.docker.io" else first), rest
    else:
        registry, path = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if ":" not in path.rsplit("/", 1)[-1] and not at:
        path += ":latest"
    if at:
        # Tagged and digested (app-template's `tag: 2.17.1@sha256:...`): the kubelet's lookup keeps the
        # digest only (distribution/reference ParseDockerRef, as containerd's CRI localResolve calls it).
        head, _, last = path.rpartition("/")
        path = f"{head}/{last.partition(':')[0]}" if head else last.partition(":")[0]
    return f"{registry}/{path}{at}{digest}"


def _app_containers(catalogue: Catalogue, namespaces: set[str]) -> Iterable[tuple[Workload, str, set[int]]]:
    """(workload, canonical image, ports) of every container Flux deploys into `namespaces`."""
    for workload in catalogue.workloads:
        if workload.manifest.namespace not in namespaces or workload.manifest.deployed_by is None:
            continue
        for container in workload.containers:
            if container.image:
                yield workload, canonical_reference(container.image), _container_ports(workload,
                                                                                       container.field_path)


def _ports_by_image(catalogue: Catalogue) -> dict[str, set[int]]:
    """Ports of each image over every app of the repo: a stand-in is the same whichever app is
    drilled first, so loading it again for another app (or another xdist worker) changes nothing."""
    namespaces = {app.namespace for app in catalogue.apps}
    ports: dict[str, set[int]] = {}
    for _, reference, found in _app_containers(catalogue, namespaces):
        ports.setdefault(reference, set()).update(found)
    return ports


def standins_for(catalogue: Catalogue, apps: Iterable[App], *, provided: Iterable[str]) -> list[StandIn]:
    """Stand-ins for every container image of `apps` that is not in `provided` (real images), each
    under its canonical reference."""
    real = {canonical_reference(reference) for reference in provided}
    used = {reference for _, reference, _ in _app_containers(catalogue, {app.namespace for app in apps})}
    ports = _ports_by_image(catalogue)
    return [StandIn(reference, tuple(sorted(ports[reference])) or DEFAULT_PORTS)
            for reference in sorted(used - real)]


# The platform image that runs each database engine for real (restoredrill.platform.images).
PLATFORM_DATABASE_IMAGES = {"mysql": "mariadb", "postgresql": "postgresql"}


@dataclass(frozen=True)
class AppImages:
    """What one app's containers run on the local provider, and the report's lines about it."""

    app: str
    standins: tuple[StandIn, ...]
    platform: tuple[str, ...]  # logical names of the platform images its containers name exactly
    disclosures: tuple[str, ...]


def app_images(catalogue: Catalogue, app: App, *, platform: Mapping[str, str]) -> AppImages:
    """The images `app` runs. `platform` maps the logical names of the images the platform builds to
    their references; a container gets one of those only when it names exactly that image (after
    `canonical_reference`), any other image, database look-alikes included, gets a stand-in."""
    by_reference = {canonical_reference(reference): name for name, reference in platform.items()}
    containers = list(_app_containers(catalogue, {app.namespace}))
    standins = standins_for(catalogue, [app], provided=list(by_reference))
    names = sorted({by_reference[reference] for _, reference, _ in containers if reference in by_reference})
    lines = [f"app {app.name}: image {platform[name]} is the platform's {name} image, built locally"
             for name in names]
    for standin in standins:
        line = (f"app {app.name}: image {standin.reference} is a restoredrill stand-in serving ports "
                f"{', '.join(map(str, standin.ports))}")
        lookalike = [w for w, reference, _ in containers if reference == standin.reference]
        lines.append(line + _database_lookalike(standin.reference, lookalike, platform))
    return AppImages(app=app.name, standins=tuple(standins), platform=tuple(names), disclosures=tuple(lines))


def _database_lookalike(reference: str, workloads: list[Workload], platform: Mapping[str, str]) -> str:
    """What the report adds when a stood-in image looks like a database server's."""
    engine = database_engine(reference)
    if engine is None:
        return ""
    name = PLATFORM_DATABASE_IMAGES[engine]
    real = f"the platform's {name} image ({platform[name]})" if name in platform else f"the platform's {name} image"
    said = f"; it looks like a {engine} database image, but it is not {real}, so no database server runs in it"
    if engine == "mysql" and any(runs_database_server(kind=w.manifest.kind, image=reference) for w in workloads):
        return said + ": the drill's MySQL steps (seed, row checks, freeze hooks) have no server to talk to"
    return said + ": its volumes are verified as files only"


@dataclass
class AppImageLoader:
    """Puts into one cluster what drilled apps run, the first time each app is drilled: stand-ins for
    the apps' own images and the platform images (MariaDB) their containers name exactly.

    Once per app: a second drill of the app (its CNPG options, a fault test) loads nothing and gets
    the same disclosures. Builds and loads hold `lock_path`: xdist workers, each with a loader of its
    own, share the image cache and the node's containerd (an image loaded twice is the same image).
    A new cluster (the full-cluster recovery's) needs a loader of its own.
    """

    catalogue: Catalogue
    platform: Mapping[str, str]  # logical name -> reference, of the images the platform can build
    load_images: Callable[[dict[str, Path]], None]  # the cluster provider's
    build_standins: Callable[[list[StandIn]], dict[str, Path]]
    build_platform_images: Callable[[list[str]], dict[str, Path]]
    lock_path: Path
    out: Callable[[str], None] = print
    apps: dict[str, AppImages] = field(default_factory=dict)  # app -> what was loaded for it
    loaded_standins: set[str] = field(default_factory=set)  # canonical references
    loaded_platform: set[str] = field(default_factory=set)  # logical names

    def load(self, app: App) -> list[str]:
        """Make sure `app`'s images are in the cluster; the report's lines about them."""
        if app.name not in self.apps:
            images = app_images(self.catalogue, app, platform=self.platform)
            standins = [s for s in images.standins if s.reference not in self.loaded_standins]
            names = [name for name in images.platform if name not in self.loaded_platform]
            if standins or names:
                self.out(f"[images] {app.name}: loading {len(standins)} stand-in image(s) and platform image(s) "
                         f"{', '.join(names) or '(none)'}")
                self.lock_path.parent.mkdir(parents=True, exist_ok=True)
                with FileLock(str(self.lock_path)):
                    if standins:
                        self.load_images(self.build_standins(standins))
                    if names:
                        self.load_images(self.build_platform_images(names))
            self.loaded_standins.update(s.reference for s in standins)
            self.loaded_platform.update(names)
            self.apps[app.name] = images
        return list(self.apps[app.name].disclosures)


def standin_binary(*, cache: Path | None = None) -> Path:
    """The stand-in server, built once with the local Go toolchain (standard library only)."""
    return go_program_binary(STANDIN_MAIN_GO, name="app-standin", binary="restoredrill-standin", cache=cache)


def go_program_binary(main_go: str | Mapping[str, str], *, name: str, binary: str,
                      cache: Path | None = None) -> Path:
    """A Go program of restoredrill's own, built static with the local toolchain into
    `CACHE/bin/NAME-DIGEST/BINARY`, the digest being the sources': a changed program is a new
    binary, an unchanged one is never rebuilt.

    `main_go` is one file of standard library code (it builds with no download), or the program's
    files by name; a `go.mod` among them (with its `go.sum`) names the modules it needs, which the
    Go module proxy serves once and Go's module cache keeps."""
    sources = {"main.go": main_go} if isinstance(main_go, str) else dict(main_go)
    sources.setdefault("go.mod", f"module restoredrill.local/{name}\n\ngo 1.22\n")
    digest = program_digest(sources)
    out = (cache or cache_dir()) / "bin" / f"{name}-{digest}" / binary
    if out.is_file():
        return out
    from shutil import which

    go = which("go")
    if go is None:
        raise MissingToolError("go", remedy="install Go 1.24 or newer and put `go` on PATH")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"restoredrill-{name}-") as scratch:
        source = Path(scratch)
        for file_name, text in sources.items():
            (source / file_name).write_text(text)
        # One partial per process: two builders racing each rename a complete binary into place.
        partial = out.with_name(f".{binary}.{os.getpid()}.partial")
        run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "."], cwd=source,
            timeout=timeout("image_build"),
            env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"})
        partial.replace(out)
    return out


def program_digest(sources: Mapping[str, str]) -> str:
    """12 hex digits of a program's files (names and contents): its binary's and image's version."""
    digest = hashlib.sha256()
    for file_name in sorted(sources):
        digest.update(f"{file_name}\0{len(sources[file_name])}\0".encode())
        digest.update(sources[file_name].encode())
    return digest.hexdigest()[:12]


def standin_image(standin: StandIn, *, binary: Path) -> ImageSpec:
    return ImageSpec(
        reference=standin.reference, entries=(FileEntry(STANDIN_PATH, source=binary), *busybox_tree()),
        entrypoint=(STANDIN_PATH,),
        env=("PATH=/usr/local/bin:/bin", f"STANDIN_IMAGE={standin.reference}",
             "STANDIN_PORTS=" + ",".join(map(str, standin.ports))),
    )


def archive_name(reference: str) -> str:
    return "standin-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", reference) + ".tar"


def build_standin_images(standins: Iterable[StandIn], *, cache: Path | None = None) -> dict[str, Path]:
    """OCI archives of the stand-ins in `CACHE/images/`, rebuilt only when their spec changed."""
    root = cache or cache_dir()
    binary = standin_binary(cache=root)
    archives: dict[str, Path] = {}
    for standin in standins:
        spec = standin_image(standin, binary=binary)
        archive = root / "images" / archive_name(standin.reference)
        key = f"{standin.reference} {standin.ports} {binary}"
        sidecar = archive.with_suffix(".json")
        if not (archive.is_file() and sidecar.is_file() and sidecar.read_text() == key):
            archive.parent.mkdir(parents=True, exist_ok=True)
            write_oci_archive(spec, archive)
            sidecar.write_text(key)
        archives[standin.reference] = archive
    return archives


def provided_references(images: Mapping[str, str]) -> set[str]:
    """Real images the platform builds (databases): never stood in."""
    return set(images.values())
