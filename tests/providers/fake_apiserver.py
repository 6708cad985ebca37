"""A tiny stand-in for the Kubernetes API server, enough for the namespace calls restoredrill makes.

It serves plain HTTP on 127.0.0.1 (an ephemeral port) and records every request, so a test can
show not only that a helper raised but that no DELETE ever reached the server. `collections`
serves any list path (e.g. /apis/velero.io/v1/backups) and `documents` any exact GET path; PUT
and PATCH are recorded and refused, so a test can prove a reader never writes.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

NAMESPACES = "/api/v1/namespaces"


@dataclass
class FakeApiServer:
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    # A list that ignores the label selector: proves the guard re-checks what a list returns.
    list_ignores_selector: bool = False
    url: str = ""
    # Namespaced objects by (namespace, resource), and the volume source of every PV it "provisions".
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pv_source: dict[str, Any] = field(default_factory=lambda: {"local": {"path": "/var/local-path-provisioner/x"}})
    # CustomResourceDefinitions it lists (none: a cluster without Velero, CNPG or Flux).
    crds: list[dict[str, Any]] = field(default_factory=list)
    # Items served by LIST at a collection path (fieldSelector metadata.name/metadata.namespace and
    # equality labelSelectors applied), and bodies served by GET at an exact path.
    collections: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)

    def writes(self) -> list[tuple[str, str]]:
        """Every request that was not a read (GET; LIST and WATCH are GETs too)."""
        return [(method, path) for method, path, _ in self.requests if method != "GET"]

    def persistent_volume(self, name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": self.pv_source,
        }

    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        namespace = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "labels": labels or {}},
            "status": {"phase": "Active"},
        }
        self.namespaces[name] = namespace
        return namespace

    def deletes(self) -> list[str]:
        return [path.rsplit("/", 1)[-1] for method, path, _ in self.requests if method == "DELETE"]

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "fake-kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _fields_match(obj: dict[str, Any], selector: str) -> bool:
    metadata = obj.get("metadata") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if metadata.get(key.removeprefix("metadata.")) != value:
            return False
    return True


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def _handler(server: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else None

        def _handle(self, method: str) -> None:
            url = urlparse(self.path)
            path = url.path.rstrip("/") or "/"
            body = self._body()
            server.requests.append((method, path, body))
            if path == "/version":
                return self._send(
                    200,
                    {
                        "major": "1",
                        "minor": "34",
                        "gitVersion": "v1.34.4-fake",
                        "gitCommit": "x",
                        "gitTreeState": "clean",
                        "buildDate": "1970-01-01T00:00:00Z",
                        "goVersion": "go1",
                        "compiler": "gc",
                        "platform": "linux/amd64",
                    },
                )
            if method == "GET" and path in server.collections:
                query = parse_qs(url.query)
                labels, fields = query.get("labelSelector", [""])[0], query.get("fieldSelector", [""])[0]
                items = [item for item in server.collections[path] if _fields_match(item, fields)
                         and _matches((item.get("metadata") or {}).get("labels") or {}, labels)]
                return self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
            if method == "GET" and path in server.documents:
                return self._send(200, server.documents[path])
            account = re.fullmatch(r"/api/v1/namespaces/([^/]+)/serviceaccounts/default", path)
            if method == "GET" and account and account.group(1) in server.namespaces:
                # The service-account controller's `default`, made with every namespace.
                return self._send(200, {"kind": "ServiceAccount", "apiVersion": "v1",
                                        "metadata": {"name": "default", "namespace": account.group(1)}})
            if method in ("PUT", "PATCH"):
                return self._send(405, _status(405, "MethodNotAllowed", f"fake API server: {method} refused"))
            if path == "/apis/apiextensions.k8s.io/v1/customresourcedefinitions" and method == "GET":
                return self._send(200, {"kind": "CustomResourceDefinitionList", "apiVersion": "apiextensions.k8s.io/v1",
                                        "metadata": {}, "items": server.crds})
            if path == NAMESPACES and method == "GET":
                selector = parse_qs(url.query).get("labelSelector", [""])[0]
                items = [
                    ns
                    for ns in server.namespaces.values()
                    if server.list_ignores_selector or _matches(ns["metadata"]["labels"], selector)
                ]
                return self._send(200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": items})
            if path == NAMESPACES and method == "POST":
                name = body["metadata"]["name"]
                if name in server.namespaces:
                    return self._send(409, _status(409, "AlreadyExists", f'namespaces "{name}" already exists'))
                created = server.add_namespace(name, body["metadata"].get("labels"))
                return self._send(201, created)
            parts = path.split("/")
            # /api/v1/namespaces/NS/{persistentvolumeclaims,pods}[/NAME]: just enough for a storage probe.
            if path.startswith(NAMESPACES + "/") and len(parts) >= 6:
                return self._namespaced(method, parts[4], parts[5], parts[6] if len(parts) > 6 else None, body)
            if path.startswith("/api/v1/persistentvolumes/") and method == "GET":
                return self._send(200, server.persistent_volume(parts[-1]))
            if path.startswith(NAMESPACES + "/"):
                name = path.rsplit("/", 1)[-1]
                namespace = server.namespaces.get(name)
                if namespace is None:
                    return self._send(404, _status(404, "NotFound", f'namespaces "{name}" not found'))
                if method == "GET":
                    return self._send(200, namespace)
                if method == "DELETE":
                    wanted = ((body or {}).get("preconditions") or {}).get("uid")
                    if wanted and wanted != namespace["metadata"]["uid"]:
                        return self._send(409, _status(409, "Conflict", "Precondition failed: UID"))
                    del server.namespaces[name]
                    return self._send(200, namespace)
            return self._send(404, _status(404, "NotFound", f"fake API server: no route {method} {path}"))

        def _namespaced(self, method: str, namespace: str, resource: str, name: str | None, body: Any) -> None:
            objects = server.objects.setdefault((namespace, resource), {})
            if method == "POST":
                objects[body["metadata"]["name"]] = body
                return self._send(201, body)
            if method == "GET" and name in objects:
                found = objects[name]
                if resource == "persistentvolumeclaims":
                    found = {**found, "spec": {**found["spec"], "volumeName": f"pv-{namespace}-{name}"}}
                    found["status"] = {"phase": "Bound"}
                return self._send(200, found)
            return self._send(404, _status(404, "NotFound", f"{resource} {name!r} not found"))

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def do_PUT(self) -> None:
            self._handle("PUT")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

    return Handler


@contextmanager
def running_fake_apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
