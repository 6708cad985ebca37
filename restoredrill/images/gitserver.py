"""The git server: the GitOps repo under test, served inside the drill cluster to Flux.

A Go program of our own (restoredrill/images/go/gitserver) in a scratch image, so the platform
needs no Debian root filesystem on any provider: go-git v5's own upload-pack server behind git's
smart HTTP protocol, read-only (`/git/NAME.git/info/refs` and `/git/NAME.git/git-upload-pack`;
pushes and the dumb protocol are refused). go-git's server has no shallow support, and
source-controller clones `--depth 1`: the program answers a shallow request itself when every wanted
commit's whole history lies within the depth (restoredrill publishes one commit) and refuses any
other shallow request, naming it. The git CLI's own shallow negotiation is not served (a full
`git clone` is).

`git-server publish ROOT NAME` replaces NAME.git under ROOT by the bare repository in the tar read
on stdin (the image has no tar or shell); `git-server fetch URL` writes a GET's body to stdout, for
the drill's reads of in-cluster URLs (Velero's DownloadRequests). Every request is logged as one
line (method, path, status, and the reason of a refusal).
"""

from __future__ import annotations

from pathlib import Path

from restoredrill.images import register_image, static_binary_image
from restoredrill.images.oci import DirEntry, ImageSpec
from restoredrill.images.standins import go_program_binary, program_digest
from restoredrill.toolchain.gobuild import GoToolchain

__all__ = ["GIT_SERVER_PATH", "GIT_SERVER_SOURCES", "git_server_binary", "git_server_reference"]

GO_DIR = Path(__file__).parent / "go"
GIT_SERVER_PATH = "/git-server"
GIT_ROOT = "/srv/git"
UNPRIVILEGED = "65532:65532"


def _sources() -> dict[str, str]:
    files = {p.name: p.read_text() for p in sorted((GO_DIR / "gitserver").iterdir()) if p.is_file()}
    files["untar.go"] = (GO_DIR / "untar.go").read_text()
    return files


GIT_SERVER_SOURCES = _sources()


def git_server_reference() -> str:
    """The image's reference: its tag is the program's digest, so a changed program is a new image
    (the pods' `imagePullPolicy: IfNotPresent` would keep running an old one under a fixed tag)."""
    return f"restoredrill.local/git-server:{program_digest(GIT_SERVER_SOURCES)}"


def git_server_binary(*, cache: Path | None = None) -> Path:
    return go_program_binary(GIT_SERVER_SOURCES, name="git-server", binary="git-server", cache=cache)


@register_image("git-server")
def git_server_image(toolchain: GoToolchain, reference: str) -> ImageSpec:
    spec = static_binary_image(reference, git_server_binary(cache=toolchain.cache), path=GIT_SERVER_PATH)
    return ImageSpec(reference=reference, entries=(*spec.entries, DirEntry(GIT_ROOT, mode=0o1777)),
                     entrypoint=(GIT_SERVER_PATH,), cmd=(GIT_ROOT, ":8080"), user=UNPRIVILEGED)
