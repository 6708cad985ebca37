"""The platform's images: the logical names its manifests use, their references, and local recipes.

`platform_image_set(provider)` maps logical names to references. On every provider those are
upstream's references (the local provider imports its locally built images under those names), so
manifests are identical on local and kind; only where the image comes from differs.

Local recipes: static Go binaries from the toolchain in scratch images (Velero, the AWS plugin,
MinIO, the CNPG operator, the Flux controllers, and restoredrill's own git server from
restoredrill/images/gitserver.py), and Debian root filesystems made with debootstrap for
PostgreSQL (+ barman-cloud) and MariaDB. Recipes register themselves with
`restoredrill.images.register_image`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from restoredrill.errors import CommandError, ConfigError, MissingToolError
from restoredrill.images import BUSYBOX_BINARY, busybox_tree, register_image, static_binary_image
from restoredrill.images.gitserver import git_server_reference
from restoredrill.images.oci import DirEntry, FileEntry, ImageSpec, SymlinkEntry, TreeEntry
from restoredrill.pins import cache_dir, load_pins
from restoredrill.platform.kopia import KOPIA
from restoredrill.timeouts import timeout
from restoredrill.toolchain.gobuild import GoToolchain

# Go's name for this machine's architecture, as CNPG's operator/manager_<GOARCH> expects.
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)

DEBIAN_SUITE = "bookworm"
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))


def apt_mirror(suite: str = DEBIAN_SUITE) -> str:
    """The Debian mirror apt on this machine uses for `suite`: debootstrap fetches from the same one."""
    files = [f for folder in APT_SOURCES[:1] if folder.is_dir() for f in sorted(folder.glob("*.sources"))]
    for path in files:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(line.split(":", 1) for line in stanza.splitlines()
                          if ":" in line and not line.startswith("#"))
            if suite in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                return fields["URIs"].split()[0]
    legacy = APT_SOURCES[1]
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                return parts[1]
    raise ConfigError(f"apt has no source for Debian {suite} (looked in {', '.join(map(str, APT_SOURCES))})",
                      remedy=f"add a Debian {suite} source for apt; debootstrap uses the same mirror")
# CNPG runs PostgreSQL as 26:26 unless the Cluster says otherwise (postgresUID/postgresGID).
POSTGRES_UID = 26
POSTGRES_MAJOR = 15
# What Debian bookworm ships: the PostgreSQL image's tag is made from it (CNPG reads the major
# version from the tag, which must start with it).
POSTGRES_DEBIAN_VERSION = "15.18"
# pricebuddy runs mariadb:11.4.5; Debian bookworm ships 10.11. The stand-in carries upstream's
# name so manifests need no change; the server inside is 10.11 (same client protocol and the
# same FLUSH TABLES WITH READ LOCK semantics the freeze hooks rely on).
MARIADB_REFERENCE = "docker.io/library/mariadb:11.4.5"
# The newest MinIO server image upstream published (MinIO stopped publishing images in 2025); the
# local build is the module version pinned in pins.toml.
KIND_MINIO_REFERENCE = "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
SEAWEEDFS_REFERENCE = "docker.io/chrislusf/seaweedfs:3.97"

NONROOT = "65532:65532"


def _version(key: str) -> str:
    return str(load_pins()["modules"][key]["version"])


def platform_image_set(provider: str) -> dict[str, str]:
    """Logical image name -> reference for the platform components on `provider`."""
    if provider not in ("local", "kind", "existing"):
        raise ConfigError(f"no image set for provider {provider!r}", remedy="use local, kind or existing")
    cnpg = _version("cloudnative-pg").lstrip("v")
    references = {
        "velero": f"docker.io/velero/velero:{_version('velero')}",
        "velero-plugin-for-aws": f"docker.io/velero/velero-plugin-for-aws:{_version('velero-plugin-for-aws')}",
        "minio": f"quay.io/minio/minio:{_version('minio')}" if provider == "local" else KIND_MINIO_REFERENCE,
        "seaweedfs": _seaweedfs_reference(provider),
        "cnpg-operator": f"ghcr.io/cloudnative-pg/cloudnative-pg:{cnpg}",
        "postgresql": f"ghcr.io/cloudnative-pg/postgresql:{POSTGRES_DEBIAN_VERSION}-system-{DEBIAN_SUITE}",
        "mariadb": MARIADB_REFERENCE,
        "source-controller": f"ghcr.io/fluxcd/source-controller:{_version('source-controller')}",
        "kustomize-controller": f"ghcr.io/fluxcd/kustomize-controller:{_version('kustomize-controller')}",
        "helm-controller": f"ghcr.io/fluxcd/helm-controller:{_version('helm-controller')}",
        "git-server": git_server_reference(),
        "busybox": "docker.io/library/busybox:1.35",
        # The kopia CLI at the fork and version Velero links (pins.toml [modules.kopia]).
        "kopia": f"restoredrill.local/kopia:velero-{_version('kopia')}",
    }
    return references


def _seaweedfs_reference(provider: str) -> str:
    # Locally built from the pinned module once `[modules.seaweedfs]` is in pins.toml.
    pinned = load_pins()["modules"].get("seaweedfs")
    if provider == "local" and pinned:
        return f"docker.io/chrislusf/seaweedfs:{pinned['version']}"
    return SEAWEEDFS_REFERENCE


# ---- static Go binaries ------------------------------------------------------------------------
def _nonroot(spec: ImageSpec, *, user: str = NONROOT) -> ImageSpec:
    return ImageSpec(reference=spec.reference, entries=spec.entries, entrypoint=spec.entrypoint, cmd=spec.cmd,
                     env=spec.env, workdir=spec.workdir, user=user)


@register_image("velero")
def velero_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    # /velero is the server and node-agent; /velero-restore-helper is the init container Velero adds
    # to restored pods (image = this Deployment's image); /velero-helper is used by data-path pods.
    entries: list[FileEntry | DirEntry] = [FileEntry(f"/{name}", source=toolchain.binary(name))
                                           for name in ("velero", "velero-restore-helper", "velero-helper")]
    entries += [DirEntry("/tmp", mode=0o1777), DirEntry("/scratch", mode=0o1777), DirEntry("/plugins", mode=0o1777)]
    return ImageSpec(reference=reference, entries=tuple(entries), entrypoint=("/velero",),
                     env=("PATH=/:/usr/bin:/bin", "HOME=/scratch"))


@register_image("velero-plugin-for-aws")
def velero_plugin_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    # Upstream's image is an init container whose entrypoint copies the plugin into /target.
    if not BUSYBOX_BINARY.is_file():
        raise MissingToolError(str(BUSYBOX_BINARY), remedy="run `restoredrill toolchain` (installs busybox-static)")
    entries = (
        FileEntry("/plugins/velero-plugin-for-aws", source=toolchain.binary("velero-plugin-for-aws")),
        FileEntry("/bin/busybox", source=BUSYBOX_BINARY),
        SymlinkEntry("/bin/cp", "busybox"),
    )
    return ImageSpec(reference=reference, entries=entries,
                     entrypoint=("/bin/cp", "/plugins/velero-plugin-for-aws", "/target/."), user=NONROOT)


@register_image("minio")
def minio_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    spec = static_binary_image(reference, toolchain.binary("minio"), path="/usr/bin/minio")
    return ImageSpec(reference=reference, entries=(*spec.entries, DirEntry("/data", mode=0o777)),
                     entrypoint=("minio",))


@register_image("seaweedfs")
def seaweedfs_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    # Needs a `[modules.seaweedfs.build]` pin (binary `weed`); see the platform's pins notes.
    spec = static_binary_image(reference, toolchain.binary("weed"), path="/usr/bin/weed")
    return ImageSpec(reference=reference, entries=(*spec.entries, DirEntry("/data", mode=0o777)), entrypoint=("weed",))


@register_image("cnpg-operator")
def cnpg_operator_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    # The bootstrap init container of every instance pod copies /manager out of this image, so it
    # must sit at /manager with WORKDIR /. The operator also looks for operator/manager_<GOARCH>
    # (relative to WORKDIR) to learn which instance-manager architectures it can hand out; without
    # it every Cluster fails with "invalid architecture: amd64".
    manager = toolchain.binary("manager")
    spec = static_binary_image(reference, manager, path="/manager")
    spec = ImageSpec(reference=spec.reference, entrypoint=spec.entrypoint, cmd=spec.cmd,
                     entries=(*spec.entries, FileEntry(f"/operator/manager_{GOARCH}", source=manager)))
    return _nonroot(spec, user="10001:10001")


@register_image("source-controller")
def source_controller_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    spec = static_binary_image(reference, toolchain.binary("source-controller"),
                               path="/usr/local/bin/source-controller")
    return _nonroot(ImageSpec(reference=reference, entries=spec.entries, entrypoint=("source-controller",)))


@register_image("kustomize-controller")
def kustomize_controller_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    spec = static_binary_image(reference, toolchain.binary("kustomize-controller"),
                               path="/usr/local/bin/kustomize-controller")
    return _nonroot(ImageSpec(reference=reference, entries=spec.entries, entrypoint=("kustomize-controller",)))


@register_image("helm-controller")
def helm_controller_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    spec = static_binary_image(reference, toolchain.binary("helm-controller"), path="/usr/local/bin/helm-controller")
    return _nonroot(ImageSpec(reference=reference, entries=(*spec.entries, DirEntry("/tmp", mode=0o1777)),
                              entrypoint=("helm-controller",)))


@register_image("kopia")
def kopia_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    # Upstream publishes no image of the kopia CLI Velero links. The snapshot verifier
    # (platform/kopia.py verifier_pod): kopia reads Velero's repository read-only, busybox runs
    # the drill's inventory script over the restored volumes and the scratch copy.
    return ImageSpec(reference=reference,
                     entries=(FileEntry(KOPIA, source=toolchain.binary("kopia")), *busybox_tree()),
                     cmd=("sh",), env=("PATH=/usr/local/bin:/bin", "HOME=/scratch"))


# ---- Debian root filesystems -------------------------------------------------------------------
# Removed from every root filesystem: package caches, documentation, translations.
TRIM_PATHS = (
    "var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info",
    "usr/share/locale", "usr/share/lintian", "var/log",
)
# PostgreSQL's JIT (LLVM, about 100 MB) is optional: without llvmjit.so the server runs with jit off.
POSTGRES_TRIM_GLOBS = ("usr/lib/postgresql/*/lib/llvmjit*", "usr/lib/postgresql/*/lib/bitcode",
                       "usr/lib/x86_64-linux-gnu/libLLVM-*", "usr/lib/x86_64-linux-gnu/libz3.so*")
# barman-cloud talks to S3 only: botocore's models of the other ~400 AWS services (about 80 MB)
# are dropped; its top-level data files (endpoints, partitions, retry config) stay.
BOTOCORE_DATA = "usr/lib/python3/dist-packages/botocore/data"
BOTOCORE_KEEP = frozenset({"s3", "sts"})
STAMP = ".restoredrill-rootfs"


def rootfs_dir(name: str, *, cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "rootfs" / name


def debootstrap_rootfs(target: Path, *, packages: Iterable[str], suite: str = DEBIAN_SUITE,
                       mirror: str | None = None, out: Callable[[str], None] = print) -> Path:
    """A minbase Debian root filesystem with `packages` at `target`; reused when its stamp matches."""
    mirror = mirror or apt_mirror(suite)
    wanted = f"{suite} {mirror} {','.join(sorted(packages))}"
    stamp = target / STAMP
    if stamp.is_file() and stamp.read_text() == wanted:
        return target
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise MissingToolError("debootstrap", remedy="apt-get install debootstrap")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    command = [debootstrap, "--variant=minbase", f"--include={','.join(sorted(packages))}", suite, str(partial),
               mirror]
    out(f"[images] debootstrap {suite} with {', '.join(sorted(packages))} (about 1-4 min)")
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout("debootstrap"), check=False)
    except subprocess.TimeoutExpired as error:
        raise CommandError(command, returncode=None, output=str(error.stdout or "")) from error
    if done.returncode != 0:
        raise CommandError(command, returncode=done.returncode, output=done.stdout + done.stderr,
                           remedy=f"see {partial}/debootstrap/debootstrap.log; check the Debian mirror")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    stamp.write_text(wanted)
    out(f"[images] debootstrap took {time.monotonic() - started:.0f}s")
    return target


def trim_rootfs(root: Path, *, extra_globs: Iterable[str] = ()) -> None:
    """Drop caches, docs and translations (and `extra_globs`); idempotent."""
    for relative in TRIM_PATHS:
        path = root / relative
        if path.is_dir():
            shutil.rmtree(path)
            path.mkdir(mode=0o755)
    for pattern in extra_globs:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def prune_botocore(root: Path, *, keep: frozenset[str] = BOTOCORE_KEEP) -> None:
    data = root / BOTOCORE_DATA
    if not data.is_dir():
        return
    for service in data.iterdir():
        if service.is_dir() and service.name not in keep:
            shutil.rmtree(service)


def renumber_user(root: Path, *, user: str, uid: int, gid: int) -> None:
    """Give `user` (and its group) a fixed uid/gid, moving ownership of its files with it."""
    old_uid = old_gid = None
    for file_name, index in (("etc/passwd", 2), ("etc/group", 2)):
        path = root / file_name
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            fields = line.split(":")
            if fields[0] != user:
                continue
            if file_name == "etc/passwd":
                old_uid, old_gid = int(fields[2]), int(fields[3])
                fields[2], fields[3] = str(uid), str(gid)
            else:
                old_gid = int(fields[index])
                fields[index] = str(gid)
            lines[number] = ":".join(fields)
        path.write_text("\n".join(lines) + "\n")
    if old_uid is None or (old_uid == uid and old_gid == gid):
        return
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if st.st_uid == old_uid or st.st_gid == old_gid:
                os.lchown(path, uid if st.st_uid == old_uid else st.st_uid, gid if st.st_gid == old_gid else st.st_gid)


def postgres_rootfs(*, cache: Path | None = None, out: Callable[[str], None] = print) -> Path:
    root = debootstrap_rootfs(rootfs_dir(f"postgresql-{POSTGRES_MAJOR}", cache=cache),
                              packages=(f"postgresql-{POSTGRES_MAJOR}", "barman-cli-cloud", "locales"), out=out)
    trim_rootfs(root, extra_globs=POSTGRES_TRIM_GLOBS)
    prune_botocore(root)
    renumber_user(root, user="postgres", uid=POSTGRES_UID, gid=POSTGRES_UID)
    # The socket and lock directory PostgreSQL tools default to.
    (root / "var/run/postgresql").mkdir(parents=True, exist_ok=True)
    os.chmod(root / "var/run/postgresql", 0o1777)
    return root


@register_image("postgresql")
def postgresql_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    root = postgres_rootfs()
    return ImageSpec(
        reference=reference, entries=(TreeEntry(root),), cmd=("postgres",), user=str(POSTGRES_UID),
        env=(f"PATH=/usr/lib/postgresql/{POSTGRES_MAJOR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
             "/sbin:/bin", "LANG=C.UTF-8"),
    )


MARIADB_ENTRYPOINT = """#!/bin/sh
# restoredrill's stand-in for the official image's docker-entrypoint.sh: the same MARIADB_* env.
set -eu
DATADIR=/var/lib/mysql
if [ ! -d "$DATADIR/mysql" ]; then
    # --force: skip the host-name lookup, which fails before the pod's DNS is up.
    mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db --force \\
        --auth-root-authentication-method=normal
    ROOT_PW="${MARIADB_ROOT_PASSWORD:-}" DB="${MARIADB_DATABASE:-}" USR="${MARIADB_USER:-}"
    {
        echo "FLUSH PRIVILEGES;"
        if [ -n "$ROOT_PW" ]; then
            echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$ROOT_PW';"
            echo "CREATE USER 'root'@'%' IDENTIFIED BY '$ROOT_PW';"
            echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        fi
        [ -n "$DB" ] && echo "CREATE DATABASE IF NOT EXISTS \\`$DB\\`;"
        if [ -n "$USR" ]; then
            echo "CREATE USER '$USR'@'%' IDENTIFIED BY '${MARIADB_PASSWORD:-}';"
            [ -n "$DB" ] && echo "GRANT ALL ON \\`$DB\\`.* TO '$USR'@'%';"
        fi
        true
    } > /run/mysqld/init.sql
    set -- "$@" --init-file=/run/mysqld/init.sql
fi
exec mariadbd --user=mysql --datadir="$DATADIR" --bind-address=0.0.0.0 "$@"
"""


@register_image("mariadb")
def mariadb_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    root = debootstrap_rootfs(rootfs_dir("mariadb"), packages=("mariadb-server", "mariadb-client"))
    trim_rootfs(root)
    # Debian's postinst initialised a datadir; the entrypoint must see an empty one (as upstream's
    # image does) so that MARIADB_* take effect on first start.
    datadir = root / "var/lib/mysql"
    for entry in datadir.iterdir() if datadir.is_dir() else ():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    (root / "run/mysqld").mkdir(parents=True, exist_ok=True)
    os.chmod(root / "run/mysqld", 0o1777)
    return ImageSpec(
        reference=reference,
        entries=(TreeEntry(root), FileEntry("/usr/local/bin/docker-entrypoint.sh", data=MARIADB_ENTRYPOINT.encode())),
        entrypoint=("/usr/local/bin/docker-entrypoint.sh",), env=("PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    )


# Go builds (pins.toml `[modules.X.build]`) each local platform image needs.
IMAGE_BUILDS: dict[str, tuple[str, ...]] = {
    "velero": ("velero",),
    "velero-plugin-for-aws": ("velero-plugin-for-aws",),
    "minio": ("minio",),
    "seaweedfs": ("seaweedfs",),
    "cnpg-operator": ("cloudnative-pg",),
    "source-controller": ("source-controller",),
    "kustomize-controller": ("kustomize-controller",),
    "helm-controller": ("helm-controller",),
    "kopia": ("kopia",),
}
# Images upstream does not publish: built here and loaded on every provider.
LOCAL_ONLY_IMAGES = ("git-server", "kopia")
# What the four components need on the local provider (MinIO as the object store).
DEFAULT_LOCAL_IMAGES = ("minio", "velero", "velero-plugin-for-aws", "cnpg-operator", "postgresql",
                        "source-controller", "kustomize-controller", "helm-controller", "git-server", "kopia")


def build_local_images(names: Iterable[str] = DEFAULT_LOCAL_IMAGES, *, toolchain: GoToolchain | None = None,
                       cache: Path | None = None) -> dict[str, Path]:
    """Build (idempotently) the Go binaries and OCI archives of the named platform images.

    Serialised with a file lock: xdist workers share the cache.
    """
    from filelock import FileLock

    from restoredrill.images import LocalImageBuilder

    selected = list(names)
    toolchain = toolchain or GoToolchain()
    root = cache or cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / "platform-images.lock")):
        builds = sorted({build for name in selected for build in IMAGE_BUILDS.get(name, ())})
        if builds:
            toolchain.ensure(builds)
        builder = LocalImageBuilder(toolchain=toolchain, cache=root, provider="local")
        # The shared image set does not list the platform's images (yet): add them here.
        builder.references.update(platform_image_set("local"))
        return builder.build(selected)
