"""Images the drills run, built locally and imported into the cluster's containerd.

Nothing is pulled. Each logical image (``pause``, ``coredns``, ...) has a recipe that turns
toolchain binaries or Debian files into an `ImageSpec`; `LocalImageBuilder` writes it as an OCI
archive in the cache, and `import_archives` loads archives into containerd with
``ctr -n k8s.io images import``. The image *set* maps logical names to references per provider; on
the local provider the references are exactly upstream's, so manifests need no rewriting (pods use
``imagePullPolicy: IfNotPresent`` and find the imported image under that name).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from restoredrill.errors import CommandError, ConfigError, MissingToolError
from restoredrill.images.oci import DirEntry, FileEntry, ImageSpec, SymlinkEntry, write_oci_archive
from restoredrill.pins import cache_dir, load_pins
from restoredrill.timeouts import timeout
from restoredrill.toolchain.gobuild import GoToolchain

__all__ = ["IMAGE_RECIPES", "LocalImageBuilder", "image_set", "import_archives", "register_image"]

# Debian's busybox-static: one static binary with every applet, enough for shells, probes and the
# local-path-provisioner's helper pods.
BUSYBOX_BINARY = Path("/bin/busybox")
BUSYBOX_TAG = "1.35"


def _module_version(key: str) -> str:
    return str(load_pins()["modules"][key]["version"])


def _program_version(key: str) -> str:
    return str(load_pins()["programs"][key]["version"])


def image_set(provider: str) -> dict[str, str]:
    """Logical image name -> reference, for `provider`.

    Every provider uses upstream's references: on `local` the images are built here and imported
    under those names, elsewhere they are pulled. A provider that needs other names (a private
    mirror) would override entries here.
    """
    references = {
        "pause": f"registry.k8s.io/pause:{_program_version('pause')}",
        "coredns": f"registry.k8s.io/coredns/coredns:{_module_version('coredns')}",
        "local-path-provisioner": "docker.io/rancher/local-path-provisioner:"
        + _module_version("local-path-provisioner"),
        "busybox": f"docker.io/library/busybox:{BUSYBOX_TAG}",
    }
    if provider not in ("local", "kind", "existing"):
        raise ConfigError(f"no image set for provider {provider!r}", remedy="use local, kind or existing")
    return references


Recipe = Callable[[GoToolchain, str], ImageSpec]
IMAGE_RECIPES: dict[str, Recipe] = {}


def register_image(name: str) -> Callable[[Recipe], Recipe]:
    """Register how to build logical image `name` (other modules add Velero, MinIO, ...)."""

    def decorate(recipe: Recipe) -> Recipe:
        IMAGE_RECIPES[name] = recipe
        return recipe

    return decorate


def static_binary_image(reference: str, binary: Path, *, path: str, args: tuple[str, ...] = ()) -> ImageSpec:
    """A scratch image holding one static binary (and /tmp), run as its entrypoint."""
    return ImageSpec(
        reference=reference,
        entries=(FileEntry(path, source=binary), DirEntry("/tmp", mode=0o1777)),
        entrypoint=(path, *args),
    )


@register_image("pause")
def _pause(toolchain: GoToolchain, reference: str) -> ImageSpec:
    return static_binary_image(reference, toolchain.binary("pause"), path="/pause")


@register_image("coredns")
def _coredns(toolchain: GoToolchain, reference: str) -> ImageSpec:
    return static_binary_image(reference, toolchain.binary("coredns"), path="/coredns")


@register_image("local-path-provisioner")
def _local_path(toolchain: GoToolchain, reference: str) -> ImageSpec:
    # Upstream's Deployment runs `local-path-provisioner` from PATH.
    binary = toolchain.binary("local-path-provisioner")
    spec = static_binary_image(reference, binary, path="/usr/bin/local-path-provisioner")
    return ImageSpec(reference=spec.reference, entries=spec.entries, entrypoint=("local-path-provisioner",))


def busybox_applets(binary: Path = BUSYBOX_BINARY) -> list[str]:
    result = subprocess.run([str(binary), "--list"], capture_output=True, text=True,
                            timeout=timeout("host_command"))
    if result.returncode != 0:
        raise CommandError([str(binary), "--list"], returncode=result.returncode, output=result.stderr)
    return sorted(set(result.stdout.split()) - {"busybox"})


def busybox_tree() -> list[FileEntry | SymlinkEntry | DirEntry]:
    """A minimal userland: busybox with every applet in /bin, /tmp, /root, passwd and group."""
    if not BUSYBOX_BINARY.is_file():
        raise MissingToolError(str(BUSYBOX_BINARY), remedy="run `restoredrill toolchain` (installs busybox-static)")
    entries: list[FileEntry | SymlinkEntry | DirEntry] = [FileEntry("/bin/busybox", source=BUSYBOX_BINARY)]
    entries += [SymlinkEntry(f"/bin/{applet}", "busybox") for applet in busybox_applets()]
    entries += [
        DirEntry("/tmp", mode=0o1777),
        DirEntry("/root", mode=0o700),
        FileEntry("/etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
                  mode=0o644),
        FileEntry("/etc/group", data=b"root:x:0:\nnogroup:x:65534:\n", mode=0o644),
    ]
    return entries


@register_image("busybox")
def _busybox(toolchain: GoToolchain, reference: str) -> ImageSpec:
    return ImageSpec(reference=reference, entries=tuple(busybox_tree()), cmd=("sh",))


class LocalImageBuilder:
    """Builds image archives into `CACHE/images/`, skipping those whose inputs have not changed."""

    def __init__(self, *, toolchain: GoToolchain | None = None, cache: Path | None = None,
                 provider: str = "local") -> None:
        self.toolchain = toolchain or GoToolchain()
        self.cache = cache or cache_dir()
        self.references = image_set(provider)

    def archive_path(self, name: str) -> Path:
        reference = self.references[name]
        tag = reference.rsplit(":", 1)[-1]
        return self.cache / "images" / f"{name}-{tag}.tar"

    def build(self, names: list[str] | None = None) -> dict[str, Path]:
        """Archives for `names` (default: every registered image in this provider's set)."""
        selected = names or [name for name in self.references if name in IMAGE_RECIPES]
        archives: dict[str, Path] = {}
        for name in selected:
            if name not in IMAGE_RECIPES:
                raise ConfigError(f"no recipe builds image {name!r}", remedy="register one with @register_image")
            reference = self.references[name]
            spec = IMAGE_RECIPES[name](self.toolchain, reference)
            archive = self.archive_path(name)
            key = _spec_key(spec)
            sidecar = archive.with_suffix(".json")
            if not (archive.is_file() and sidecar.is_file() and sidecar.read_text() == key):
                digest = write_oci_archive(spec, archive)
                sidecar.write_text(key)
                print(f"[images] built {reference} ({digest[:19]}) -> {archive}", flush=True)
            archives[name] = archive
        return archives


def build_unlisted_image(name: str, reference: str, *, cache: Path | None = None) -> dict[str, Path]:
    """{name: its OCI archive in `CACHE/images/`} for a registered image no provider's image set lists
    (restoredrill's own programs: the S3 recorder, the chart server), for
    `ClusterProvider.load_images`; rebuilt only when its inputs changed. Serialised with a file lock:
    xdist workers share the cache."""
    from filelock import FileLock

    root = cache or cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{name}-image.lock")):
        builder = LocalImageBuilder(toolchain=GoToolchain(cache=root), cache=root, provider="local")
        builder.references[name] = reference  # for this build only
        return {name: builder.build([name])[name]}


def _spec_key(spec: ImageSpec) -> str:
    """Everything an archive depends on, including each source file's size and mtime."""
    sources = {}
    for entry in spec.entries:
        source = getattr(entry, "source", None)
        if isinstance(source, Path):
            st = source.stat()
            sources[str(source)] = [st.st_size, st.st_mtime_ns]
    return json.dumps({"spec": asdict(spec), "sources": sources}, sort_keys=True, default=str)


def import_archives(archives: dict[str, Path], *, containerd_address: Path, timeout: float = 300) -> None:
    """Import OCI archives into containerd's `k8s.io` namespace, where the kubelet looks."""
    ctr = shutil.which("ctr")
    if ctr is None:
        raise MissingToolError("ctr", remedy="run `restoredrill toolchain` (installs Debian's containerd)")
    for name, archive in archives.items():
        command = [ctr, "--address", str(containerd_address), "-n", "k8s.io", "images", "import", str(archive)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise CommandError(command, returncode=result.returncode, output=result.stdout + result.stderr,
                               remedy=f"check that containerd at {containerd_address} is running ({name})")
