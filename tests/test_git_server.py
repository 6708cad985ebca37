"""The git server program, run here on loopback: what source-controller's go-git client and the
drill ask of it, and what it refuses.

A go-git client (the same library, at the version source-controller v1.7.3 links, built here)
clones the published repository whole and with --depth 1, as source-controller does; a repository
with more history than the depth is refused with its reason; the git CLI clones it whole; pushes,
unknown repositories and non-git paths are refused; `publish` replaces a repository whole and
`fetch` returns a body byte for byte.
"""

from __future__ import annotations

import gzip
import http.server
import os
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from restoredrill.images.gitserver import git_server_binary
from restoredrill.images.standins import go_program_binary
from restoredrill.platform.flux import bare_repository_tar

# A go-git client doing what fluxcd/pkg/git/gogit's clone does for a branch: single branch, no tags.
CLIENT_GO = """\
package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/go-git/go-billy/v5/memfs"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/storage/memory"
)

func main() {
	depth, _ := strconv.Atoi(os.Args[2])
	repo, err := gogit.Clone(memory.NewStorage(), memfs.New(), &gogit.CloneOptions{URL: os.Args[1],
		ReferenceName: plumbing.NewBranchReferenceName("main"), SingleBranch: true, Depth: depth,
		Tags: gogit.NoTags})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	head, _ := repo.Head()
	tree, _ := repo.Worktree()
	data, err := tree.Filesystem.Open(os.Args[3])
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	buf := make([]byte, 4096)
	n, _ := data.Read(buf)
	fmt.Printf("%s %s", head.Hash(), buf[:n])
}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def binary() -> Path:
    return git_server_binary()


@pytest.fixture(scope="module")
def client(binary: Path) -> Path:
    gomod = ("module restoredrill.local/git-client\n\ngo 1.24.0\n\nrequire (\n"
             "\tgithub.com/go-git/go-billy/v5 v5.6.2\n\tgithub.com/go-git/go-git/v5 v5.16.5\n)\n")
    from restoredrill.images.gitserver import GIT_SERVER_SOURCES

    return go_program_binary({"main.go": CLIENT_GO, "go.mod": gomod, "go.sum": GIT_SERVER_SOURCES["go.sum"]},
                             name="git-client-test", binary="git-client")


class Server:
    def __init__(self, binary: Path, root: Path) -> None:
        self.binary, self.root = binary, root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/git"
        self.process = subprocess.Popen([str(binary), str(root), f"127.0.0.1:{self.port}"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("the git server did not listen")

    def publish(self, tree: Path, repo: str) -> None:
        done = subprocess.run([str(self.binary), "publish", str(self.root), repo],
                              input=bare_repository_tar(tree, repo=repo), capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr

    def log(self) -> str:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=10)
        return out


@pytest.fixture
def server(binary: Path, tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "srv"
    root.mkdir()
    running = Server(binary, root)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def tree(path: Path, text: str) -> Path:
    (path / "kubernetes").mkdir(parents=True, exist_ok=True)
    (path / "kubernetes" / "ks.yaml").write_text(text)
    return path


def test_source_controllers_clone_whole_and_shallow_and_the_git_cli_whole(server: Server, client: Path,
                                                                          tmp_path: Path) -> None:
    server.publish(tree(tmp_path / "t", "kind: Kustomization\n"), "gitops")
    for depth in ("1", "0"):
        done = subprocess.run([str(client), f"{server.url}/gitops.git", depth, "kubernetes/ks.yaml"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.endswith("kind: Kustomization\n")
    cloned = tmp_path / "cli"
    done = subprocess.run(["git", "clone", "-q", f"{server.url}/gitops.git", str(cloned)], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    assert done.returncode == 0, done.stderr
    assert (cloned / "kubernetes" / "ks.yaml").read_text() == "kind: Kustomization\n"

    # Published again: the new tree replaces the old one whole.
    server.publish(tree(tmp_path / "t2", "kind: Kustomization # v2\n"), "gitops")
    done = subprocess.run([str(client), f"{server.url}/gitops.git", "1", "kubernetes/ks.yaml"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.endswith("# v2\n"), done.stdout
    assert sorted(p.name for p in server.root.iterdir()) == ["gitops.git"], "no staging folder left"
    log = server.log()
    assert "POST /git/gitops.git/git-upload-pack 200" in log


def test_a_shallow_clone_of_a_longer_history_is_refused_with_its_reason(server: Server, client: Path,
                                                                       tmp_path: Path) -> None:
    work = tree(tmp_path / "w", "one\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for command in (["git", "init", "-q", "-b", "main", str(work)], ["git", "-C", str(work), "add", "-A"],
                    ["git", "-C", str(work), "commit", "-qm", "one"]):
        subprocess.run(command, check=True, env=env, capture_output=True)
    (work / "kubernetes" / "ks.yaml").write_text("two\n")
    subprocess.run(["git", "-C", str(work), "commit", "-qam", "two"], check=True, env=env, capture_output=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(server.root / "long.git")], check=True,
                   capture_output=True)
    refused = subprocess.run([str(client), f"{server.url}/long.git", "1", "kubernetes/ks.yaml"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "status code: 400" in refused.stdout
    whole = subprocess.run([str(client), f"{server.url}/long.git", "0", "kubernetes/ks.yaml"],
                           capture_output=True, text=True, timeout=60)
    assert whole.returncode == 0 and whole.stdout.endswith("two\n")
    assert "has more than 1 commit(s) of history" in server.log()


def test_pushes_unknown_repositories_and_other_paths_are_refused(server: Server, tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    server.publish(tree(tmp_path / "t", "x\n"), "gitops")
    for path, status in (("/git/gitops.git/info/refs?service=git-receive-pack", 403),
                         ("/git/gitops.git/info/refs", 403),  # the dumb protocol
                         ("/git/nope.git/info/refs?service=git-upload-pack", 404),
                         ("/", 404), ("/git/gitops.git/HEAD", 404)):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10)
        assert refused.value.code == status, path
    log = server.log()
    assert "pushes are refused" in log and "no such repository" in log


def test_fetch_writes_the_body_byte_for_byte(binary: Path) -> None:
    body = gzip.compress(b'{"errors": {}}')

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/results.gz" else 404)
            self.send_header("Content-Encoding", "gzip")  # even so: no transparent gunzip
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        done = subprocess.run([str(binary), "fetch", f"{url}/results.gz"], capture_output=True, timeout=30)
        assert done.returncode == 0 and done.stdout == body
        missing = subprocess.run([str(binary), "fetch", f"{url}/nope"], capture_output=True, text=True, timeout=30)
        assert missing.returncode == 1 and "404" in missing.stderr
    finally:
        httpd.shutdown()


def test_publish_refuses_a_tar_without_the_repository(binary: Path, tmp_path: Path) -> None:
    import io

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("other.git/HEAD")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"ref\n"))
    done = subprocess.run([str(binary), "publish", str(tmp_path), "gitops"], input=buffer.getvalue(),
                          capture_output=True, timeout=30)
    assert done.returncode == 1 and b"no bare repository gitops.git" in done.stderr
    assert list(tmp_path.iterdir()) == [], "nothing left behind"
