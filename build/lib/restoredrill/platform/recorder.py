"""The S3 request recorder in a cluster: its manifests, its URL, and what its log says was asked.

A test that must prove a client never wrote to an object store (the production-backup drill reads
the user's backups through a `ReadOnly` BackupStorageLocation) points the client at the recorder
instead of the store. The recorder forwards every request unchanged (Host header included, so
SigV4 signatures still verify) and logs one JSON line per request; `parse_requests` reads the
container's log, `writes` and `deletes` pick out what must not be there, `describe` says it in a
failure message. The program and its image: restoredrill.images.recorder.

The log is the evidence, so read it from the one pod that served every request: a restarted
container's earlier lines are not in `kubectl logs` (only in `--previous`), so a test that finds no
writes also checks the recorder's restartCount is 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from restoredrill.platform.base import Manifest, labels

__all__ = ["READ_METHODS", "RecordedRequest", "deletes", "describe", "forwarded_writes", "parse_requests",
           "recorder_manifests", "recorder_url", "writes"]

RECORDER_NAME = "s3-recorder"
RECORDER_PORT = 9000
# Methods that read; anything else a client sends an S3 store (PUT, POST, DELETE, PATCH) is a write.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Log events that are not requests: the recorder's start and stop, what net/http logged.
OTHER_EVENTS = frozenset({"listening", "stopping", "server-error", "proxy-error"})


@dataclass(frozen=True)
class RecordedRequest:
    """One request the recorder forwarded, as its log line says."""

    time: str  # when it arrived, RFC 3339 UTC
    method: str
    host: str  # the Host header, forwarded unchanged
    path: str  # decoded: /bucket/key
    raw_query: str  # as sent: list-type=2&prefix=backups%2F
    status: int  # the final status the client got (0: the connection broke before one)
    bytes: int  # response body bytes sent to the client
    request_bytes: int  # request body bytes forwarded to the store
    remote_addr: str
    user_agent: str
    duration_ms: float = 0.0
    error: str = ""  # why the proxy failed it, if it did
    kept: bool = False  # answered by the shield (RECORDER_SHIELD=keep-writes): never reached the store

    @property
    def is_write(self) -> bool:
        return self.method not in READ_METHODS

    @property
    def is_delete(self) -> bool:
        """DELETE of an object or bucket, or S3's multi-object delete (`POST /bucket?delete`)."""
        if self.method == "DELETE":
            return True
        return self.method == "POST" and "delete" in parse_qs(self.raw_query, keep_blank_values=True)

    def summary(self) -> str:
        target = self.path + (f"?{self.raw_query}" if self.raw_query else "")
        sent = f", {self.request_bytes} bytes sent" if self.request_bytes else ""
        failed = f", error: {self.error}" if self.error else ""
        return (f"{self.time} {self.method} {target} -> {self.status}{sent}{failed} "
                f"(from {self.remote_addr}, {self.user_agent or 'no user agent'})")


_FIELDS: dict[str, type] = {"time": str, "method": str, "host": str, "path": str, "raw_query": str, "status": int,
                            "bytes": int, "request_bytes": int, "remote_addr": str, "user_agent": str}


def _request(record: dict[str, Any]) -> RecordedRequest:
    missing = [name for name in _FIELDS if name not in record]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    wrong = [name for name, kind in _FIELDS.items()
             if not isinstance(record[name], kind) or (kind is int and isinstance(record[name], bool))]
    if wrong:
        raise ValueError(f"wrong type of {', '.join(wrong)}")
    duration = record.get("duration_ms", 0.0)
    error = record.get("error", "")
    kept = record.get("kept", False)
    if not isinstance(duration, int | float) or not isinstance(error, str) or not isinstance(kept, bool):
        raise ValueError("wrong type of duration_ms, error or kept")
    return RecordedRequest(**{name: record[name] for name in _FIELDS}, duration_ms=float(duration), error=error,
                           kept=kept)


def parse_requests(log_text: str) -> list[RecordedRequest]:
    """The requests in the recorder's log (stdout, or `kubectl logs` of its pod), in log order.

    Every non-blank line must be one of the recorder's JSON events: anything else (a truncated
    line, another program's output, an event this parser does not know) raises ValueError naming
    the line, since a log we cannot read proves nothing about what was asked.
    """
    requests: list[RecordedRequest] = []
    for number, line in enumerate(log_text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            event = record.get("event")
            if event == "request":
                requests.append(_request(record))
            elif event not in OTHER_EVENTS:
                raise ValueError(f"unknown event {event!r}")
        except ValueError as error:  # json.JSONDecodeError is one
            raise ValueError(f"s3-recorder log line {number} is not a recorder event ({error}): {line[:300]!r}") \
                from None
    return requests


def writes(requests: Iterable[RecordedRequest]) -> list[RecordedRequest]:
    """Every request that asked the store to change something: all but GET, HEAD and OPTIONS."""
    return [request for request in requests if request.is_write]


def forwarded_writes(requests: Iterable[RecordedRequest]) -> list[RecordedRequest]:
    """The writes a shield let through to the store: none, by construction; the log says so."""
    return [request for request in requests if request.is_write and not request.kept]


def deletes(requests: Iterable[RecordedRequest]) -> list[RecordedRequest]:
    """The writes that delete: DELETE, and POST ?delete (S3's multi-object delete)."""
    return [request for request in requests if request.is_delete]


def describe(requests: Iterable[RecordedRequest], *, limit: int = 20) -> str:
    """For a failure message: how many requests, writes and deletes, then the writes (or, when
    there are none, the requests) one a line, at most `limit` of them."""
    recorded = list(requests)
    if not recorded:
        return "the recorder saw no requests"
    written = writes(recorded)
    head = (f"{len(recorded)} request(s), {len(written)} write(s), {len(deletes(recorded))} delete(s); "
            f"{'the writes' if written else 'the requests'}:")
    shown = written or recorded
    lines = [f"  {request.summary()}" for request in shown[:limit]]
    if len(shown) > limit:
        lines.append(f"  ... and {len(shown) - limit} more")
    return "\n".join([head, *lines])


def recorder_url(namespace: str, *, name: str = RECORDER_NAME, port: int = RECORDER_PORT) -> str:
    """The recorder's in-cluster URL: what the client (a BackupStorageLocation's s3Url) is given."""
    return f"http://{name}.{namespace}.svc.cluster.local:{port}"


def recorder_manifests(*, namespace: str, upstream_url: str, image: str, name: str = RECORDER_NAME,
                       port: int = RECORDER_PORT, shield: bool = False) -> list[Manifest]:
    """A one-replica Deployment of the recorder forwarding to `upstream_url`, and its Service.
    `shield`: it also keeps every write (RECORDER_SHIELD=keep-writes): reads go on to the store,
    writes are answered from memory and never forwarded (restoredrill.images.recorder).

    `image` is restoredrill.images.recorder.RECORDER_REFERENCE, loaded into the cluster first
    (`provider.load_images(build_recorder_image())`). The namespace must exist.
    """
    selector = {"app.kubernetes.io/name": name}
    container: Manifest = {
        "name": "recorder",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "RECORDER_UPSTREAM", "value": upstream_url},
                {"name": "RECORDER_LISTEN", "value": f":{port}"},
                *([{"name": "RECORDER_SHIELD", "value": "keep-writes"}] if shield else [])],
        "ports": [{"name": "s3", "containerPort": port}],
        # A TCP probe, not an HTTP one: an HTTP probe would be forwarded to the store and logged.
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 2, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
    }
    deployment: Manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            # The recorder keeps no state and exits at once on SIGTERM.
            "template": {"metadata": {"labels": labels(name)},
                         "spec": {"containers": [container], "terminationGracePeriodSeconds": 0}},
        },
    }
    service: Manifest = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(name)},
        "spec": {"selector": selector, "ports": [{"name": "s3", "port": port, "targetPort": port}]},
    }
    return [deployment, service]
