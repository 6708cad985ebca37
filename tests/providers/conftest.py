"""Markers the provider tests use, registered here in case the top-level conftest does not yet."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    registered = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    if "cluster" not in registered:
        config.addinivalue_line("markers", "cluster: needs a live cluster (the kube_api fixture)")
