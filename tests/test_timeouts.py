"""The one timeouts table: names, overrides from the drill config and --set, and that an override
reaches the waits and API requests that use it."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from restoredrill import timeouts
from restoredrill.cluster import ClusterHandle
from restoredrill.config import build_config
from restoredrill.errors import ConfigError, WaitTimeout
from restoredrill.kube import load_api_client
from restoredrill.platform.base import PlatformContext
from restoredrill.platform.objectstore import ObjectStoreCredentials, S3Endpoint
from restoredrill.platform.velero import Velero
from tests.conftest import EXAMPLE_REPO

pytest_plugins = ("pytester",)


def _config(tmp_path: Path, *, overrides: list[str] = (), file: str | None = None) -> Any:  # type: ignore[assignment]
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    if file is not None:
        (repo / "restoredrill.yaml").write_text(file)
    return build_config(defaults={"gitops_repo": repo, "reports_dir": Path("reports")}, ini={}, cli={},
                        overrides=list(overrides), base_dir=tmp_path)


@pytest.fixture(autouse=True)
def _default_table() -> Iterator[None]:
    yield
    timeouts.activate(timeouts.DEFAULTS)


def test_every_name_has_a_positive_default_and_a_description() -> None:
    for name, spec in timeouts.TIMEOUT_SPECS.items():
        assert spec.seconds > 0, name
        assert spec.what, name
    assert timeouts.DEFAULTS["restore"] == 900


def test_unknown_name_in_code_is_an_error_with_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="unknown timeout 'restor' \\(did you mean 'restore'\\?\\)"):
        timeouts.timeout("restor")


def test_drill_config_file_overrides_by_name_with_go_durations(tmp_path: Path) -> None:
    config = _config(tmp_path, file="timeouts:\n  restore: 15m\n  apply: 30\n")
    assert config.timeouts["restore"] == 900.0 * 1  # 15m
    assert config.timeouts["apply"] == 30.0
    assert config.timeouts.overrides == {"restore": 900.0, "apply": 30.0}
    assert config.timeouts["backup"] == timeouts.TIMEOUT_SPECS["backup"].seconds


def test_platform_names_are_accepted_in_the_config(tmp_path: Path) -> None:
    # They were rejected as unknown while the platform had a table of its own.
    config = _config(tmp_path, overrides=["timeouts.platform_ready=10m", "timeouts.apply=2m"])
    assert config.timeouts["platform_ready"] == 600.0
    assert config.timeouts["apply"] == 120.0


def test_set_overrides_the_file(tmp_path: Path) -> None:
    config = _config(tmp_path, file="timeouts:\n  restore: 15m\n", overrides=["timeouts.restore=20s"])
    assert config.timeouts["restore"] == 20.0


@pytest.mark.parametrize(("entry", "message"), [
    ("timeouts.restor=5m", "unknown timeout 'restor' \\(did you mean 'restore'\\?\\)"),
    ("timeouts.restore=soon", "timeouts.restore"),
    ("timeouts.restore=-5s", "timeouts.restore"),
])
def test_bad_overrides_name_the_key_and_the_fix(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, overrides=[entry])


class _Api:
    """An API server answering Velero Restore reads with a phase that never ends, or never answering."""

    def __init__(self, *, hang: bool) -> None:
        self.hang = hang
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.requests.append(self.path)
                if api.hang:
                    time.sleep(30)
                    return
                body = json.dumps({"apiVersion": "velero.io/v1", "kind": "Restore",
                                   "metadata": {"name": "r1", "namespace": "velero"},
                                   "status": {"phase": "InProgress"}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[_Api]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "users": [{"name": "fake", "user": {"token": "x"}}],
        }))
        return path


def _velero(kubeconfig: Path, config_timeouts: timeouts.Timeouts | None = None) -> Velero:
    handle = ClusterHandle(provider="existing", name="fake", kubeconfig=kubeconfig, context="fake",
                           created_by_us=False)
    ctx = (PlatformContext(cluster=handle, api=load_api_client(kubeconfig, "fake"), images={})
           if config_timeouts is None else
           PlatformContext(cluster=handle, api=load_api_client(kubeconfig, "fake"), images={},
                           timeouts=config_timeouts))
    endpoint = S3Endpoint(url="http://s3.invalid", region="minio", velero_bucket="velero", cnpg_bucket="cnpg")
    return Velero(ctx, endpoint=endpoint, credentials=ObjectStoreCredentials("a", "b"))


def test_an_override_reaches_a_real_wait(tmp_path: Path) -> None:
    """`--set timeouts.restore=1s` makes Velero's Restore wait give up after one second, naming it."""
    config = _config(tmp_path, overrides=["timeouts.restore=1s"])
    timeouts.activate(config.timeouts)  # what the pytest plugin does once per session
    with _Api(hang=False).running() as api:
        velero = _velero(api.kubeconfig(tmp_path))  # the context's table defaults to the session's
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as raised:
            velero.wait_for_restore("r1")
    assert time.monotonic() - started < 5
    assert raised.value.seconds == 1.0
    assert "Restore r1" in str(raised.value) and "phase InProgress" in str(raised.value)
    assert api.requests, "the wait never asked the API server"


def test_a_hung_api_server_fails_the_request_after_api_request(tmp_path: Path) -> None:
    timeouts.activate(timeouts.Timeouts({"api_request": 0.5, "restore": 60}))
    with _Api(hang=True).running() as api:
        velero = _velero(api.kubeconfig(tmp_path))
        started = time.monotonic()
        with pytest.raises(Exception) as raised:
            velero.ctx.get_object("velero.io", "v1", "restores", "velero", "r1")
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"the request hung for {elapsed:.1f}s"
    assert isinstance(raised.value, socket.timeout | OSError) or "timed out" in str(raised.value).lower()


def test_the_plugin_activates_the_sessions_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_t="""
        from restoredrill.timeouts import timeout

        def test_session_table():
            assert timeout("restore") == 42.0
            assert timeout("backup") == 900.0
    """)
    result = pytester.runpytest_subprocess("--gitops-repo", str(EXAMPLE_REPO), "--set", "timeouts.restore=42s",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
