"""Running external commands: one place that applies the timeout and turns a failure into a
`CommandError` carrying the command line, exit code and output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from restoredrill.errors import CommandError, MissingToolError


def run(command: Sequence[str], *, timeout: float, remedy: str | None = None, cwd: Path | None = None,
        env: Mapping[str, str] | None = None, input: str | None = None) -> str:
    """Run `command` and return its stdout; `CommandError` with its output on failure or timeout."""
    try:
        completed = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False,
                                   cwd=cwd, env=dict(env) if env is not None else os.environ.copy(), input=input)
    except subprocess.TimeoutExpired as error:
        output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part
                         for part in (error.stdout, error.stderr) if part)
        raise CommandError(command, returncode=None, output=output, remedy=remedy) from error
    if completed.returncode != 0:
        raise CommandError(command, returncode=completed.returncode, output=completed.stdout + completed.stderr,
                           remedy=remedy)
    return completed.stdout


def download_go_module(module: str, version: str, *, timeout: float = 900, go: str | None = None,
                       cwd: Path | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`go mod download -json module@version`: the module's `Dir`, `GoMod`... in Go's module cache."""
    go = go or shutil.which("go")
    if go is None:
        raise MissingToolError("go", remedy="install Go 1.22 or newer (`apt-get install golang-go`, or the "
                                            "official tarball); restoredrill fetches pinned modules with it")
    command = [go, "mod", "download", "-json", f"{module}@{version}"]
    remedy = "check that GOPROXY is reachable and that the version in restoredrill/pins.toml exists there"
    info: dict[str, Any] = json.loads(run(command, timeout=timeout, remedy=remedy, cwd=cwd, env=env) or "{}")
    if info.get("Error") or not info.get("Dir"):
        raise CommandError(command, returncode=0, output=str(info.get("Error", "no Dir in the answer")),
                           remedy=remedy)
    return info
