"""The S3 request recorder, without a cluster: its Go program built with the local toolchain and
run as a process in front of a small Python HTTP server standing in for the store; its log parser,
write classification and manifests."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from restoredrill.images import IMAGE_RECIPES
from restoredrill.images.oci import FileEntry
from restoredrill.images.recorder import (
    RECORDER_IMAGE,
    RECORDER_PATH,
    RECORDER_REFERENCE,
    build_recorder_image,
    recorder_binary,
)
from restoredrill.platform.base import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from restoredrill.platform.images import DEFAULT_LOCAL_IMAGES, LOCAL_ONLY_IMAGES, platform_image_set
from restoredrill.platform.recorder import (
    RecordedRequest,
    deletes,
    describe,
    forwarded_writes,
    parse_requests,
    recorder_manifests,
    recorder_url,
    writes,
)
from restoredrill.toolchain.gobuild import GoToolchain
from restoredrill.waits import wait_until

needs_go = pytest.mark.skipif(shutil.which("go") is None,
                              reason="no `go` on PATH: the recorder is built with the local Go toolchain "
                                     "(a prerequisite, see README)")

# What a SigV4 client signs and the store checks: Host, the raw path and the raw query.
SIGNED_HOST = "s3-recorder.restoredrill-production.svc.cluster.local:9000"
STEP = 10.0  # seconds any one step here may take


# ---- the store stand-in -------------------------------------------------------------------------
@dataclass
class Seen:
    method: str
    target: str  # the raw request-target
    host: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    port: int
    seen: list[Seen] = field(default_factory=list)
    first_part_read: threading.Event = field(default_factory=threading.Event)  # of /bucket/streamed-up
    may_finish: threading.Event = field(default_factory=threading.Event)  # of /bucket/streamed-down


def _handler(upstream: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if self.path == "/bucket/streamed-up":
                # A quarter, while the client holds back its second half: what the proxy's buffers
                # (a few KiB) keep cannot stall this read.
                first = self.rfile.read(length // 4)
                upstream.first_part_read.set()
                return first + self.rfile.read(length - length // 4)
            return self.rfile.read(length)

        def _answer(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"etag"')
            self.end_headers()
            self.wfile.write(body)

        def _record(self) -> None:
            upstream.seen.append(Seen(self.command, self.path, self.headers.get("Host", ""),
                                      dict(self.headers.items()), self._body()))

        def do_GET(self) -> None:
            self._record()
            if self.path == "/bucket/streamed-down":
                self.send_response(200)
                self.send_header("Content-Length", "10")
                self.end_headers()
                self.wfile.write(b"first")
                self.wfile.flush()
                upstream.may_finish.wait(STEP)
                self.wfile.write(b"-last")
                return
            self._answer(200, b"object body")

        def do_HEAD(self) -> None:
            self._record()
            self.send_response(200)
            self.send_header("Content-Length", "11")
            self.end_headers()

        def do_PUT(self) -> None:
            self._record()
            self._answer(200)

        def do_POST(self) -> None:
            self._record()
            self._answer(200, b"<DeleteResult/>")

        def do_DELETE(self) -> None:
            self._record()
            self._answer(204)

    return Handler


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = Upstream(port=server.server_address[1])
    server.RequestHandlerClass = _handler(state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(STEP)


# ---- the recorder as a local process ------------------------------------------------------------
@pytest.fixture(scope="session")
def recorder_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache of this session's own: the recorder is built here from its source, not found stale."""
    return tmp_path_factory.mktemp("recorder-cache")


@pytest.fixture(scope="session")
def recorder_program(recorder_cache: Path) -> Path:
    if shutil.which("go") is None:
        pytest.skip("no `go` on PATH: the recorder is built with the local Go toolchain (a prerequisite, see README)")
    return recorder_binary(cache=recorder_cache)


class RecorderProcess:
    """The recorder running on 127.0.0.1, its stdout collected line by line."""

    def __init__(self, binary: Path, *, upstream_url: str, shield: bool = False) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "RECORDER_UPSTREAM": upstream_url,
                                             "RECORDER_LISTEN": "127.0.0.1:0",
                                             **({"RECORDER_SHIELD": "keep-writes"} if shield else {})})
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        listening = wait_until("the recorder to listen", self._listening, timeout=STEP, interval=0.1)
        self.port = int(listening["address"].rsplit(":", 1)[1])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def _listening(self) -> tuple[dict[str, str] | None, str]:
        for line in self.lines:
            record = json.loads(line)
            if record["event"] == "listening":
                return record, line
        return None, f"{len(self.lines)} line(s), exit code {self.process.poll()}"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def requests(self, count: int) -> list[RecordedRequest]:
        """The first `count` requests, once logged: a line is written after its response."""
        def logged() -> tuple[list[RecordedRequest] | None, str]:
            found = parse_requests(self.log)
            return (found if len(found) >= count else None), f"{len(found)} request line(s)"

        return wait_until(f"{count} request line(s) in the recorder's log", logged, timeout=STEP, interval=0.1)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=STEP)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=STEP)
        self.reader.join(STEP)
        return code


@pytest.fixture
def recorder(recorder_program: Path, upstream: Upstream) -> Iterator[RecorderProcess]:
    running = RecorderProcess(recorder_program, upstream_url=f"http://127.0.0.1:{upstream.port}")
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait(timeout=STEP)


def send(recorder: RecorderProcess, method: str, target: str, *, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = recorder.connection()
    try:
        connection.request(method, target, body=body, headers={"Host": SIGNED_HOST, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture
def shield(recorder_program: Path, upstream: Upstream) -> Iterator[RecorderProcess]:
    running = RecorderProcess(recorder_program, upstream_url=f"http://127.0.0.1:{upstream.port}", shield=True)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait(timeout=STEP)


# ---- the program --------------------------------------------------------------------------------
@needs_go
def test_the_recorder_builds_offline_once_per_source(recorder_program: Path, recorder_cache: Path) -> None:
    assert recorder_program.is_file() and os.access(recorder_program, os.X_OK)
    assert recorder_binary(cache=recorder_cache) == recorder_program  # cached by the source's digest
    assert recorder_program.parent.name.startswith("s3-recorder-")


@needs_go
def test_it_forwards_reads_and_writes_unchanged_and_records_each(recorder: RecorderProcess,
                                                                 upstream: Upstream) -> None:
    signed = {"Authorization": "AWS4-HMAC-SHA256 Credential=KEY/20250101/us-east-1/s3/aws4_request, "
                               "SignedHeaders=host;x-amz-date, Signature=abc",
              "X-Amz-Date": "20250101T000000Z", "User-Agent": "aws-sdk-go/1.0 velero"}
    listing = "/bucket?list-type=2&prefix=backups%2Fdaily%2F&delimiter=%2F"
    assert send(recorder, "GET", listing, headers=signed) == (200, b"object body")
    assert send(recorder, "HEAD", "/bucket/a%20b/c+d", headers=signed)[0] == 200
    assert send(recorder, "PUT", "/bucket/backups/x.tar.gz", body=b"0123456789" * 1000, headers=signed) == (200, b"")
    assert send(recorder, "DELETE", "/bucket/backups/x.tar.gz", headers=signed) == (204, b"")
    assert send(recorder, "POST", "/bucket?delete", body=b"<Delete/>", headers=signed) == (200, b"<DeleteResult/>")

    # The store saw exactly what the client sent: Host, raw path and query, signed headers, bodies.
    assert [(s.method, s.target, s.host) for s in upstream.seen] == [
        ("GET", listing, SIGNED_HOST), ("HEAD", "/bucket/a%20b/c+d", SIGNED_HOST),
        ("PUT", "/bucket/backups/x.tar.gz", SIGNED_HOST), ("DELETE", "/bucket/backups/x.tar.gz", SIGNED_HOST),
        ("POST", "/bucket?delete", SIGNED_HOST)]
    for seen in upstream.seen:
        assert seen.headers["Authorization"] == signed["Authorization"]
        assert seen.headers["X-Amz-Date"] == signed["X-Amz-Date"]
    assert upstream.seen[2].body == b"0123456789" * 1000
    assert upstream.seen[4].body == b"<Delete/>"

    recorded = recorder.requests(5)
    assert [(r.method, r.path, r.raw_query, r.status, r.host) for r in recorded] == [
        ("GET", "/bucket", "list-type=2&prefix=backups%2Fdaily%2F&delimiter=%2F", 200, SIGNED_HOST),
        ("HEAD", "/bucket/a b/c+d", "", 200, SIGNED_HOST),
        ("PUT", "/bucket/backups/x.tar.gz", "", 200, SIGNED_HOST),
        ("DELETE", "/bucket/backups/x.tar.gz", "", 204, SIGNED_HOST),
        ("POST", "/bucket", "delete", 200, SIGNED_HOST)]
    assert [(r.bytes, r.request_bytes) for r in recorded] == [(11, 0), (0, 0), (0, 10000), (0, 0), (15, 9)]
    assert all(r.user_agent == "aws-sdk-go/1.0 velero" and r.remote_addr.startswith("127.0.0.1:") and r.time
               for r in recorded)
    assert [r.method for r in writes(recorded)] == ["PUT", "DELETE", "POST"]
    assert [r.method for r in deletes(recorded)] == ["DELETE", "POST"]
    assert "5 request(s), 3 write(s), 2 delete(s)" in describe(recorded)


@needs_go
def test_bodies_stream_through_both_ways(recorder: RecorderProcess, upstream: Upstream) -> None:
    """Nothing is held until complete: the store reads the start of an upload before the client
    sends its second half, and the client reads the first part of a download the store has not finished."""
    half = 256 * 1024
    with socket.create_connection(("127.0.0.1", recorder.port), timeout=STEP) as client:
        client.sendall(f"PUT /bucket/streamed-up HTTP/1.1\r\nHost: {SIGNED_HOST}\r\n"
                       f"Content-Length: {2 * half}\r\n\r\n".encode() + b"a" * half)
        assert upstream.first_part_read.wait(STEP), "the store got nothing before the client sent all"
        client.sendall(b"b" * half)
        assert client.recv(12) == b"HTTP/1.1 200"
    # The store holds back the rest for STEP seconds; a proxy that buffered would answer after that.
    connection = http.client.HTTPConnection("127.0.0.1", recorder.port, timeout=STEP / 4)
    connection.request("GET", "/bucket/streamed-down", headers={"Host": SIGNED_HOST})
    response = connection.getresponse()
    assert response.read(5) == b"first"
    upstream.may_finish.set()
    assert response.read() == b"-last"
    connection.close()
    up, down = recorder.requests(2)
    assert (up.method, up.request_bytes, down.method, down.bytes) == ("PUT", 2 * half, "GET", 10)
    assert upstream.seen[0].body == b"a" * half + b"b" * half


@needs_go
def test_a_store_that_is_down_is_recorded_as_a_failed_request(recorder_program: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed again before the recorder dials it
    running = RecorderProcess(recorder_program, upstream_url=f"http://127.0.0.1:{port}")
    try:
        assert send(running, "PUT", "/bucket/key", body=b"x")[0] == 502
        (failed,) = running.requests(1)
        assert (failed.method, failed.status) == ("PUT", 502)
        assert "connection refused" in failed.error
        assert failed.is_write
    finally:
        running.stop()


@needs_go
def test_it_exits_at_once_on_sigterm(recorder: RecorderProcess) -> None:
    assert recorder.stop() == 0
    events = [json.loads(line)["event"] for line in recorder.lines]
    assert events == ["listening", "stopping"]
    assert parse_requests(recorder.log) == []


@needs_go
def test_an_upstream_that_is_not_a_url_stops_it_with_a_message(recorder_program: Path) -> None:
    done = subprocess.run([str(recorder_program)], capture_output=True, text=True, timeout=STEP,
                          env={**os.environ, "RECORDER_UPSTREAM": "minio:9000"})
    assert done.returncode == 2
    assert "RECORDER_UPSTREAM" in done.stderr


# ---- the image ----------------------------------------------------------------------------------
@needs_go
def test_the_image_is_built_on_demand_and_never_by_default(recorder_program: Path, recorder_cache: Path) -> None:
    spec = IMAGE_RECIPES[RECORDER_IMAGE](GoToolchain(cache=recorder_cache), RECORDER_REFERENCE)
    assert spec.entrypoint == (RECORDER_PATH,)
    assert FileEntry(RECORDER_PATH, source=recorder_program) in spec.entries
    archives = build_recorder_image(cache=recorder_cache)
    assert list(archives) == [RECORDER_IMAGE] and archives[RECORDER_IMAGE].is_file()
    assert build_recorder_image(cache=recorder_cache) == archives
    assert RECORDER_REFERENCE.startswith("restoredrill.local/s3-recorder:")
    # A harness piece: no image set lists it, so no default build or platform install loads it.
    assert RECORDER_IMAGE not in (*DEFAULT_LOCAL_IMAGES, *LOCAL_ONLY_IMAGES, *platform_image_set("local"))


# ---- the log, without the program ---------------------------------------------------------------
def line(**fields: object) -> str:
    record: dict[str, object] = {"event": "request", "time": "2025-01-01T00:00:00Z", "method": "GET",
                                 "host": SIGNED_HOST, "path": "/bucket/key", "raw_query": "", "status": 200,
                                 "bytes": 3, "request_bytes": 0, "remote_addr": "10.0.0.7:51234",
                                 "user_agent": "aws-sdk-go", "duration_ms": 1.5}
    return json.dumps({**record, **fields})


@pytest.mark.parametrize(("method", "query", "write", "delete"), [
    ("GET", "", False, False), ("HEAD", "", False, False), ("OPTIONS", "", False, False),
    ("PUT", "", True, False), ("POST", "uploads", True, False), ("PATCH", "", True, False),
    ("DELETE", "", True, True), ("POST", "delete", True, True), ("POST", "delete=", True, True),
    ("GET", "delete", False, False),
])
def test_writes_and_deletes(method: str, query: str, write: bool, delete: bool) -> None:
    (request,) = parse_requests(line(method=method, raw_query=query))
    assert (request.is_write, request.is_delete) == (write, delete)
    assert writes([request]) == ([request] if write else [])
    assert deletes([request]) == ([request] if delete else [])


def test_the_log_is_read_line_by_line() -> None:
    log = "\n".join([json.dumps({"event": "listening", "address": "[::]:9000", "upstream": "http://minio:9000"}),
                     line(), "", line(method="PUT", request_bytes=7, error="boom"),
                     json.dumps({"event": "server-error", "message": "http: TLS handshake error"}),
                     json.dumps({"event": "stopping", "signal": "terminated"})])
    get, put = parse_requests(log)
    assert get == RecordedRequest(time="2025-01-01T00:00:00Z", method="GET", host=SIGNED_HOST, path="/bucket/key",
                                  raw_query="", status=200, bytes=3, request_bytes=0, remote_addr="10.0.0.7:51234",
                                  user_agent="aws-sdk-go", duration_ms=1.5)
    assert (put.request_bytes, put.error) == (7, "boom")


@pytest.mark.parametrize(("bad", "why"), [
    ("s3-recorder: listen tcp :9000: address already in use", "Expecting value"),
    ('{"event": "request", "method": "GET"', "Expecting"),
    ("[1, 2]", "not a JSON object"),
    ('{"event": "hello"}', "unknown event 'hello'"),
    ('{"event": "request", "method": "GET"}', "no time, host, path"),
    (line(status="200"), "wrong type of status"),
    (line(bytes=True), "wrong type of bytes"),
])
def test_a_malformed_line_is_an_error_naming_it(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match="s3-recorder log line 2 ") as raised:
        parse_requests(f"{line()}\n{bad}\n")
    assert why in str(raised.value)
    assert bad[:40] in str(raised.value)


def test_describe_lists_the_writes_for_a_failure_message() -> None:
    assert describe([]) == "the recorder saw no requests"
    reads = parse_requests("\n".join(line(path=f"/bucket/k{i}") for i in range(3)))
    assert describe(reads).splitlines()[0] == "3 request(s), 0 write(s), 0 delete(s); the requests:"
    mixed = parse_requests("\n".join([line(), line(method="DELETE", path="/bucket/backups/b1", status=204),
                                      line(method="POST", path="/bucket", raw_query="delete", request_bytes=120)]))
    text = describe(mixed)
    assert text.splitlines()[0] == "3 request(s), 2 write(s), 2 delete(s); the writes:"
    assert "DELETE /bucket/backups/b1 -> 204" in text and "POST /bucket?delete -> 200, 120 bytes sent" in text
    assert "GET" not in text.split("\n", 1)[1]
    many = parse_requests("\n".join(line(method="PUT", path=f"/bucket/k{i}") for i in range(25)))
    assert describe(many, limit=20).splitlines()[-1] == "  ... and 5 more"


# ---- the manifests ------------------------------------------------------------------------------
def test_manifests_run_one_recorder_before_the_store() -> None:
    upstream_url = "http://minio.restoredrill-production.svc.cluster.local:9000"
    deployment, service = recorder_manifests(namespace="restoredrill-production", upstream_url=upstream_url,
                                             image=RECORDER_REFERENCE)
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    for manifest in (deployment, service):
        assert manifest["metadata"]["namespace"] == "restoredrill-production"
        assert manifest["metadata"]["labels"] == {"app.kubernetes.io/name": "s3-recorder",
                                                  MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 0
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    (container,) = pod["containers"]
    assert (container["image"], container["imagePullPolicy"]) == (RECORDER_REFERENCE, "IfNotPresent")
    assert {e["name"]: e["value"] for e in container["env"]} == {"RECORDER_UPSTREAM": upstream_url,
                                                                 "RECORDER_LISTEN": ":9000"}
    assert "httpGet" not in container["readinessProbe"]  # a probe through the proxy would be a logged request
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "s3", "port": 9000, "targetPort": 9000}]
    assert recorder_url("restoredrill-production") == f"http://{SIGNED_HOST}"


def test_manifests_and_url_take_a_name_and_port() -> None:
    deployment, service = recorder_manifests(namespace="ns", upstream_url="http://store:8333", image="img",
                                             name="recorder-b", port=8080)
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "recorder-b"
    assert service["spec"]["ports"][0]["port"] == 8080
    assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"name": "s3",
                                                                                 "containerPort": 8080}]
    assert recorder_url("ns", name="recorder-b", port=8080) == "http://recorder-b.ns.svc.cluster.local:8080"


# ---- the shield -------------------------------------------------------------------------------------
def arrival(request: RecordedRequest) -> str:
    """A sortable arrival time: Go's RFC3339Nano drops trailing zeros of the fraction."""
    whole, _, fraction = request.time.removesuffix("Z").partition(".")
    return f"{whole}.{fraction.ljust(9, '0')}"


@needs_go
def test_the_shield_keeps_every_write_and_forwards_only_reads(shield: RecorderProcess, upstream: Upstream) -> None:
    """Velero's restore uploads its log and results even into a ReadOnly location: the shield keeps
    them, answers later reads of them itself, and the store sees none of it."""
    key = "/velero/restores/r1/restore-r1-results.gz"
    assert send(shield, "PUT", f"{key}?x-id=PutObject", body=b"results")[0] == 200
    assert send(shield, "GET", f"{key}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc") == (200, b"results")
    assert send(shield, "HEAD", key)[0] == 200
    assert send(shield, "GET", "/velero/backups/b1/velero-backup.json") == (200, b"object body")  # forwarded
    assert send(shield, "DELETE", key)[0] == 204
    status, body = send(shield, "POST", "/velero?delete", body=b"<Delete/>")
    assert status == 403 and b"restoredrill shield" in body
    assert send(shield, "PUT", f"{key}?partNumber=1&uploadId=u", body=b"part")[0] == 403
    assert send(shield, "GET", key) == (200, b"object body")  # forgotten: the store's answer again
    assert [(s.method, s.target) for s in upstream.seen] == [("GET", "/velero/backups/b1/velero-backup.json"),
                                                              ("GET", key)]
    # Each line is written after its response, so the next request may be logged first: order by arrival.
    requests = sorted(shield.requests(8), key=arrival)
    assert forwarded_writes(requests) == []
    assert [r.kept for r in requests] == [True, True, True, False, True, True, True, False]


@needs_go
def test_the_shield_decodes_an_aws_chunked_upload(shield: RecorderProcess, upstream: Upstream) -> None:
    """A SigV4 streaming upload (aws-chunked, with a trailing checksum) is kept as its decoded bytes."""
    chunked = b"5;chunk-signature=aa\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"
    headers = {"Content-Encoding": "aws-chunked", "X-Amz-Content-Sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
               "X-Amz-Decoded-Content-Length": "11"}
    assert send(shield, "PUT", "/velero/restores/r1/log.gz", body=chunked, headers=headers)[0] == 200
    assert send(shield, "GET", "/velero/restores/r1/log.gz") == (200, b"hello world")
    assert upstream.seen == []
