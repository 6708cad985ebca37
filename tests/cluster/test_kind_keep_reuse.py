"""`--keep-cluster` on kind, for real: one kind cluster, made once, then reused or refused by whole
pytest sessions (subprocesses, as a user runs them), watched from outside restoredrill through
Docker (the node container's id and creation time) and the cluster's own kubectl.

  A  no node image chosen, --keep-cluster: creates the cluster, says which node image and why, keeps
     it and marks it kept (kube-system/restoredrill-owner kept=true);
  B  the same again: reuses it (same node container) and says so; kept again;
  C  another node image chosen: refused, nothing touched;
  D  the cluster not marked kept (another session's, or one that crashed): refused, nothing touched;
  E  no owner ConfigMap (as a `kind create cluster` of that name has): refused, nothing touched.

Only session A makes a cluster (about a minute and a half on 2 cores with the node image built);
the test deletes it at the end. It runs in `make kind-smoke` (`--cluster-provider kind`) and is
skipped, saying so, on any other provider.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures import cluster as cluster_fixtures
from restoredrill.cluster import kind
from tests.conftest import PROJECT_ROOT, user_project

pytest_plugins = ("pytester",)
pytestmark = pytest.mark.cluster

SESSION = """
import json, os

def test_the_session_gets_its_cluster(cluster):
    with open(os.environ["HANDLE_OUT"], "w") as out:
        json.dump({"name": cluster.name, "notes": list(cluster.notes), "offline": cluster.offline,
                   "created_by_us": cluster.created_by_us}, out)
"""
# pytester gives its sessions a fresh HOME; these must find the real one's caches (the toolchain's
# builds, the node image's parts, Go's module cache), or they would rebuild Kubernetes.
HOME = str(Path.home())
# Not the same kind of node image as session A's, whatever A chose (never pulled: refused first).
OTHER_IMAGE = "restoredrill.invalid/kind-node:v1.34.0"


def literal(text: str) -> str:
    """`text` as an fnmatch pattern that matches only itself ([ opens a character class)."""
    return text.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")


@pytest.fixture(scope="module", autouse=True)
def on_kind_only(pytestconfig: pytest.Config) -> None:
    provider = cluster_fixtures.setting(pytestconfig, "cluster_provider", "local")
    if provider != "kind":
        pytest.skip(f"makes a kind cluster: runs with --cluster-provider kind (make kind-smoke), not {provider}")


class Node:
    """The cluster as Docker and its own kubectl see it, not as restoredrill reports it."""

    def __init__(self, name: str) -> None:
        self.container = f"{name}-control-plane"
        docker = shutil.which("docker")
        assert docker is not None, "the kind provider needs Docker"
        self.docker = docker

    def identity(self) -> str:
        """The node container's id and creation time: unchanged means the same cluster, not a new one."""
        done = subprocess.run([self.docker, "inspect", self.container, "--format", "{{.Id}} {{.Created}}"],
                              capture_output=True, text=True, timeout=60)
        return done.stdout.strip() if done.returncode == 0 else ""

    def kubectl(self, *args: str) -> str:
        done = subprocess.run([self.docker, "exec", self.container, "kubectl",
                               "--kubeconfig=/etc/kubernetes/admin.conf", *args],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def owner(self) -> dict[str, str]:
        found = self.kubectl("-n", kind.OWNER_NAMESPACE, "get", "configmap", kind.OWNER_CONFIGMAP, "-o", "json",
                             "--ignore-not-found")
        data: dict[str, str] = json.loads(found)["data"] if found.strip() else {}
        return data


class Sessions:
    def __init__(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.pytester = pytester
        self.monkeypatch = monkeypatch
        self.name = name
        self.count = 0

    def run(self, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
        self.count += 1
        out = self.pytester.path / f"handle-{self.count}.json"
        out.unlink(missing_ok=True)
        self.monkeypatch.setenv("HANDLE_OUT", str(out))
        self.monkeypatch.setenv(cluster_fixtures.RUN_ID_ENV, f"keep{self.count}")
        result = self.pytester.runpytest_subprocess(
            "test_session.py", "--cluster-provider", "kind", "--cluster-name", self.name,
            "--cluster-dir", str(self.pytester.path / "clusters"), "-p", "no:cacheprovider", *args)
        handle = json.loads(out.read_text()) if out.is_file() else {}
        print(f"session {self.count} ({' '.join(args) or 'no flags'}): exit {result.ret} in {result.duration:.0f}s")
        return result, handle


@pytest.fixture
def sessions(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sessions]:
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    monkeypatch.setenv("HOME", HOME)
    # The user's case: nothing chooses the node image (CI exports one for its other kind runs).
    monkeypatch.delenv(cluster_fixtures.KIND_IMAGE_ENV, raising=False)
    user_project(pytester.path, repo=False)
    pytester.makepyfile(test_session=SESSION)
    name = f"rdkeep-{secrets.token_hex(3)}"
    runs = Sessions(pytester, monkeypatch, name)
    try:
        yield runs
    finally:
        # Ours (session A made it under this fresh name): never left behind.
        kind_bin = kind.find_kind()
        listed = subprocess.run([kind_bin, "get", "clusters"], capture_output=True, text=True, timeout=60)
        if name in listed.stdout.split():
            subprocess.run([kind_bin, "delete", "cluster", f"--name={name}"], capture_output=True, timeout=300)


def test_a_kept_kind_cluster_is_reused_or_refused_never_skipped(sessions: Sessions, tmp_path: Path) -> None:
    name = sessions.name
    node = Node(name)
    # What session A will choose, decided the same way (a look at Docker and a pull attempt).
    expected = kind.KindCluster(work_dir=tmp_path, run_id="probe", choose_node_image=True).resolve_node_image()

    # A: made, said, kept.
    result, handle = sessions.run("--keep-cluster")
    assert result.ret == 0, result.stdout.str()
    said = literal(expected.line) if expected.local else "[[]kind] no node image chosen*"
    result.stdout.fnmatch_lines([f"*{said}*", f"*[[]kind] creating kind cluster {name} *",
                                 f"*[[]kind] keeping kind cluster {name} (marked kept*"])
    assert handle["name"] == name and handle["created_by_us"]
    assert handle["offline"] == expected.local
    if expected.note:
        assert expected.note in handle["notes"]  # the reason is in every drill's report too
    made = node.identity()
    assert made, f"no node container {node.container} after session A"
    owner = node.owner()
    assert owner["kept"] == "true" and owner["run-id"] == "keep1"
    assert owner["node-image"] == ("local" if expected.local else "kind-config")
    reference = owner["node-image-reference"]

    # B: the same name and node image: reused, and it says so.
    result, handle = sessions.run("--keep-cluster")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"*[[]kind] reusing kind cluster {name}, kept by restoredrill run keep1 "
                                 f"(node image {reference})*"])
    result.stdout.no_fnmatch_line(f"*creating kind cluster {name}*")
    assert f"reused kind cluster {name} kept by run keep1" in handle["notes"]
    assert node.identity() == made, "session B made a new node container instead of reusing the cluster"
    owner = node.owner()
    assert owner["kept"] == "true" and owner["run-id"] == "keep2" and owner["node-image-reference"] == reference

    # C: another node image asked for: refused, untouched (and no fallback: a chosen image is strict).
    result, handle = sessions.run("--kind-image", OTHER_IMAGE)
    assert result.ret != 0 and not handle
    label = "local" if expected.local else "kind-config"
    result.stdout.fnmatch_lines([f"*kind cluster {name} (kept by run keep2) runs node image {label!r}, and this "
                                 f"run asks for {OTHER_IMAGE!r}*"])
    result.stdout.no_fnmatch_line("*no node image chosen*")
    assert node.identity() == made and node.owner() == owner

    # D: not marked kept (a session still using it, or one that crashed): refused, untouched.
    node.kubectl("-n", kind.OWNER_NAMESPACE, "patch", "configmap", kind.OWNER_CONFIGMAP, "--type=merge",
                 "-p", '{"data": {"kept": "false"}}')
    in_use = node.owner()
    result, handle = sessions.run("--keep-cluster")
    assert result.ret != 0 and not handle
    result.stdout.fnmatch_lines([f"*kind cluster {name} was made by restoredrill run keep2 and not kept*"])
    assert node.identity() == made and node.owner() == in_use

    # E: no owner ConfigMap, as in a cluster made with plain `kind create cluster --name NAME`: refused.
    node.kubectl("-n", kind.OWNER_NAMESPACE, "delete", "configmap", kind.OWNER_CONFIGMAP)
    result, handle = sessions.run("--keep-cluster")
    assert result.ret != 0 and not handle
    result.stdout.fnmatch_lines([f"*kind cluster {name} exists but restoredrill did not create it*"])
    assert node.identity() == made and node.owner() == {}
