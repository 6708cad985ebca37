"""Write OCI image archives in pure Python, so no registry or Docker is ever involved.

An archive is an OCI image layout in a tar: `oci-layout`, `index.json` (whose manifest carries the
`io.containerd.image.name` annotation that `ctr images import` names the image by), and blobs for
the manifest, the config and one uncompressed layer. Every timestamp is zero and entries are
sorted, so the same inputs give the same digests and a rebuild can be recognised as a no-op.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class FileEntry:
    """A regular file in the image: from a host path or from bytes."""

    path: str
    source: Path | None = None
    data: bytes | None = None
    mode: int = 0o755


@dataclass(frozen=True)
class SymlinkEntry:
    path: str
    target: str


@dataclass(frozen=True)
class DirEntry:
    path: str
    mode: int = 0o755


@dataclass(frozen=True)
class TreeEntry:
    """A whole host directory (a Debian root filesystem) placed at `path`."""

    source: Path
    path: str = "/"


Entry = FileEntry | SymlinkEntry | DirEntry | TreeEntry


@dataclass(frozen=True)
class ImageSpec:
    """What goes into an image: its reference, files and runtime config."""

    reference: str
    entries: tuple[Entry, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    workdir: str = "/"
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    architecture: str = "amd64"


def _norm(path: str) -> str:
    clean = str(PurePosixPath("/") / path).lstrip("/")
    return clean or "."


def _parents(path: str) -> Iterator[str]:
    parts = PurePosixPath(path).parts[:-1]
    for index in range(1, len(parts) + 1):
        yield "/".join(parts[:index])


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _tree_members(entry: TreeEntry) -> Iterator[tuple[tarfile.TarInfo, Path | None]]:
    base = _norm(entry.path)
    for root, dirs, files in os.walk(entry.source):
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            host = Path(root) / name
            rel = host.relative_to(entry.source).as_posix()
            target = rel if base == "." else f"{base}/{rel}"
            st = host.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                info = _info(target, tarfile.SYMTYPE, 0o777)
                info.linkname = os.readlink(host)
                yield info, None
            elif stat.S_ISDIR(st.st_mode):
                yield _info(target, tarfile.DIRTYPE, mode), None
            elif stat.S_ISREG(st.st_mode):
                info = _info(target, tarfile.REGTYPE, mode)
                info.uid, info.gid = st.st_uid, st.st_gid
                info.size = st.st_size
                yield info, host
            # Device nodes, sockets and fifos are skipped: the runtime provides /dev.


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """One uncompressed, reproducible layer tar holding `entries` (parent dirs added)."""
    members: dict[str, tuple[tarfile.TarInfo, Path | bytes | None]] = {}
    for entry in entries:
        if isinstance(entry, TreeEntry):
            for info, host in _tree_members(entry):
                members[info.name] = (info, host)
            continue
        name = _norm(entry.path)
        for parent in _parents(name):
            members.setdefault(parent, (_info(parent, tarfile.DIRTYPE, 0o755), None))
        if isinstance(entry, DirEntry):
            members[name] = (_info(name, tarfile.DIRTYPE, entry.mode), None)
        elif isinstance(entry, SymlinkEntry):
            info = _info(name, tarfile.SYMTYPE, 0o777)
            info.linkname = entry.target
            members[name] = (info, None)
        else:
            payload: Path | bytes
            if entry.data is not None:
                payload = entry.data
                size = len(entry.data)
            elif entry.source is not None:
                payload = entry.source
                size = entry.source.stat().st_size
            else:
                raise ValueError(f"file {entry.path} has neither source nor data")
            info = _info(name, tarfile.REGTYPE, entry.mode)
            info.size = size
            members[name] = (info, payload)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info, content = members[name]
            if isinstance(content, bytes):
                tar.addfile(info, io.BytesIO(content))
            elif isinstance(content, Path):
                with content.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = _digest(data)
    info = _info(f"blobs/sha256/{digest.split(':', 1)[1]}", tarfile.REGTYPE, 0o644)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return digest


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def write_oci_archive(spec: ImageSpec, dest: Path) -> str:
    """Write `spec` as an OCI layout tar at `dest`; return the manifest digest."""
    layer = layer_tar(spec.entries)
    config: dict[str, object] = {
        "architecture": spec.architecture,
        "os": "linux",
        "config": {
            key: value
            for key, value in {
                "Entrypoint": list(spec.entrypoint) or None,
                "Cmd": list(spec.cmd) or None,
                "Env": list(spec.env),
                "WorkingDir": spec.workdir,
                "User": spec.user or None,
                "Labels": dict(spec.labels) or None,
            }.items()
            if value is not None
        },
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        "history": [{"created_by": "restoredrill images", "created": "1970-01-01T00:00:00Z"}],
        "created": "1970-01-01T00:00:00Z",
    }
    config_bytes = _json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": _digest(config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": _digest(layer), "size": len(layer)}],
    }
    manifest_bytes = _json(manifest)
    tag = spec.reference.rsplit(":", 1)[1] if ":" in spec.reference.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": _digest(manifest_bytes),
                "size": len(manifest_bytes),
                "platform": {"architecture": spec.architecture, "os": "linux"},
                "annotations": {NAME_ANNOTATION: spec.reference, REF_ANNOTATION: tag},
            }
        ],
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("oci-layout", _json({"imageLayoutVersion": "1.0.0"})), ("index.json", _json(index))):
            info = _info(name, tarfile.REGTYPE, 0o644)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        dir_info = _info("blobs/sha256", tarfile.DIRTYPE, 0o755)
        tar.addfile(_info("blobs", tarfile.DIRTYPE, 0o755))
        tar.addfile(dir_info)
        _blob(tar, layer)
        _blob(tar, config_bytes)
        _blob(tar, manifest_bytes)
    os.replace(partial, dest)
    return _digest(manifest_bytes)


def read_index(archive: Path) -> dict[str, object]:
    """The archive's index.json (used to check an archive and to find its image name)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ValueError(f"{archive} has no index.json")
        result: dict[str, object] = json.loads(member.read())
        return result
