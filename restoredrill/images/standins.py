"""Stand-ins for the apps' own images on the local provider, where nothing can be pulled.

An app's image is replaced, under its own reference, by a small image that keeps what a restore
drill touches: the pod starts, its probes pass on every port the manifests declare (an HTTP 200 on
any path, which also satisfies tcpSocket probes), and it has a shell (busybox) for `kubectl exec`.
The app's data is what the drill seeds into its volumes; the stand-in never writes to them, so
checksums taken while it runs are stable. Databases are not stood in: MariaDB and PostgreSQL
are real (the platform's images).

Which images, and which ports, are read from the catalogue: any repo's apps get stand-ins, not
only the bundled example's.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from restoredrill.catalogue import App, Catalogue, Workload, dig
from restoredrill.errors import MissingToolError
from restoredrill.images import busybox_tree
from restoredrill.images.oci import FileEntry, ImageSpec, write_oci_archive
from restoredrill.pins import cache_dir
from restoredrill.process import run
from restoredrill.timeouts import timeout

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


def _container_ports(workload: Workload, container_path: tuple[str | int, ...]) -> set[int]:
    container = dig(workload.manifest.obj, container_path)
    ports: set[int] = set()
    if not isinstance(container, dict):
        return ports
    for port in container.get("ports") or []:
        if isinstance(port, dict) and isinstance(port.get("containerPort"), int):
            ports.add(port["containerPort"])
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        for kind in ("httpGet", "tcpSocket"):
            value = dig(container, (probe, kind, "port"))
            if isinstance(value, int):
                ports.add(value)
    return ports


def standins_for(catalogue: Catalogue, apps: Iterable[App], *, provided: Iterable[str]) -> list[StandIn]:
    """Stand-ins for every container image of `apps` that is not in `provided` (real images)."""
    real = set(provided)
    namespaces = {app.namespace for app in apps}
    ports: dict[str, set[int]] = {}
    for workload in catalogue.workloads:
        if workload.manifest.namespace not in namespaces or workload.manifest.deployed_by is None:
            continue
        for container in workload.containers:
            if not container.image or container.image in real:
                continue
            ports.setdefault(container.image, set()).update(_container_ports(workload, container.field_path))
    return [StandIn(reference, tuple(sorted(found)) or DEFAULT_PORTS) for reference, found in sorted(ports.items())]


def standin_binary(*, cache: Path | None = None) -> Path:
    """The stand-in server, built once with the local Go toolchain (standard library only)."""
    digest = hashlib.sha256(STANDIN_MAIN_GO.encode()).hexdigest()[:12]
    out = (cache or cache_dir()) / "bin" / f"app-standin-{digest}" / "restoredrill-standin"
    if out.is_file():
        return out
    from shutil import which

    go = which("go")
    if go is None:
        raise MissingToolError("go", remedy="install Go 1.24 or newer and put `go` on PATH")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="restoredrill-standin-") as scratch:
        source = Path(scratch)
        (source / "go.mod").write_text("module restoredrill.local/standin\n\ngo 1.22\n")
        (source / "main.go").write_text(STANDIN_MAIN_GO)
        partial = out.with_suffix(".partial")
        run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "."], cwd=source,
            timeout=timeout("image_build"),
            env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"})
        partial.rename(out)
    return out


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
