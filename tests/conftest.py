"""Shared helpers for testing restoredrill itself."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from restoredrill.catalogue import Catalogue, build_catalogue
from restoredrill.config import DrillConfig, build_config
from restoredrill.rules import RULES, Finding, RuleContext
from restoredrill.schemas import cached_schemas

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_REPO = PROJECT_ROOT / "examples" / "home-cluster"


def user_project(folder: Path, *, repo: bool = True) -> Path:
    """`folder` laid out as a user's checkout: the root conftest (restoredrill's plugins), the suites
    and, unless `repo` is False, a copy of the example GitOps repo as `repo/`."""
    shutil.copy(PROJECT_ROOT / "conftest.py", folder / "conftest.py")
    shutil.copytree(PROJECT_ROOT / "suites", folder / "suites")
    if repo:
        shutil.copytree(EXAMPLE_REPO, folder / "repo")
    return folder


class RepoCopy:
    """A writable copy of the bundled example repo, to break one thing at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, relative: str) -> Path:
        return self.root / relative

    def replace(self, relative: str, old: str, new: str, *, count: int = 1) -> None:
        """Replace text in a file; fails loudly if `old` is not there, so a test cannot go stale."""
        path = self.path(relative)
        text = path.read_text()
        assert old in text, f"{old!r} not found in {relative}: the example repo changed, update the test"
        path.write_text(text.replace(old, new, count))

    def write(self, relative: str, text: str) -> None:
        path = self.path(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def delete(self, relative: str) -> None:
        self.path(relative).unlink()

    def catalogue(self) -> Catalogue:
        return build_catalogue(self.root)

    def config(self, **settings: object) -> DrillConfig:
        return build_config(defaults={"gitops_repo": self.root, "reports_dir": self.root / "reports"},
                            ini={}, cli=settings, base_dir=self.root)

    def findings(self, rule_id: str, **settings: object) -> list[Finding]:
        """Every finding of one rule over all its subjects."""
        context = RuleContext(catalogue=self.catalogue(), config=self.config(**settings),
                              schema_loader=lambda: cached_schemas(fetch=True))
        rule = RULES[rule_id]
        return [f for subject in rule.subjects(context) for f in rule.evaluate(subject, context)]


@pytest.fixture
def example_repo(tmp_path: Path) -> RepoCopy:
    """A fresh copy of examples/home-cluster."""
    target = tmp_path / "home-cluster"
    shutil.copytree(EXAMPLE_REPO, target)
    return RepoCopy(target)


@pytest.fixture(scope="session")
def example_catalogue() -> Catalogue:
    return build_catalogue(EXAMPLE_REPO)


def rendered(findings: list[Finding]) -> str:
    return "\n\n".join(f.render() for f in findings)


FindingsOf = Callable[[str], list[Finding]]


class MakeProviderOptions:
    """The lookups `fixtures.cluster.make_provider` makes of a pytest config, over a dict of flag
    dests (ini keys unset)."""

    def __init__(self, **values: Any) -> None:
        from fixtures import cluster as cluster_fixtures

        self.values = {"cluster_name": "pytest-kind", **values}
        self.workerinput = {"workerid": "gw0", "testrunuid": "run1"}
        # A run id already made, so this process's own (set by the real session) is left alone.
        self.stash: dict[Any, Any] = {cluster_fixtures._RUN_ID_KEY: "run1"}

    def getoption(self, dest: str, default: Any = None) -> Any:
        return self.values.get(dest, default)

    def getini(self, key: str) -> Any:
        return None
