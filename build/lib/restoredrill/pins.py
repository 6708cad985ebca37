"""The pinned upstream versions (`pins.toml`) and the cache they are fetched into."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

PINS_FILE = Path(__file__).with_name("pins.toml")


@dataclass(frozen=True)
class ModulePin:
    """A Go module at one version, and the folders in it that hold CRDs."""

    key: str
    module: str
    version: str
    crds: tuple[str, ...] = ()


def cache_dir() -> Path:
    """Where fetched and built artefacts live: outside the checkout, shared by runs and CI."""
    configured = os.environ.get("RESTOREDRILL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "restoredrill"


@cache
def load_pins(path: Path = PINS_FILE) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def module_pins(path: Path = PINS_FILE) -> dict[str, ModulePin]:
    modules = load_pins(path).get("modules", {})
    return {
        key: ModulePin(key=key, module=entry["module"], version=entry["version"], crds=tuple(entry.get("crds", ())))
        for key, entry in modules.items()
    }
