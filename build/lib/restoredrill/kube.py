"""Small helpers every module uses to talk to a cluster: an API client, and kubectl.

Both take the kubeconfig and context explicitly, so nothing ever lands on whatever cluster the
user's `$KUBECONFIG` happens to point at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from restoredrill import __version__
from restoredrill.errors import CommandError, ConfigError, MissingToolError
from restoredrill.timeouts import timeout

# An explicit kubectl (for example the one `restoredrill toolchain` built) wins over PATH.
KUBECTL_ENV = "RESTOREDRILL_KUBECTL"

KUBECTL_REMEDY = (
    "run `restoredrill toolchain` to build kubectl from the pinned Kubernetes module, then put its "
    f"directory on PATH or set {KUBECTL_ENV} to the binary; or install kubectl from your distribution"
)


# What the API server's audit log shows for every request restoredrill makes; the fixtures add the
# run id, so a user (or a test) can tell one drill's requests from anything else on the cluster.
_user_agent = f"restoredrill/{__version__}"


def set_run_id(run_id: str) -> None:
    """Name this run in the User-Agent of every API request from now on."""
    global _user_agent
    _user_agent = f"restoredrill/{__version__} run/{run_id}"


class TimedApiClient(client.ApiClient):
    """An ApiClient whose every request has a time limit: the `api_request` timeout unless the caller
    passes its own `_request_timeout` (a watch does). Without one, a hung API server hangs the call,
    and the drill with it, past every named timeout."""

    def call_api(self, method: Any, url: Any, header_params: Any = None, body: Any = None,
                 post_params: Any = None, _request_timeout: Any = None) -> Any:
        if _request_timeout is None:
            _request_timeout = timeout("api_request")
        return super().call_api(method, url, header_params=header_params, body=body, post_params=post_params,
                                _request_timeout=_request_timeout)


def load_api_client(kubeconfig: Path, context: str | None, *, retries: int | None = None) -> client.ApiClient:
    """An API client for `context` in `kubeconfig` (its current context when None).

    `retries` caps urllib3's retries per request; a reachability probe passes 0 so an unreachable
    server fails at once instead of after several silent retries.
    """
    if not kubeconfig.is_file():
        raise ConfigError(
            f"kubeconfig {kubeconfig} does not exist",
            remedy="pass the path of an existing kubeconfig file (the provider's --kubeconfig setting)",
        )
    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), context=context, client_configuration=configuration
        )
    except ConfigException as error:
        raise ConfigError(
            f"cannot use context {context or '(current-context)'} of kubeconfig {kubeconfig}: {error}",
            remedy=f"list the contexts with `kubectl --kubeconfig {kubeconfig} config get-contexts` "
            "and pass one of them",
        ) from error
    if retries is not None:
        configuration.retries = retries
    api = TimedApiClient(configuration)
    api.user_agent = _user_agent
    return api


def find_kubectl() -> str:
    """The kubectl to run: `$RESTOREDRILL_KUBECTL` if set, else the first on PATH."""
    explicit = os.environ.get(KUBECTL_ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise MissingToolError(
                "kubectl", remedy=f"{KUBECTL_ENV}={explicit} is not an executable file; " + KUBECTL_REMEDY
            )
        return explicit
    found = shutil.which("kubectl")
    if found is None:
        raise MissingToolError("kubectl", remedy=KUBECTL_REMEDY)
    return found


def run_kubectl(
    args: Sequence[str],
    *,
    kubeconfig: Path,
    context: str | None,
    timeout: float,
    input: str | None = None,
    kubectl: str | None = None,
) -> str:
    """Run kubectl against exactly this kubeconfig/context and return its stdout.

    Raises `CommandError` (with stderr) on a non-zero exit or when `timeout` seconds pass.
    """
    command = [kubectl or find_kubectl(), f"--kubeconfig={kubeconfig}"]
    if context:
        command.append(f"--context={context}")
    command.extend(args)
    try:
        completed = subprocess.run(
            command,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise CommandError(command, returncode=None, output=_text(error.stdout) + _text(error.stderr)) from error
    if completed.returncode != 0:
        raise CommandError(command, returncode=completed.returncode, output=completed.stdout + completed.stderr)
    return completed.stdout


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
